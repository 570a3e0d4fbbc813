/**
 * Upgrades under load: examples/http_server.ts serves keep-alive GET clients,
 * keep-alive clients POSTing 16 KiB bodies and a storm of short connections
 * while it is upgraded back to back; every failed request is counted (the
 * load client never re-sends: a request whose connection closes before its
 * response is a failure), and the latency of requests answered inside an
 * upgrade window (from SIGHUP until the old generation has exited) is
 * compared with the steady state (all other requests), in the same run.
 *
 * The server runs with `--stats-file`: every generation appends how many POST
 * bodies it read once it has drained, and their sum must equal the number of
 * POST responses the client got (a body read whose response was lost, or a
 * response without a body read, is a failure).
 *
 *   deno run -A bench/serve_upgrade.ts          # server and client on Deno
 *   bun bench/serve_upgrade.ts                  # server and client on Bun
 *   … --runtime bun|deno --upgrades 100 --connections 32 --post 4 --post-bytes 16384
 *     --short 8 --steady-ms 3000
 *     --server <script>   another server taking `--port 0` and `--stats-file <path>`, answering
 *                         a POST with the number of body bytes, and logging like logLifecycle()
 *
 * With wrk as the client instead: bench/serve_upgrade_wrk.ts.
 *
 * Phases: 1 s of warm-up (not counted), `--steady-ms` of steady load, the
 * upgrades, `--steady-ms` more of steady load. By default the upgrades run
 * back to back: each SIGHUP goes to the newest generation as soon as the one
 * before reported `upgrade-succeeded`, so windows overlap. With
 * `--pause-ms <n>` the next SIGHUP waits until the old generation has exited
 * and n ms more, which separates the two halves of a window: `booting` (SIGHUP
 * until `upgrade-succeeded` was read: the new generation starts while the old
 * one serves) and `handover` (from then until the old generation exited: the
 * new one accepts, the old one drains). `steady` is every request outside the
 * windows (with `--pause-ms`, the pauses too); `baseline` only those before the
 * first SIGHUP and after the last old generation exited. Every failed request
 * is listed with its load, kind, time and the upgrade window it fell in.
 * Results go to stdout as Markdown and to
 * .bench-out/serve_upgrade-<runtime>.json; the exit code is 1 when a request
 * failed, the POST counts differ, an upgrade did not succeed or the last
 * generation did not exit after SIGTERM.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type FailureKind,
  type LoadResult,
  percentile,
  runLoad,
} from "../tests/support/load_client.ts";
import { alive, ROOT, RUNTIME, runtimeCmd, sleep, startServer } from "../tests/support/helpers.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: RUNTIME },
    upgrades: { type: "string", default: "100" },
    connections: { type: "string", default: "32" },
    post: { type: "string", default: "4" },
    "post-bytes": { type: "string", default: "16384" },
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
const POST = Number(values.post);
const POST_BYTES = Number(values["post-bytes"]);
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

const tmp = mkdtempSync(join(tmpdir(), "instar-serve-upgrade-"));
const statsFile = join(tmp, "posts.txt");
const server = startServer(
  runtimeCmd(runtime, values.server, ["--port", "0", "--stats-file", statsFile]),
);
const ours = new Set<number>([server.pid]); // generations that may still run
let current = server.pid;
const samples = { keepAlive: [] as Sample[], post: [] as Sample[], short: [] as Sample[] };
/** Per upgrade: SIGHUP sent, `upgrade-succeeded` read, old generation gone. */
const windows: { n: number; sighup: number; succeeded: number; exited: number }[] = [];
/** Failed requests (the first MAX_LISTED): which load, its kind, when it was sent and failed. */
const failures: { load: string; kind: FailureKind; sent: number; failed: number; msg: string }[] =
  [];
const MAX_LISTED = 100_000;
const onFailure =
  (load: string) => (kind: FailureKind, sent: number, failed: number, msg: string) =>
    void (failures.length < MAX_LISTED && failures.push({ load, kind, sent, failed, msg }));
/** POST responses whose body was not the number of bytes sent. */
let badPostBodies = 0;
const readyMs: number[] = [];
let failedUpgrade = "";
let load: [LoadResult, LoadResult, LoadResult] | undefined;
let measured: Interval = [0, 0];
let lastExited = false;

