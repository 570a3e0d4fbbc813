/**
 * The tiny Next.js app of tests/fixtures/next, built with the `next` installed
 * in node_modules (a devDependency) and cached, for tests/next_test.ts and
 * bench/auto_frameworks.ts. Test support, not a test file: the test runners
 * only run `*_test.ts`.
 *
 * The build goes to `node_modules/.cache/instar-next/<key>/`, the key being a
 * hash of the fixture's files, the versions of next, react and react-dom and
 * {@link RECIPE}: a second run finds `built.json` there and builds nothing, and
 * a new `npm install` (which empties node_modules) starts afresh. The deno and
 * the bun runner of next_test.ts may start at the same moment, so a build holds
 * a lock (a directory, made by an atomic rename, naming the builder's pid and
 * start time): the other waits for it, and takes over a lock whose builder has
 * died. Why the app is built inside node_modules: `next` resolves from there
 * without copying or linking anything, and Next.js takes the repository (its
 * package-lock.json) as the root of its file tracing, so the standalone output
 * holds `server.js` under the app's path relative to the repository
 * ({@link NextBuild.serverJs} names it).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join, relative } from "node:path";
import process from "node:process";
import { processStartTime } from "../../src/proc.ts";
import { runCommand, showResult } from "./helpers.ts";
import { bin, ROOT, sleep } from "./procs.ts";

/** The app's source: next.config.js and two pages-router API routes. */
export const NEXT_FIXTURE: string = join(ROOT, "tests/fixtures/next");

/** How the app is built; part of the cache key, so changing it builds again. */
export const RECIPE =
  "next build (default bundler), NEXT_TELEMETRY_DISABLED=1, NODE_ENV=production";

const CACHE = join(ROOT, "node_modules/.cache/instar-next");
const PACKAGES = ["next", "react", "react-dom"];

/** A built app. */
export interface NextBuild {
  /** The generated `.next/standalone/…/server.js`, to run unmodified. */
  serverJs: string;
  /** The next version it was built with. */
  next: string;
  /** Seconds the build took, when it was made. */
  buildSeconds: number;
  /** Whether this call built it (false: found in the cache, or built by another process). */
  builtNow: boolean;
}

/** The version of the package installed in node_modules, or null. */
function installed(name: string): string | null {
  try {
    return JSON.parse(readFileSync(join(ROOT, "node_modules", name, "package.json"), "utf8"))
      .version;
  } catch {
    return null;
  }
}

/** Why the app cannot be built here (a skip reason), or false. */
export function nextMissing(): string | false {
  const absent = PACKAGES.filter((p) => installed(p) === null);
  return absent.length > 0 && `${absent.join(", ")} not installed in node_modules (npm install)`;
}

/** The fixture's files, relative to it, sorted. */
function fixtureFiles(dir = NEXT_FIXTURE): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? fixtureFiles(join(dir, e.name)).map((f) => join(e.name, f)) : [e.name]
  ).sort();
}

/** The cache key: the fixture's files, the packages' versions and the recipe. */
export function nextBuildKey(): string {
  const h = createHash("sha256").update(RECIPE);
  for (const p of PACKAGES) h.update(`\0${p}@${installed(p)}`);
  for (const f of fixtureFiles()) h.update(`\0${f}\0`).update(readFileSync(join(NEXT_FIXTURE, f)));
  return h.digest("hex").slice(0, 16);
}

/** What an earlier build left in `dir`, or null. */
function readBuilt(dir: string): NextBuild | null {
  try {
    const b = JSON.parse(readFileSync(join(dir, "built.json"), "utf8"));
    const serverJs = join(dir, b.serverJs);
    return existsSync(serverJs) ? { ...b, serverJs, builtNow: false } : null;
  } catch {
    return null;
  }
}

