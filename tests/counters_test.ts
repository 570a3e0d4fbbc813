// Counters that are exact once drains settle: examples/http_server.ts of this
// runtime under a keep-alive load from a client that never re-sends, through
// 20 back-to-back SIGHUP upgrades (each one sent the moment the PID file names
// the new generation), with and without a control socket, and through a
// rollback within a promotion window. Once every old generation has exited,
// instar_requests_total must equal the requests the client was answered plus
// the test's own requests, and instar_upgrades_total each outcome, exactly:
// every generation counts in its slot of the shared counter region
// (src/observe/counter_region.ts) and the last one reads the sum.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cleanupAfterTests,
  exchange,
  freePort,
  httpGet,
  ROOT,
  RUNTIME,
  runtimeCmd,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { runLoad } from "./support/load_client.ts";
import { parsePrometheus, value } from "./support/prometheus.ts";
import { nextPidInPidFile } from "./support/status.ts";

const HTTP = join(ROOT, "examples", "http_server.ts");
const UPGRADES = 20;

const left = cleanupAfterTests();

/** The example on a free port with a PID file (and `args`); resolves once generation 1 wrote it. */
async function start(args: string[]) {
  const dir = left.tempDir("instar-counters-");
  const port = await freePort();
  const pidFile = join(dir, "app.pid");
  const server = startServer(
    runtimeCmd(RUNTIME, HTTP, [
      "--port",
      String(port),
      "--pid-file",
      pidFile,
      "--drain-timeout",
      "5000",
      ...args.map((a) => a.replace("$DIR", dir)),
    ]),
  );
  left.servers.push(server);
  const pid = await nextPidInPidFile(pidFile, 0, { timeoutMs: 30_000, log: server.lines });
  return { server, port, pidFile, pid };
}

/** GET /metrics on a fresh connection: the scrape is itself a request counted. */
async function scrape(port: number): Promise<string> {
  const raw = await exchange(port, httpGet("/metrics"), { timeoutMs: 30_000 });
  assert.match(raw, /^HTTP\/1\.1 200/);
  return raw.slice(raw.indexOf("\r\n\r\n") + 4);
}

/** Upgrades by SIGHUP `count` times back to back; returns every pid, the first one included. */
async function upgrades(s: Awaited<ReturnType<typeof start>>, count: number): Promise<number[]> {
  const pids = [s.pid];
  for (let i = 0; i < count; i++) {
    const pid = pids[pids.length - 1];
    process.kill(pid, "SIGHUP");
    const next = await nextPidInPidFile(s.pidFile, pid, { timeoutMs: 30_000, log: s.server.lines });
    s.server.pids.add(next);
    pids.push(next);
  }
  return pids;
}

async function exactThroughUpgrades(args: string[]): Promise<void> {
  const s = await start(args);
  const stop = new AbortController();
  const load = runLoad({
    port: s.port,
    connections: 3,
    durationMs: 120_000,
    signal: stop.signal,
  });
  const pids = await upgrades(s, UPGRADES);
  stop.abort();
  const answered = await load;
  for (const pid of pids.slice(0, -1)) await stopped(pid, 30_000);
  const text = await parsePrometheus(await scrape(s.port));
  const failures = Object.values(answered.failures).reduce((a, b) => a + b, 0);
  assert.equal(failures, 0, `no request failed: ${JSON.stringify(answered.failures)}`);
  assert.ok(answered.ok > 200, `the load was answered (${answered.ok})`);
  assert.equal(
    value(text, "instar_requests_total"),
    answered.ok + 1,
    "every request answered, and this scrape, counted exactly once",
  );
  assert.equal(value(text, "instar_upgrades_total", { outcome: "succeeded" }), UPGRADES);
  assert.equal(value(text, "instar_generation"), UPGRADES + 1);
}

describe(`exact counters across upgrades (${RUNTIME})`, () => {
  test("20 back-to-back SIGHUP upgrades lose no count, with and without a control socket", async () => {
    // Two servers at once: each waits mostly for its generations to start, not for the CPU.
    await Promise.all([
      exactThroughUpgrades([]),
      exactThroughUpgrades(["--control", "$DIR/ctl.sock"]),
    ]);
  });

  test("a rollback within the promotion window keeps the new generation's requests", async () => {
    const s = await start(["--promotion-window", "3000"]);
    const stop = new AbortController();
    const load = runLoad({ port: s.port, connections: 4, durationMs: 60_000, signal: stop.signal });
    const from = s.server.lines.length;
    const [, next] = await upgrades(s, 1);
    await s.server.waitFor(/promotion-window: pid \d+ is ready/, 30_000, from);
    // New connections reach the new generation within its window: it counts these in its slot.
    const byNew = 5;
    for (let i = 0; i < byNew - 1; i++) {
      assert.match(await exchange(s.port, httpGet("/")), new RegExp(`pid ${next} `));
    }
    const answer = await exchange(s.port, httpGet("/unhealthy?reason=counted"));
    assert.match(answer, /rolled back: counted/);
    await stopped(next, 30_000);
    stop.abort();
    const answered = await load;
    const text = await parsePrometheus(await scrape(s.port));
    assert.equal(Object.values(answered.failures).reduce((a, b) => a + b, 0), 0);
    assert.equal(value(text, "instar_generation"), 1, "the first generation serves on");
    assert.equal(value(text, "instar_requests_total"), answered.ok + byNew + 1);
    assert.equal(value(text, "instar_upgrades_total", { outcome: "rolled-back" }), 1);
    assert.equal(value(text, "instar_upgrades_total", { outcome: "succeeded" }), 0);
  });
});