try {
  const port = Number((await server.waitFor(/ready on 127\.0\.0\.1:(\d+)/, 60_000))[1]);
  const ac = new AbortController();
  const common = { port, durationMs: 300_000, signal: ac.signal };
  const loads = Promise.all([
    runLoad({
      ...common,
      connections: CONNECTIONS,
      onLatency: (t0, ms) => samples.keepAlive.push({ end: t0 + ms, ms }),
      onFailure: onFailure("keep-alive"),
    }),
    runLoad({
      ...common,
      connections: Math.max(POST, 0),
      postBytes: POST_BYTES,
      onLatency: (t0, ms) => samples.post.push({ end: t0 + ms, ms }),
      onResponse: (body) => void (body.trim() !== String(POST_BYTES) && badPostBodies++),
      onFailure: onFailure("post"),
    }),
    runLoad({
      ...common,
      connections: SHORT,
      keepAlive: false,
      onLatency: (t0, ms) => samples.short.push({ end: t0 + ms, ms }),
      onFailure: onFailure("short"),
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
    let m: RegExpMatchArray;
    try {
      process.kill(old, "SIGHUP");
      m = await server.waitFor(
        new RegExp(`pid=${old} gen=\\d+\\] upgrade-(succeeded|failed): (.*)`),
        60_000,
        from,
      );
    } catch (e) {
      // The generation is gone, or said nothing within 60 s: report what was measured so far.
      const why = (e as Error).message.split("\n")[0];
      failedUpgrade = `upgrade ${i + 1}: pid ${old}${alive(old) ? "" : " is gone"}: ${why}`;
      break;
    }
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
      windows.push({ n: i + 1, sighup, succeeded, exited: performance.now() });
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
  // The last generation drains (and appends its POST count to the stats file) and exits.
  try {
    process.kill(current, "SIGTERM");
  } catch { /* gone: lastExited says so */ }
  const stopBy = performance.now() + 30_000;
  while (alive(current) && performance.now() < stopBy) await sleep(10);
  lastExited = !alive(current);
} finally {
  for (const pid of ours) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  server.killAll();
}

// `<pid> <POST bodies read>` per generation that drained.
let statsText = "";
try {
  statsText = readFileSync(statsFile, "utf8");
} catch { /* no generation wrote it */ }
rmSync(tmp, { recursive: true, force: true });
const statLines = statsText.split("\n").filter((l) => l.trim() !== "");
const serverPosts = statLines.reduce((n, l) => n + Number(l.split(" ")[1]), 0);

const upgrading = merge(windows.map((w): Interval => [w.sighup, w.exited]));
const handover = merge(windows.map((w): Interval => [w.succeeded, w.exited]));
const length = (list: Interval[]) => list.reduce((n, [s, e]) => n + e - s, 0);
const windowMs = length(upgrading), handoverMs = length(handover);
const steadyMs = measured[1] - measured[0] - windowMs;
// The steady load before the first SIGHUP and after the last old generation exited: the
// baseline that no upgrade touched (with --pause-ms, "steady" also holds the pauses, right
// after a new generation took over).
const baselineSpans: Interval[] = upgrading.length === 0
  ? [measured]
  : [[measured[0], upgrading[0][0]], [upgrading.at(-1)![1], measured[1]]];
const baselineMs = length(baselineSpans);
const classify = (list: Sample[]) => {
  const phases = { steady: [] as number[], booting: [] as number[], handover: [] as number[] };
  const baseline: number[] = [];
  for (const { end, ms } of list) {
    if (end < measured[0] || end > measured[1]) continue;
    if (inside(baselineSpans, end)) baseline.push(ms);
    const phase = inside(handover, end)
      ? "handover"
      : inside(upgrading, end)
      ? "booting"
      : "steady";
    phases[phase].push(ms);
  }
  return {
    steady: stats(phases.steady, steadyMs),
    baseline: stats(baseline, baselineMs),
    upgrading: stats([...phases.booting, ...phases.handover], windowMs),
    booting: stats(phases.booting, windowMs - handoverMs),
    handover: stats(phases.handover, handoverMs),
  };
};
const [keepAlive, post, short] = load!;
// Failed requests grouped by load, kind and the upgrade window they failed in ("outside any
// upgrade window" if none), with the first and last time (s since the measured phase began).
const groups = new Map<string, { count: number; first: number; last: number; msg: string }>();
for (const f of failures) {
  const w = windows.filter((w) => f.failed >= w.sighup && f.failed <= w.exited).map((w) => w.n);
  const where = w.length ? `in upgrade ${w.join("+")}` : "outside any upgrade window";
  const key = `${f.load} ${f.kind} ${where}`;
  const t = (f.failed - measured[0]) / 1000;
  const g = groups.get(key);
  if (g) {
    g.count++;
    g.last = Math.max(g.last, t);
    g.first = Math.min(g.first, t);
  } else groups.set(key, { count: 1, first: t, last: t, msg: f.msg });
}
const failureList = [...groups].map(([key, g]) =>
  `${g.count} × ${key}, ${g.first.toFixed(3)}–${g.last.toFixed(3)} s (e.g. ${g.msg})`
);
if (failures.length >= MAX_LISTED) {
  failureList.push(`(only the first ${MAX_LISTED} failed requests are grouped here)`);
}
const postCheck = {
  clientResponses: post.ok,
  serverBodiesRead: serverPosts,
  generationsReporting: statLines.length,
  generations: readyMs.length + 1,
  badBodies: badPostBodies,
  ok: POST === 0 ||
    (post.ok === serverPosts && statLines.length === readyMs.length + 1 && badPostBodies === 0),
};
const windowLengths = windows.map((w) => w.exited - w.sighup);
const handoverLengths = windows.map((w) => w.exited - w.succeeded);
const result = {
  runtime,
  client: RUNTIME,
  upgrades: readyMs.length,
  failedUpgrade,
  pauseMs: PAUSE_MS ?? null,
  connections: CONNECTIONS,
  postConnections: POST,
  postBytes: POST_BYTES,
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
  post: {
    failed: post.failed,
    failures: post.failures,
    ...classify(samples.post),
  },
  short: {
    failed: short.failed,
    failures: short.failures,
    ...classify(samples.short),
  },
  postCheck,
  lastGenerationExited: lastExited,
  failureList,
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
const loads = [
  [`keep-alive ×${CONNECTIONS}`, result.keepAlive],
  [`POST ${POST_BYTES} B ×${POST}`, result.post],
  [`short ×${SHORT}`, result.short],
] as const;
for (const [name, r] of loads) {
  const p99 = r.upgrading.p99 / r.steady.p99, p99b = r.upgrading.p99 / r.baseline.p99;
  console.log(
    `${name}: ${r.steady.requests + r.upgrading.requests} answered, ${r.failed} failed ` +
      `${JSON.stringify(r.failures)} (a client that never re-sends); p99 inside windows / steady ` +
      `${f(r.upgrading.p99)} / ${f(r.steady.p99)} ms = ${f(p99)}x (target <= 2x: ` +
      `${p99 <= 2 ? "met" : "NOT met"}); / baseline ${f(r.baseline.p99)} ms = ${f(p99b)}x`,
  );
}
console.log(
  `POST count check: the client got ${postCheck.clientResponses} POST responses, the server's ` +
    `${postCheck.generationsReporting} of ${postCheck.generations} generations read ` +
    `${postCheck.serverBodiesRead} POST bodies${
      postCheck.badBodies ? `, ${postCheck.badBodies} responses with a wrong byte count` : ""
    }: ${postCheck.ok ? "equal" : "MISMATCH"}`,
);
console.log("\n| runtime | load | phase | requests | req/s | p50 ms | p99 ms | max ms |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (const [name, r] of loads) {
  for (const phase of ["baseline", "steady", "upgrading", "booting", "handover"] as const) {
    const s = r[phase];
    console.log(
      `| ${runtime} | ${name} | ${phase} | ${s.requests} | ${f(s.perSecond, 0)} | ${f(s.p50)} | ` +
        `${f(s.p99)} | ${f(s.max, 1)} |`,
    );
  }
}
if (failureList.length > 0) console.log(`\nfailures:\n${failureList.join("\n")}`);
const failed = keepAlive.failed + post.failed + short.failed > 0 || failedUpgrade !== "" ||
  result.upgrades < UPGRADES || !postCheck.ok || !lastExited;
process.exit(failed ? 1 : 0);
