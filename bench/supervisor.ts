/**
 * `instar run`'s costs and its crash restarts, per runtime (the supervisor and
 * the app run under the same one):
 * - crash restart with `--listen` and `--restart on-failure`: a load that never
 *   re-sends (new connection per request) runs while the current generation is
 *   killed with SIGKILL `--crashes` times; connections refused (target 0),
 *   other failures (requests in flight in the killed process), the longest
 *   wait for an answer, and the time from the kill to the next generation's READY;
 * - idle: the supervisor's CPU ticks and context switches over `--seconds`
 *   with an idle app, and its resident memory, next to the runtime's own floor
 *   (a script that only waits, same runtime);
 * - per upgrade: the supervisor's CPU ticks per SIGHUP upgrade (`--upgrades`).
 *
 *   deno run -A bench/supervisor.ts [--runtime deno|bun|both] [--seconds 20] [--crashes 5]
 *                                   [--upgrades 10] [--rounds 2]
 *   bun bench/supervisor.ts …
 *
 * Linux only; only 127.0.0.1 is used.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import * as sys from "../src/ffi/mod.ts";
import { alive, bin, ROOT, runtimeCmd, sleep } from "../tests/support/procs.ts";
import { rawListen } from "../tests/support/helpers.ts";
import { percentile, runLoad } from "../tests/support/load_client.ts";
import { serverStatus, type StatusReport } from "../tests/support/status.ts";

type Runtime = "deno" | "bun";
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: "both" },
    seconds: { type: "string", default: "20" },
    crashes: { type: "string", default: "5" },
    upgrades: { type: "string", default: "10" },
    rounds: { type: "string", default: "2" },
  },
  strict: true,
});
const RUNTIMES: Runtime[] = values.runtime === "both"
  ? ["deno", "bun"]
  : [values.runtime as Runtime];
const SECONDS = Number(values.seconds);
const CRASHES = Number(values.crashes);
const UPGRADES = Number(values.upgrades);
const ROUNDS = Number(values.rounds);

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime
}

/** Context switches per thread of `pid` (voluntary + nonvoluntary), by thread id. */
function switches(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${t}/status`, "utf8");
      let n = 0;
      for (const m of s.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
      out.set(t, n);
    } catch { /* thread ended */ }
  }
  return out;
}

/** Switches between two samples, over the threads alive at the end (a thread that ended is not a wakeup). */
function switchesSince(before: Map<string, number>, after: Map<string, number>): number {
  let n = 0;
  for (const [t, c] of after) n += c - (before.get(t) ?? 0);
  return n;
}

function memKb(pid: number, field: "VmRSS" | "RssAnon"): number {
  const re = new RegExp(`^${field}:\\s+(\\d+)`, "m");
  return Number(re.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
}

/** CPU ticks and context switches of `pid` over `SECONDS`, and its memory at the end. */
async function idleWindow(pid: number) {
  const [t0, s0] = [cpuTicks(pid), switches(pid)];
  await sleep(SECONDS * 1000);
  return {
    ticks: cpuTicks(pid) - t0,
    switches: switchesSince(s0, switches(pid)),
    rssKb: memKb(pid, "VmRSS"),
    anonKb: memKb(pid, "RssAnon"),
  };
}

/** The pid and generation number the app answers with (a GET to 127.0.0.1). */
async function served(port: number): Promise<{ pid: number; generation: number }> {
  try {
    const body = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    const m = /pid (\d+) generation (\d+)/.exec(body);
    return { pid: Number(m?.[1] ?? 0), generation: Number(m?.[2] ?? 0) };
  } catch {
    return { pid: 0, generation: 0 };
  }
}

async function freePort(): Promise<number> {
  const { fd, port } = await rawListen();
  sys.close(fd);
  return port;
}

async function statusWhere(ctl: string, ok: (s: StatusReport) => boolean): Promise<StatusReport> {
  const until = Date.now() + 60_000;
  for (;;) {
    const s = await serverStatus(ctl).catch(() => null);
    if (s && ok(s)) return s;
    if (Date.now() > until) throw new Error(`no such status on ${ctl}: ${JSON.stringify(s)}`);
    await sleep(20);
  }
}

const LOG = join(tmpdir(), `instar-bench-supervisor-${process.pid}.log`);

/** Starts `instar run`; its and the app's output go to LOG (printed when something is stuck). */
function startSupervisor(rt: Runtime, options: string[], port: number): ChildProcess {
  const app = runtimeCmd(rt, join(ROOT, "examples/http_server.ts"), [
    "--hostname",
    "127.0.0.1",
    "--port",
    String(port),
  ]);
  const cmd = runtimeCmd(rt, join(ROOT, "src/cli/main.ts"), ["run", ...options, "--", ...app]);
  const log = openSync(LOG, "a");
  try {
    return spawn(cmd[0], cmd.slice(1), { stdio: ["ignore", log, log] });
  } finally {
    closeSync(log);
  }
}

async function stop(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

async function crashRestart(rt: Runtime, dir: string) {
  const port = await freePort();
  const ctl = join(dir, `crash-${rt}.sock`);
  const listen = `tcp://127.0.0.1:${port}`;
  const sup = startSupervisor(
    rt,
    ["--control", ctl, "--restart", "on-failure", "--listen", listen],
    port,
  );
  let st = await statusWhere(ctl, (s) => s.state === "ready");
  const ac = new AbortController();
  const load = runLoad({
    port,
    connections: 8,
    keepAlive: false,
    durationMs: 600_000,
    timeoutMs: 30_000,
    signal: ac.signal,
  });
  const restartMs: number[] = [];
  for (let i = 0; i < CRASHES; i++) {
    await sleep(1000);
    const before = st.pid;
    const t0 = performance.now();
    process.kill(before, "SIGKILL");
    st = await statusWhere(ctl, (s) => s.pid !== before && s.state === "ready");
    restartMs.push(performance.now() - t0);
  }
  await sleep(1000);
  ac.abort();
  const r = await load;
  await stop(sup);
  return {
    ok: r.ok,
    refused: r.failures.refused,
    otherFailed: r.failed - r.failures.refused,
    longestWaitMs: Math.max(...r.latencies),
    p99Ms: percentile(r.latencies, 99),
    restartMs: restartMs.map((m) => Math.round(m)),
  };
}

