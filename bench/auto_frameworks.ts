/**
 * Frameworks' production servers under instar/auto, by hand (not a suite
 * test: a Next.js build takes about 2 minutes here). Nothing is downloaded:
 * a framework is tried only if it is already installed in `--modules <dir>`
 * (its `node_modules`), else the script says it skipped it and why.
 *
 * - **Next.js** (`next`, `react`, `react-dom`): a tiny app (`output:
 *   "standalone"`, one API route `/api/pid` answering GET and POST with the
 *   pid) is written to a temp directory, `node_modules` hard-linked into
 *   it, built with `next build`; its generated `.next/standalone/server.js`
 *   runs unmodified with the preload and `INSTAR_AUTO_READY_URL=/api/pid`,
 *   through `--upgrades` SIGHUPs (each after the previous one finished, 1 s
 *   apart) under a keep-alive GET load and a 16 KiB POST load from clients
 *   that never re-send (tests/support/load_client.ts).
 * - **Nitro, SvelteKit, Astro**: reported as installed or not; no build
 *   recipe here yet (their node servers end in node:http `listen()`, which
 *   the suite tests under load).
 *
 * Usage: deno run -A bench/auto_frameworks.ts [--modules <dir>] [--upgrades 10] [--runtime bun|deno]
 * (`--keep`: keep the built app; `--standalone <dir>`: run an already built `.next/standalone`)
 *
 * Only hits 127.0.0.1.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { runLoad } from "../tests/support/load_client.ts";
import { bin, ROOT } from "../tests/support/procs.ts";
import { nextPidInPidFile } from "../tests/support/status.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    modules: { type: "string", default: ROOT },
    upgrades: { type: "string", default: "10" },
    runtime: { type: "string", default: "bun" },
    standalone: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const modules = resolve(values.modules!);
const upgrades = Number(values.upgrades);
const runtime = values.runtime === "deno" ? "deno" : "bun";
const PRELOAD = join(ROOT, "src/auto/preload.ts");

/** The packages that are not installed in `modules`, of `names`. */
function missing(names: string[]): string[] {
  return names.filter((n) => !existsSync(join(modules, "node_modules", n, "package.json")));
}

const OTHERS: [string, string[]][] = [
  ["Nitro", ["nitropack"]],
  ["SvelteKit", ["@sveltejs/kit", "@sveltejs/adapter-node"]],
  ["Astro", ["astro", "@astrojs/node"]],
];

// A pages-router API route: it answers with a Content-Length (an app-router route handler's
// answer is chunked, which tests/support/load_client.ts does not read).
const NEXT_FILES: Record<string, string> = {
  "package.json": `{"name":"instar-bench-next","private":true}\n`,
  "next.config.js": `module.exports = { output: "standalone" };\n`,
  "pages/api/pid.js": `export const config = { api: { bodyParser: false } };
export default async function handler(req, res) {
  for await (const _ of req);
  const body = \`pid \${process.pid}\\n\`;
  res.setHeader("content-length", Buffer.byteLength(body));
  res.end(body);
}
`,
};

/** Writes and builds the tiny Next.js app; returns its standalone directory. */
function buildNext(dir: string): string {
  for (const [name, text] of Object.entries(NEXT_FILES)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  // Hard links: the build traces real paths, which must lie inside the app's directory.
  const linked = spawnSync("cp", ["-al", join(modules, "node_modules"), dir]);
  if (linked.status !== 0) spawnSync("cp", ["-r", join(modules, "node_modules"), dir]);
  const node = spawnSync("sh", ["-c", "command -v node"]).status === 0;
  const started = Date.now();
  const build = spawnSync(
    node ? "node" : bin("bun"),
    [join(dir, "node_modules/next/dist/bin/next"), "build"],
    {
      cwd: dir,
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" },
    },
  );
  if (build.status !== 0) throw new Error(`next build failed (status ${build.status})`);
  console.log(`next build: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return join(dir, ".next/standalone");
}

function runs(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const net = await import("node:net");
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/** Runs `server.js` of `standalone` under the preload through the upgrades under load. */
async function runNext(standalone: string, dir: string): Promise<void> {
  const port = await freePort(), pidFile = join(dir, "app.pid");
  const cmd = runtime === "deno"
    ? [bin("deno"), "run", "-A", "--unstable-detect-cjs", "--preload", PRELOAD, "server.js"]
    : [bin("bun"), "--preload", PRELOAD, "server.js"];
  const child = spawn(cmd[0], cmd.slice(1), {
    cwd: standalone,
    stdio: ["ignore", "ignore", "inherit"],
    env: {
      ...process.env,
      PORT: String(port),
      HOSTNAME: "127.0.0.1",
      INSTAR_PID_FILE: pidFile,
      INSTAR_AUTO_READY_URL: "/api/pid",
      INSTAR_LOG: "off",
    },
  });
  let pid = await nextPidInPidFile(pidFile, 0, { timeoutMs: 60_000 });
  const stop = new AbortController();
  const load = { port, durationMs: 10 * 60_000, path: "/api/pid", signal: stop.signal };
  const gets = runLoad({ ...load, connections: 8 });
  const posts = runLoad({ ...load, connections: 4, postBytes: 16 * 1024 });
  const readyAfter: number[] = [];
  for (let i = 0; i < upgrades; i++) {
    await new Promise((r) => setTimeout(r, 1_000));
    const t = performance.now();
    process.kill(pid, "SIGHUP");
    pid = await nextPidInPidFile(pidFile, pid, { timeoutMs: 60_000 });
    readyAfter.push(performance.now() - t);
  }
  await new Promise((r) => setTimeout(r, 500));
  stop.abort();
  const [g, p] = [await gets, await posts];
  process.kill(pid, "SIGTERM");
  while (runs(pid)) await new Promise((r) => setTimeout(r, 50));
  child.unref();
  const med = readyAfter.sort((a, b) => a - b)[readyAfter.length >> 1];
  console.log(
    `Next.js standalone, ${runtime}: ${upgrades} upgrades; GET ${g.ok} answered, ${g.failed} failed; ` +
      `POST ${p.ok} answered, ${p.failed} failed; new generation ready (pid file) ` +
      `${med.toFixed(0)} ms after SIGHUP (median)`,
  );
  if (g.failed + p.failed > 0) {
    console.log(JSON.stringify({ gets: g.failures, posts: p.failures }));
    process.exitCode = 1;
  }
}

const nextMissing = missing(["next", "react", "react-dom"]);
if (values.standalone) {
  const dir = mkdtempSync(join(tmpdir(), "instar-bench-next-"));
  await runNext(resolve(values.standalone), dir).finally(() => rmSync(dir, { recursive: true }));
} else if (nextMissing.length > 0) {
  console.log(
    `skipped Next.js: ${nextMissing.join(", ")} not installed in ${modules}/node_modules`,
  );
} else {
  const dir = mkdtempSync(join(tmpdir(), "instar-bench-next-"));
  try {
    await runNext(buildNext(dir), dir);
  } finally {
    if (values.keep) console.log(`kept ${dir}/.next/standalone (--standalone runs it again)`);
    else rmSync(dir, { recursive: true, force: true });
  }
}
for (const [name, pkgs] of OTHERS) {
  const absent = missing(pkgs);
  console.log(
    absent.length > 0
      ? `skipped ${name}: ${absent.join(", ")} not installed in ${modules}/node_modules`
      : `skipped ${name}: installed, but this script has no build recipe for it yet`,
  );
}
