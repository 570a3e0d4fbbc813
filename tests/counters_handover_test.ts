// Counters that are exact once drains settle, however the next generation
// comes to exist: examples/http_server.ts of this runtime under a keep-alive
// load from a client that never re-sends, handed over 3 times to processes
// started independently on its control socket (the counter region travels
// with the sockets over SCM_RIGHTS), and upgraded 5 times back to back under
// `instar run`. Once every old generation has exited, instar_requests_total
// equals the requests answered plus the test's scrape, exactly. And a
// generation `instar run` restarts after a crash counts on from the crashed
// one's counts (the supervisor holds the region).
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
  type ServerProcess,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { type LoadResult, runLoad } from "./support/load_client.ts";
import { nextPidInPidFile } from "./support/status.ts";

const HTTP = join(ROOT, "examples", "http_server.ts");
const CLI = join(ROOT, "src", "cli", "main.ts");

const left = cleanupAfterTests();

function app(port: number, dir: string, extra: string[] = []): string[] {
  return runtimeCmd(RUNTIME, HTTP, [
    "--port",
    String(port),
    "--pid-file",
    join(dir, "app.pid"),
    "--drain-timeout",
    "5000",
    ...extra,
  ]);
}

function started(cmd: string[]): ServerProcess {
  const s = startServer(cmd);
  left.servers.push(s);
  return s;
}

/** The one sample of `name` whose line contains `labels`. */
function sample(text: string, name: string, labels = ""): number {
  const lines = text.split("\n").filter((l) => l.startsWith(`${name}{`) && l.includes(labels));
  assert.equal(lines.length, 1, `one ${name} ${labels} in:\n${text}`);
  return Number(lines[0].slice(lines[0].lastIndexOf(" ") + 1));
}

/** Scrapes once every old generation has exited; asserts the counts are exact. */
async function assertExact(port: number, old: number[], answered: LoadResult, upgrades: number) {
  for (const pid of old) await stopped(pid, 30_000);
  const raw = await exchange(port, httpGet("/metrics"), { timeoutMs: 30_000 });
  const text = raw.slice(raw.indexOf("\r\n\r\n") + 4);
  assert.equal(Object.values(answered.failures).reduce((a, b) => a + b, 0), 0);
  assert.ok(answered.ok > 100, `the load was answered (${answered.ok})`);
  assert.equal(sample(text, "instar_requests_total"), answered.ok + 1, "answered + this scrape");
  assert.equal(sample(text, "instar_upgrades_total", 'outcome="succeeded"'), upgrades);
}

/** The app under `instar run`, holding 127.0.0.1:`port` (`options`: more of instar run's). */
function underRun(port: number, dir: string, options: string[] = []) {
  return started(
    runtimeCmd(RUNTIME, CLI, [
      "run",
      "--listen",
      `tcp://127.0.0.1:${port}`,
      ...options,
      "--",
      ...app(port, dir),
    ]),
  );
}

describe(`exact counters across handovers and instar run (${RUNTIME})`, () => {
  test("3 handovers to independently started processes lose no count", async () => {
    const dir = left.tempDir("instar-counters-");
    const port = await freePort(), pidFile = join(dir, "app.pid");
    const cmd = app(port, dir, ["--control", join(dir, "ctl.sock")]);
    const first = started(cmd);
    const pids = [await nextPidInPidFile(pidFile, 0, { log: first.lines })];
    const stop = new AbortController();
    const load = runLoad({ port, connections: 4, durationMs: 60_000, signal: stop.signal });
    for (let i = 0; i < 3; i++) {
      const peer = started(cmd); // asks the running generation for its sockets
      pids.push(await nextPidInPidFile(pidFile, pids[pids.length - 1], { log: peer.lines }));
    }
    stop.abort();
    await assertExact(port, pids.slice(0, -1), await load, 3);
  });

  test("5 back-to-back upgrades under instar run lose no count", async () => {
    const dir = left.tempDir("instar-counters-");
    const port = await freePort(), pidFile = join(dir, "app.pid");
    const run = underRun(port, dir);
    const pids = [await nextPidInPidFile(pidFile, 0, { log: run.lines })];
    await run.waitFor(/generation 1 \(pid \d+\) is ready/, 30_000); // READY=1 reached the supervisor
    const stop = new AbortController();
    const load = runLoad({ port, connections: 4, durationMs: 60_000, signal: stop.signal });
    for (let i = 0; i < 5; i++) {
      const from = run.lines.length;
      process.kill(run.pid, "SIGHUP"); // the supervisor upgrades its current generation
      // The next SIGHUP once the supervisor heard of the new one (before, it would join this one).
      const m = await run.waitFor(/\(pid (\d+)\) took over from/, 30_000, from);
      run.pids.add(Number(m[1]));
      pids.push(Number(m[1]));
    }
    stop.abort();
    await assertExact(port, pids.slice(0, -1), await load, 5);
  });

  test("a generation instar run restarts after a crash counts on from the crashed one's counts", async () => {
    const dir = left.tempDir("instar-counters-");
    const port = await freePort(), pidFile = join(dir, "app.pid");
    const run = underRun(port, dir, ["--restart", "on-failure"]);
    const first = await nextPidInPidFile(pidFile, 0, { log: run.lines });
    const answered = 25;
    for (let i = 0; i < answered; i++) {
      assert.match(await exchange(port, httpGet("/")), /^HTTP\/1\.1 200/);
    }
    const from = run.lines.length;
    process.kill(first, "SIGKILL"); // counted to the last request: no drain, no message
    await run.waitFor(/generation 2 \(pid \d+\) is ready/, 60_000, from);
    const raw = await exchange(port, httpGet("/metrics"), { timeoutMs: 30_000 });
    const text = raw.slice(raw.indexOf("\r\n\r\n") + 4);
    assert.equal(sample(text, "instar_generation"), 1, "a fresh start as the program sees it");
    assert.equal(
      sample(text, "instar_requests_total"),
      answered + 1,
      "the crashed one's, and this",
    );
    assert.ok(!run.lines.some((l) => /counter region/.test(l)), run.lines.join("\n"));
  });
});
