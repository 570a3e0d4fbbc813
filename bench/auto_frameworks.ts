/**
 * Frameworks' production servers under instar/auto, by hand (the suite's
 * tests/next_test.ts runs Next.js through `instar run --auto`; this runs the
 * bare preload with a PID file, for figures). Nothing is downloaded: a
 * framework is tried only if it is installed, else the script says it skipped
 * it and why.
 *
 * - **Next.js** (`next`, `react`, `react-dom`, devDependencies): the app of
 *   tests/fixtures/next (`output: "standalone"`, a pages-router API route
 *   `/api/pid` answering GET and POST with the pid), built once and cached by
 *   tests/support/next_build.ts; its generated `server.js` runs unmodified with
 *   the preload and `INSTAR_AUTO_READY_URL=/api/pid`, through `--upgrades`
 *   SIGHUPs (each after the previous one finished, 1 s apart) under a keep-alive
 *   GET load and a 16 KiB POST load from clients that never re-send
 *   (tests/support/load_client.ts).
 * - **Nitro, SvelteKit, Astro**: reported as installed in `--modules <dir>`
 *   (its `node_modules`) or not; no build recipe here yet (their node servers
 *   end in node:http `listen()`, which the suite tests under load).
 *
 * Usage: deno run -A bench/auto_frameworks.ts [--modules <dir>] [--upgrades 10] [--runtime bun|deno]
 * (`--standalone <dir>`: run an already built `.next/standalone`)
 *
 * Only hits 127.0.0.1.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { runLoad } from "../tests/support/load_client.ts";
import { bin, ROOT } from "../tests/support/procs.ts";
import { nextPidInPidFile } from "../tests/support/status.ts";
import { builtNext, nextMissing } from "../tests/support/next_build.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    modules: { type: "string", default: ROOT },
    upgrades: { type: "string", default: "10" },
    runtime: { type: "string", default: "bun" },
    standalone: { type: "string" },
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

/** Runs `serverJs` (a standalone server.js) under the preload through the upgrades under load. */
async function runNext(serverJs: string, dir: string): Promise<void> {
  const port = await freePort(), pidFile = join(dir, "app.pid");
  const cmd = runtime === "deno"
    ? [bin("deno"), "run", "-A", "--unstable-detect-cjs", "--preload", PRELOAD, serverJs]
    : [bin("bun"), "--preload", PRELOAD, serverJs];
  const child = spawn(cmd[0], cmd.slice(1), {
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

const dir = mkdtempSync(join(tmpdir(), "instar-bench-next-"));
try {
  if (values.standalone) await runNext(join(resolve(values.standalone), "server.js"), dir);
  else if (nextMissing()) console.log(`skipped Next.js: ${nextMissing()}`);
  else {
    const built = await builtNext();
    console.log(`next build: ${built.buildSeconds} s${built.builtNow ? "" : " (cached)"}`);
    await runNext(built.serverJs, dir);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
for (const [name, pkgs] of OTHERS) {
  const absent = missing(pkgs);
  console.log(
    absent.length > 0
      ? `skipped ${name}: ${absent.join(", ")} not installed in ${modules}/node_modules`
      : `skipped ${name}: installed, but this script has no build recipe for it yet`,
  );
}