/** Takes the lock at `lock` (a directory path): true if this process holds it now. */
export function tryLock(lock: string): boolean {
  const mine = `${lock}.${process.pid}`;
  mkdirSync(mine, { recursive: true });
  writeFileSync(join(mine, "owner"), `${process.pid} ${processStartTime(process.pid)}`);
  try {
    renameSync(mine, lock); // fails while another lock (a directory with its owner file) is there
    return true;
  } catch (e) {
    rmSync(mine, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTEMPTY" || code === "EEXIST") return false;
    throw e;
  }
}

/** Removes `lock` if the process that took it has died (its pid gone or reused). */
export function breakStaleLock(lock: string): void {
  let owner: string;
  try {
    owner = readFileSync(join(lock, "owner"), "utf8");
  } catch {
    return; // released meanwhile
  }
  const [pid, started] = owner.split(" ");
  if (String(processStartTime(Number(pid))) === started) return;
  const stale = `${lock}.stale.${process.pid}`;
  try {
    renameSync(lock, stale); // only one of several waiters gets it
  } catch {
    return;
  }
  rmSync(stale, { recursive: true, force: true });
}

/** Runs `next build` in `dir` (a copy of the fixture); returns where server.js is. */
async function build(dir: string, timeoutMs: number): Promise<NextBuild> {
  rmSync(dir, { recursive: true, force: true });
  cpSync(NEXT_FIXTURE, dir, { recursive: true });
  // Node runs Next.js's own CLI; bun builds too where there is no node.
  const node = spawnSync("sh", ["-c", "command -v node"]).status === 0;
  const started = performance.now();
  const r = await runCommand(
    [node ? "node" : bin("bun"), join(ROOT, "node_modules/next/dist/bin/next"), "build"],
    { cwd: dir, env: { NEXT_TELEMETRY_DISABLED: "1", NODE_ENV: "production" }, timeoutMs },
  );
  if (r.code !== 0) throw new Error(`next build failed in ${dir}\n${showResult(r, 4000)}`);
  const buildSeconds = Math.round((performance.now() - started) / 100) / 10;
  const standalone = join(dir, ".next/standalone");
  const serverJs = [
    join(standalone, relative(ROOT, dir), "server.js"),
    join(standalone, "server.js"),
  ]
    .find((p) => existsSync(p));
  if (!serverJs) throw new Error(`next build made no server.js in ${standalone}`);
  const built = { serverJs: relative(dir, serverJs), next: installed("next")!, buildSeconds };
  writeFileSync(join(dir, "built.json.tmp"), JSON.stringify(built));
  renameSync(join(dir, "built.json.tmp"), join(dir, "built.json")); // complete or absent
  return { ...built, serverJs, builtNow: true };
}

/** Removes the builds of other keys (an older fixture or next version), not their locks. */
function pruneOthers(key: string): void {
  for (const name of readdirSync(CACHE)) {
    if (name !== key && /^[0-9a-f]{16}$/.test(name) && !existsSync(join(CACHE, `${name}.lock`))) {
      rmSync(join(CACHE, name), { recursive: true, force: true });
    }
  }
}

/**
 * The built app: from the cache, or built now (holding the lock), or built by
 * another process this one waited for. Throws if the build fails or nothing
 * is built within `timeoutMs`.
 */
export async function builtNext({ timeoutMs = 600_000 } = {}): Promise<NextBuild> {
  const key = nextBuildKey(), dir = join(CACHE, key), lock = `${dir}.lock`;
  mkdirSync(CACHE, { recursive: true });
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const done = readBuilt(dir);
    if (done) return done;
    if (tryLock(lock)) {
      try {
        return readBuilt(dir) ?? await build(dir, timeoutMs);
      } finally {
        rmSync(lock, { recursive: true, force: true });
        pruneOthers(key);
      }
    }
    breakStaleLock(lock);
    if (performance.now() > deadline) {
      throw new Error(`no Next.js build in ${dir} within ${timeoutMs} ms (lock ${lock})`);
    }
    await sleep(250);
  }
}
