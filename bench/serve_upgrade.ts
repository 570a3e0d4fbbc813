/**
 * Upgrades under load: examples/http_server.ts serves keep-alive clients and
 * a storm of short connections while it is upgraded back to back; every
 * failed request is counted, and the latency of requests answered inside an
 * upgrade window (from SIGHUP until the old generation has exited) is
 * compared with the steady state (all other requests), in the same run.
 *
 *   deno run -A bench/serve_upgrade.ts          # server and client on Deno
 *   bun bench/serve_upgrade.ts                  # server and client on Bun
 *   … --runtime bun|deno --upgrades 100 --connections 32 --short 8 --steady-ms 3000
 *     --server <script>   another server taking `--port 0` and logging like logLifecycle()
 *
 * Phases: 1 s of warm-up (not counted), `--steady-ms` of steady load, the
 * upgrades, `--steady-ms` more of steady load. By default the upgrades run
 * back to back: each SIGHUP goes to the newest generation as soon as the one
 * before reported `upgrade-succeeded`, so windows overlap. With
 * `--pause-ms <n>` the next SIGHUP waits until the old generation has exited
 * and n ms more, which separates the two halves of a window: `booting` (SIGHUP
 * until `upgrade-succeeded` was read: the new generation starts while the old
 * one serves) and `handover` (from then until the old generation exited: the
 * new one accepts, the old one drains). Results go to stdout as Markdown and
 * to .bench-out/serve_upgrade-<runtime>.json; the exit code is 1 when a
 * request failed or an upgrade did not succeed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type LoadResult, percentile, runLoad } from "../tests/support/load_client.ts";
import { alive, ROOT, RUNTIME, runtimeCmd, sleep, startServer } from "../tests/support/helpers.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: RUNTIME },
    upgrades: { type: "string", default: "100" },
    connections: { type: "string", default: "32" },
    short: { type: "string", default: "8" },
    "steady-ms": { type: "string", default: "3000" },
    "budget-ms": { type: "string", default: "100000" },
    "pause-ms": { type: "string" },
    server: { type: "string", default: join(ROOT, "examples", "http_server.ts") },
  },
  strict: true,
});
const runtime = values.runtime;
if (runtime !== "deno" && runtime !== "bun") {
  throw new Error(`--runtime ${runtime}: expected deno or bun`);
}
const UPGRADES = Number(values.upgrades);
const CONNECTIONS = Number(values.connections);
const SHORT = Number(values.short);
const STEADY_MS = Number(values["steady-ms"]);
// Upgrades stop being started after this long, so that a slow machine still ends the run.
const BUDGET_MS = Number(values["budget-ms"]);
const PAUSE_MS = values["pause-ms"] === undefined ? undefined : Number(values["pause-ms"]);
const WARMUP_MS = 1000;

/** [start, end] in performance.now() ms. */
type Interval = [number, number];

/** A successful request: when it completed and how long it took. */
interface Sample {
  end: number;
  ms: number;
}