async function idleAndUpgrades(rt: Runtime, dir: string) {
  const port = await freePort();
  const ctl = join(dir, `idle-${rt}.sock`);
  const sup = startSupervisor(rt, ["--control", ctl], port);
  await statusWhere(ctl, (s) => s.state === "ready");
  await sleep(2000);
  const idle = await idleWindow(sup.pid!);
  // Upgrades are followed through the app's answers and /proc, which cost the supervisor nothing.
  const u0 = cpuTicks(sup.pid!);
  const t0 = performance.now();
  let old = (await served(port)).pid;
  for (let g = 2; g <= UPGRADES + 1; g++) {
    process.kill(sup.pid!, "SIGHUP");
    const until = Date.now() + 60_000;
    let now = await served(port);
    while (now.generation !== g) {
      if (Date.now() > until) throw new Error(`upgrade to generation ${g} stuck; see ${LOG}`);
      await sleep(20);
      now = await served(port);
    }
    while (alive(old)) await sleep(20); // the old generation drained and is gone
    old = now.pid;
  }
  const upgrades = {
    ticksPerUpgrade: (cpuTicks(sup.pid!) - u0) / UPGRADES,
    msPerUpgrade: Math.round((performance.now() - t0) / UPGRADES),
    rssAfterKb: memKb(sup.pid!, "VmRSS"),
  };
  await stop(sup);
  return { idle, upgrades };
}

/**
 * The runtime's floors: `eval`, a script that only waits; `libs`, one that also
 * loads libc through FFI and node:net (bench/supervisor_floor.ts).
 */
async function floor(rt: Runtime, kind: "eval" | "libs") {
  const cmd = kind === "libs"
    ? runtimeCmd(rt, join(ROOT, "bench/supervisor_floor.ts"))
    : rt === "deno"
    ? [bin("deno"), "eval", "setInterval(() => {}, 2 ** 31 - 1)"]
    : [bin("bun"), "-e", "setInterval(() => {}, 2 ** 31 - 1)"];
  const child = spawn(cmd[0], cmd.slice(1), { stdio: "ignore" });
  await sleep(2000);
  const w = await idleWindow(child.pid!);
  child.kill("SIGKILL");
  return w;
}

const dir = mkdtempSync(join(tmpdir(), "instar-bench-sup-"));
try {
  for (const rt of RUNTIMES) {
    const crash = await crashRestart(rt, dir);
    // Interleaved: floor and supervisor alternate, ROUNDS times.
    for (let round = 0; round < ROUNDS; round++) {
      const first = round % 2 === 0;
      const a = first ? [await floor(rt, "eval"), await floor(rt, "libs")] : null;
      const cost = await idleAndUpgrades(rt, dir);
      const [evalFloor, libsFloor] = a ?? [await floor(rt, "eval"), await floor(rt, "libs")];
      console.log(JSON.stringify({ runtime: rt, round, supervisor: cost, evalFloor, libsFloor }));
    }
    console.log(JSON.stringify({ runtime: rt, crash }));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