function merge(intervals: Interval[]): Interval[] {
  const out: Interval[] = [];
  for (const [s, e] of [...intervals].sort((a, b) => a[0] - b[0])) {
    const last = out.at(-1);
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

function inside(windows: Interval[], t: number): boolean {
  let lo = 0, hi = windows.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (t < windows[mid][0]) hi = mid - 1;
    else if (t > windows[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}

interface Stats {
  requests: number;
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
}

function stats(ms: number[], durationMs: number): Stats {
  return {
    requests: ms.length,
    perSecond: durationMs > 0 ? ms.length / (durationMs / 1000) : NaN,
    p50: percentile(ms, 50),
    p99: percentile(ms, 99),
    max: ms.reduce((a, b) => Math.max(a, b), 0),
  };
}

const server = startServer(runtimeCmd(runtime, values.server, ["--port", "0"]));
const ours = new Set<number>([server.pid]); // generations that may still run
let current = server.pid;
const samples = { keepAlive: [] as Sample[], short: [] as Sample[] };
/** Per upgrade: SIGHUP sent, `upgrade-succeeded` read, old generation gone. */
const windows: { sighup: number; succeeded: number; exited: number }[] = [];
const readyMs: number[] = [];
let failedUpgrade = "";
let load: [LoadResult, LoadResult] | undefined;
let measured: Interval = [0, 0];

try {
  const port = Number((await server.waitFor(/ready on 127\.0\.0\.1:(\d+)/, 60_000))[1]);
  const ac = new AbortController();
  const common = { port, durationMs: 300_000, signal: ac.signal };
  const loads = Promise.all([
    runLoad({
      ...common,
      connections: CONNECTIONS,
      onLatency: (t0, ms) => samples.keepAlive.push({ end: t0 + ms, ms }),
    }),
    runLoad({
      ...common,
      connections: SHORT,
      keepAlive: false,
      onLatency: (t0, ms) => samples.short.push({ end: t0 + ms, ms }),
    }),
  ]);
  await sleep(WARMUP_MS);
  const t0 = performance.now();
  await sleep(STEADY_MS);

  const exits: Promise<void>[] = [];
  const deadline = performance.now() + BUDGET_MS;
  for (let i = 0; i < UPGRADES && performance.now() < deadline; i++) {
    const from = server.lines.length;
    const old = current;
    const sighup = performance.now();
    process.kill(old, "SIGHUP");
    const m = await server.waitFor(/upgrade-(succeeded|failed): (.*)/, 60_000, from);
    if (m[1] !== "succeeded") {
      failedUpgrade = `upgrade ${i + 1}: ${m[2]}`;
      break;
    }
    const succeeded = performance.now();
    current = Number(/pid (\d+)/.exec(m[2])![1]);
    ours.add(current);
    readyMs.push(Number(/ready after (\d+) ms/.exec(m[2])![1]));
    // The window ends when the old generation has drained and exited.
    const exited = (async () => {
      while (alive(old)) await sleep(5);
      windows.push({ sighup, succeeded, exited: performance.now() });
      ours.delete(old);
    })();
    exits.push(exited);
    if (PAUSE_MS !== undefined) {
      await exited;
      await sleep(PAUSE_MS);
    }
  }
  await Promise.all(exits);
  await sleep(STEADY_MS);
  measured = [t0, performance.now()];
  ac.abort();
  load = await loads;
} finally {
  for (const pid of ours) {
    try {
      process.kill(pid, pid === current ? "SIGTERM" : "SIGKILL");
    } catch { /* gone */ }
  }
}

const upgrading = merge(windows.map((w): Interval => [w.sighup, w.exited]));
const handover = merge(windows.map((w): Interval => [w.succeeded, w.exited]));
const length = (list: Interval[]) => list.reduce((n, [s, e]) => n + e - s, 0);
const windowMs = length(upgrading), handoverMs = length(handover);
const steadyMs = measured[1] - measured[0] - windowMs;
const classify = (list: Sample[]) => {
  const phases = { steady: [] as number[], booting: [] as number[], handover: [] as number[] };
  for (const { end, ms } of list) {
    if (end < measured[0] || end > measured[1]) continue;
    const phase = inside(handover, end)
      ? "handover"
      : inside(upgrading, end)
      ? "booting"
      : "steady";
    phases[phase].push(ms);
  }
  return {
    steady: stats(phases.steady, steadyMs),
    upgrading: stats([...phases.booting, ...phases.handover], windowMs),
    booting: stats(phases.booting, windowMs - handoverMs),
    handover: stats(phases.handover, handoverMs),
  };
};
const [keepAlive, short] = load!;
const windowLengths = windows.map((w) => w.exited - w.sighup);
const handoverLengths = windows.map((w) => w.exited - w.succeeded);
const result = {
  runtime,
  client: RUNTIME,
  upgrades: readyMs.length,
  failedUpgrade,
  pauseMs: PAUSE_MS ?? null,
  connections: CONNECTIONS,
  shortConnections: SHORT,
  measuredMs: measured[1] - measured[0],
  windowMs,
  handoverMs,
  readyMs: { p50: percentile(readyMs, 50), p99: percentile(readyMs, 99) },
  windowLengthMs: { p50: percentile(windowLengths, 50), p99: percentile(windowLengths, 99) },
  handoverLengthMs: {
    p50: percentile(handoverLengths, 50),
    p99: percentile(handoverLengths, 99),
  },
  keepAlive: {
    failed: keepAlive.failed,
    failures: keepAlive.failures,
    ...classify(samples.keepAlive),
  },
  short: {
    failed: short.failed,
    failures: short.failures,
    ...classify(samples.short),
  },
  samples: [...keepAlive.samples, ...short.samples],
};

mkdirSync(join(ROOT, ".bench-out"), { recursive: true });
writeFileSync(
  join(ROOT, ".bench-out", `serve_upgrade-${runtime}.json`),
  JSON.stringify(result, null, 2) + "\n",
);

const f = (n: number, d = 2) => Number.isFinite(n) ? n.toFixed(d) : "–";
console.log(
  `\n${runtime} server, ${RUNTIME} client, ${result.upgrades} upgrades ` +
    `${
      PAUSE_MS === undefined ? "back to back" : `${PAUSE_MS} ms after each old generation exited`
    }` +
    `${failedUpgrade ? ` (stopped: ${failedUpgrade})` : ""}: ` +
    `new generation ready after p50 ${result.readyMs.p50} / p99 ${result.readyMs.p99} ms; ` +
    `window (SIGHUP → old generation exited) p50 ${f(result.windowLengthMs.p50, 0)} / ` +
    `p99 ${f(result.windowLengthMs.p99, 0)} ms, of which handover p50 ` +
    `${f(result.handoverLengthMs.p50, 0)} / p99 ${f(result.handoverLengthMs.p99, 0)} ms; ` +
    `${f(windowMs / 1000, 1)} s of ${
      f(result.measuredMs / 1000, 1)
    } s measured were inside a window`,
);
for (const [name, r] of [["keep-alive", result.keepAlive], ["short", result.short]] as const) {
  console.log(
    `${name}: ${r.failed} failed ${JSON.stringify(r.failures)} (a client that never re-sends)`,
  );
}
console.log("\n| runtime | load | phase | requests | req/s | p50 ms | p99 ms | max ms |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (
  const [name, r] of [
    [`keep-alive ×${CONNECTIONS}`, result.keepAlive],
    [`short ×${SHORT}`, result.short],
  ] as const
) {
  for (const phase of ["steady", "upgrading", "booting", "handover"] as const) {
    const s = r[phase];
    console.log(
      `| ${runtime} | ${name} | ${phase} | ${s.requests} | ${f(s.perSecond, 0)} | ${f(s.p50)} | ` +
        `${f(s.p99)} | ${f(s.max, 1)} |`,
    );
  }
}
if (result.samples.length > 0) console.log(`\nfailures: ${result.samples.join("; ")}`);
const failed = keepAlive.failed + short.failed > 0 || failedUpgrade !== "" ||
  result.upgrades < UPGRADES;
process.exit(failed ? 1 : 0);
