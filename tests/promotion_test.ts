// The promotion window (issue 13): the HTTP example of this runtime under a
// load client that never re-sends, a deploy that crashes after ready, a new
// generation that declares itself unhealthy, a window that passes, upgrades
// and stops within it. What is asserted is what the old generation and the
// clients saw: the event and log line, the PID file, `instar status`,
// `instar upgrade`'s exit status, sd_notify datagrams, every failure counted.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { type LoadResult, runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  cleanupAfterTests,
  datagramReceiver,
  drainDatagrams,
  exchange,
  httpGet,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  showResult,
  sleep,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { nextPidInPidFile, portOf, readyGeneration, waitForState } from "./support/status.ts";
import * as sys from "../src/ffi/mod.ts";
import { Upgrader } from "../mod.ts";
import type { InstarError } from "../src/errors.ts";
import { checkReason, messages } from "../src/protocol/messages.ts";
import { validateHello } from "../src/protocol/validate.ts";

const left = cleanupAfterTests();
const EXAMPLE = join(ROOT, "examples", "http_server.ts");
const CLI = join(ROOT, "src", "cli", "main.ts");
const GOOD = `import ${JSON.stringify(EXAMPLE)};\n`;
// The new version on disk crashes (an uncaught error, exit code 1) 1 s after ready.
const CRASHES = `import process from "node:process";
process.argv.push("--crash-after-ready", "1000");
await import(${JSON.stringify(EXAMPLE)});
`;

/** A server of the HTTP example, started from a deploy directory whose script a test replaces. */
interface Started {
  server: ServerProcess;
  port: number;
  ctl: string;
  pidFile: string;
  deploy(source: string): void;
  /** The sd_notify datagrams it sent so far (NOTIFY_SOCKET is a receiver of this test). */
  notified(): string[];
}

async function start(windowMs: number | null, extra: string[] = []): Promise<Started> {
  const dir = left.tempDir("instar-promo-");
  const script = join(dir, "server.ts");
  const deploy = (source: string) => writeFileSync(script, source);
  deploy(GOOD);
  const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
  const notify = join(dir, "notify.sock");
  const fd = datagramReceiver(notify);
  left.sockets.push({ close: () => sys.close(fd) });
  const got: string[] = [];
  const args = ["--port", "0", "--control", ctl, "--pid-file", pidFile, "--drain-timeout", "5000"];
  if (windowMs !== null) args.push("--promotion-window", String(windowMs));
  const server = startServer(runtimeCmd(RUNTIME, script, [...args, ...extra]), {
    NOTIFY_SOCKET: notify,
  });
  left.servers.push(server);
  const port = portOf(await readyGeneration(ctl, 1, { pid: server.pid, log: server.lines }));
  const notified = () => (got.push(...drainDatagrams(fd)), got);
  return { server, port, ctl, pidFile, deploy, notified };
}

/** Load that never re-sends, recording when each failure happened (performance.now()). */
function load(port: number, keepAlive: boolean) {
  const ac = new AbortController();
  const failures: { kind: string; start: number; end: number; msg: string }[] = [];
  const pids = new Map<string, number>();
  const result = runLoad({
    port,
    connections: 8,
    keepAlive,
    durationMs: 90_000,
    pauseMs: TEST_PAUSE_MS,
    signal: ac.signal,
    onResponse: (body) => {
      const pid = /pid (\d+)/.exec(body)?.[1] ?? "?";
      pids.set(pid, (pids.get(pid) ?? 0) + 1);
    },
    onFailure: (kind, start, end, msg) => failures.push({ kind, start, end, msg }),
  });
  return {
    failures,
    pids,
    stop: async (): Promise<LoadResult> => {
      ac.abort();
      return await result;
    },
  };
}

/** Runs `instar upgrade` against the control socket without blocking the event loop. */
function cliUpgrade(ctl: string) {
  return runCommand(runtimeCmd(RUNTIME, CLI, ["upgrade", "--control", ctl, "--timeout", "60000"]));
}

/** The pid of the next generation, from the log line of its spawn. */
async function spawnedPid(server: ServerProcess, from: number): Promise<number> {
  const m = await server.waitFor(/upgrade-spawned: pid (\d+)/, 60_000, from);
  const pid = Number(m[1]);
  server.pids.add(pid);
  return pid;
}

function shownFailures(r: LoadResult): string {
  return `${JSON.stringify(r.failures)} ${r.samples.join("; ")}`;
}

describe(`promotion window (${RUNTIME})`, () => {
  test("a deploy that crashes 1 s after ready rolls back within a 3 s window: nothing refused, nothing fails after the crash", async () => {
    const s = await start(3000);
    const old = s.server.pid;
    const traffic = load(s.port, false);
    await sleep(300);
    s.deploy(CRASHES);
    const from = s.server.lines.length;
    const cli = cliUpgrade(s.ctl);
    const next = await spawnedPid(s.server, from);
    const m = await s.server.waitFor(
      /\] rolled-back: generation 2 \(pid (\d+)\): (.*)$/,
      60_000,
      from,
    );
    const rolledBackAt = performance.now();
    assert.equal(Number(m[1]), next);
    assert.equal(m[2], "exited with code 1");
    const r = await cli;
    assert.equal(r.code, 3, showResult(r));
    assert.match(r.stderr, /upgrade rolled back: .*exited with code 1/);
    // The old generation serves on: PID file, status, and requests after the rollback.
    assert.equal(readFileSync(s.pidFile, "utf8").trim(), String(old));
    const status = await waitForState(s.ctl, (st) => st.pid === old && st.state === "ready");
    assert.equal(status.generation, 1);
    await sleep(1000);
    const res = await traffic.stop();
    assert.equal(res.failures.refused, 0, shownFailures(res));
    // The requests lost are those the crashing process held when it died (at most one per
    // connection); none sent after the rollback failed.
    assert.ok(res.failed <= 8, shownFailures(res));
    const late = traffic.failures.filter((f) => f.start > rolledBackAt);
    assert.deepEqual(late, [], "no request sent after the rollback failed");
    assert.ok((traffic.pids.get(String(next)) ?? 0) > 0, "the new generation served in the window");
    assert.ok((traffic.pids.get(String(old)) ?? 0) > 0);
    await stopped(next, 10_000);
    assert.equal(alive(old), true);
    // systemd hears that the old generation is the main process again, and ready.
    const rollback = `MAINPID=${old}\nREADY=1\nSTATUS=upgrade rolled back: exited with code 1\n`;
    const deadlineAt = Date.now() + 5000;
    while (!s.notified().includes(rollback) && Date.now() < deadlineAt) await sleep(50);
    assert.ok(s.notified().includes(rollback), JSON.stringify(s.notified()));
    assert.ok(!s.notified().some((d) => d.includes(`MAINPID=${next}`)), "MAINPID never moved");
    process.kill(old, "SIGTERM");
    await stopped(old);
  });

  test("without a window the same crash leaves nothing serving: connections are refused", async () => {
    const s = await start(null);
    const old = s.server.pid;
    const traffic = load(s.port, false);
    await sleep(300);
    s.deploy(CRASHES);
    process.kill(old, "SIGHUP");
    const next = await nextPidInPidFile(s.pidFile, old, { timeoutMs: 60_000, log: s.server.lines });
    s.server.pids.add(next);
    await s.server.exited; // the old generation drained and exited, as after any upgrade
    await stopped(next, 30_000); // then the new one crashed
    await sleep(500);
    const res = await traffic.stop();
    assert.ok(res.failures.refused > 0, `expected refused connections: ${shownFailures(res)}`);
    const refused = await new Promise<string>((resolve) => {
      const c = net.connect({ host: "127.0.0.1", port: s.port });
      c.once("connect", () => (c.destroy(), resolve("connected")));
      c.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.equal(refused, "ECONNREFUSED");
  });

  test("up.unhealthy(reason) within the window rolls back with that reason, 0 failed", async () => {
    const s = await start(30_000);
    const old = s.server.pid;
    const traffic = load(s.port, true);
    const from = s.server.lines.length;
    process.kill(old, "SIGHUP");
    const next = await nextPidInPidFile(s.pidFile, old, { timeoutMs: 60_000, log: s.server.lines });
    s.server.pids.add(next);
    await s.server.waitFor(/promotion-window: pid \d+ is ready/, 30_000, from);
    await sleep(500);
    // The old generation does not accept in the window: the new one answers.
    const answer = await exchange(s.port, httpGet("/unhealthy?reason=config%20check%20failed"));
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, /rolled back: config check failed/);
    const m = await s.server.waitFor(
      /\] rolled-back: generation 2 \(pid (\d+)\): (.*)$/,
      30_000,
      from,
    );
    assert.equal(Number(m[1]), next);
    assert.equal(m[2], "config check failed");
    await s.server.waitFor(new RegExp(`pid=${next} gen=2\\] draining: rolled-back`), 30_000, from);
    await stopped(next, 30_000); // it drained what it had accepted and exited
    assert.equal(readFileSync(s.pidFile, "utf8").trim(), String(old));
    await waitForState(s.ctl, (st) => st.pid === old && st.state === "ready");
    await sleep(500);
    const res = await traffic.stop();
    assert.equal(res.failed, 0, shownFailures(res));
    assert.ok((traffic.pids.get(String(next)) ?? 0) > 0, "the new generation served in the window");
    assert.ok(res.ok > 100, `only ${res.ok} responses`);
    // The old generation serves on and can upgrade again; the example answers 409 there.
    const again = await exchange(s.port, httpGet("/unhealthy?reason=x"));
    assert.match(again, /^HTTP\/1\.1 409/);
    assert.match(again, /NO_PROMOTION_WINDOW|no promotion window is open/);
    process.kill(old, "SIGTERM");
    await stopped(old);
  });

  test("after the window the old generation drains and exits; an upgrade within it is refused", async () => {
    const windowMs = 8000;
    const s = await start(windowMs);
    const old = s.server.pid;
    const traffic = load(s.port, true);
    const from = s.server.lines.length;
    const t0 = performance.now();
    const cli = cliUpgrade(s.ctl);
    const next = await nextPidInPidFile(s.pidFile, old, { timeoutMs: 60_000, log: s.server.lines });
    s.server.pids.add(next);
    await s.server.waitFor(/promotion-window: pid \d+ is ready/, 30_000, from);
    // A second upgrade within the window is refused, whoever is asked.
    process.kill(next, "SIGHUP");
    await s.server.waitFor(
      new RegExp(`pid=${next} gen=2\\] upgrade-refused: promotion-window`),
      10_000,
      from,
    );
    process.kill(old, "SIGHUP");
    await s.server.waitFor(
      new RegExp(`pid=${old} gen=1\\] upgrade-refused: in-progress`),
      10_000,
      from,
    );
    const refused = await cliUpgrade(s.ctl);
    assert.equal(refused.code, 1, showResult(refused));
    assert.match(refused.stderr, /upgrade refused: promotion-window/);
    assert.equal(alive(old), true, "the old generation waits out the window");
    const r = await cli;
    assert.equal(r.code, 0, showResult(r));
    assert.equal(r.stdout.trim(), String(next));
    assert.ok(performance.now() - t0 >= windowMs, "instar upgrade answered after the window");
    await s.server.waitFor(/gen=1\] upgrade-succeeded: pid \d+/, 10_000, from);
    await s.server.exited; // drained and exited as after any upgrade
    assert.ok(!s.server.lines.slice(from).some((l) => l.includes("rolled-back")));
    await readyGeneration(s.ctl, 2, { pid: next });
    await sleep(300);
    const res = await traffic.stop();
    assert.equal(res.failed, 0, shownFailures(res));
    // Promoted, it can upgrade; and MAINPID moved to it only now.
    assert.ok(s.notified().includes(`MAINPID=${next}\nREADY=1\n`), JSON.stringify(s.notified()));
    process.kill(next, "SIGTERM");
    await stopped(next);
  });

  test("SIGTERM to the new generation within the window hands the sockets back; to the old one, stops both", async () => {
    const s = await start(30_000);
    const old = s.server.pid;
    const traffic = load(s.port, false);
    let from = s.server.lines.length;
    process.kill(old, "SIGHUP");
    const next = await nextPidInPidFile(s.pidFile, old, { timeoutMs: 60_000, log: s.server.lines });
    s.server.pids.add(next);
    await s.server.waitFor(/promotion-window: pid \d+ is ready/, 30_000, from);
    process.kill(next, "SIGTERM");
    const m = await s.server.waitFor(
      /\] rolled-back: generation 2 \(pid \d+\): (.*)$/,
      30_000,
      from,
    );
    assert.equal(m[1], "stopped within its promotion window");
    await stopped(next, 30_000);
    await waitForState(s.ctl, (st) => st.pid === old && st.state === "ready");
    // Again, then SIGTERM to the old generation: both stop.
    from = s.server.lines.length;
    process.kill(old, "SIGHUP");
    const third = await nextPidInPidFile(s.pidFile, old, {
      timeoutMs: 60_000,
      log: s.server.lines,
    });
    s.server.pids.add(third);
    await s.server.waitFor(/promotion-window: pid \d+ is ready/, 30_000, from);
    const res = await traffic.stop();
    assert.equal(res.failed, 0, shownFailures(res));
    process.kill(old, "SIGTERM");
    await s.server.waitFor(new RegExp(`pid=${third} gen=2\\] draining: rolled-back`), 30_000, from);
    await stopped(old, 30_000);
    await stopped(third, 30_000);
    // A stop leaves no PID file behind, even one the new generation had written in its window.
    if (existsSync(s.pidFile)) {
      assert.fail(`PID file left behind: ${readFileSync(s.pidFile, "utf8")}`);
    }
  });
});

describe(`promotion window: handover and the PID file (${RUNTIME})`, () => {
  test("a process that took over by handover and crashes within the window: the old one serves on", async () => {
    const s = await start(3000);
    const old = s.server.pid;
    const traffic = load(s.port, false);
    const from = s.server.lines.length;
    // Started independently with the same control socket: it asks the running one for its sockets.
    const crashes = join(s.ctl, "..", "crashes.ts");
    writeFileSync(crashes, CRASHES);
    const second = startServer(
      runtimeCmd(RUNTIME, crashes, ["--port", "0", "--control", s.ctl, "--pid-file", s.pidFile]),
    );
    left.servers.push(second);
    const m = await s.server.waitFor(
      /\] rolled-back: generation 2 \(pid (\d+)\): (.*)$/,
      60_000,
      from,
    );
    assert.equal(Number(m[1]), second.pid);
    assert.equal(m[2], "closed the control connection and exited");
    assert.notEqual(await second.exited, 0);
    await waitForState(s.ctl, (st) => st.pid === old && st.state === "ready");
    assert.equal(readFileSync(s.pidFile, "utf8").trim(), String(old));
    await sleep(500);
    const res = await traffic.stop();
    assert.equal(res.failures.refused, 0, shownFailures(res));
    assert.ok(res.failed <= 8, shownFailures(res));
    process.kill(old, "SIGTERM");
    await stopped(old);
  });

  test("instar upgrade --pid-file --promotion-window exits 3 when the new generation is rolled back", async () => {
    const s = await start(3000);
    const old = s.server.pid;
    s.deploy(CRASHES);
    const r = await runCommand(
      runtimeCmd(RUNTIME, CLI, ["upgrade", "--pid-file", s.pidFile, "--promotion-window", "3000"]),
    );
    assert.equal(r.code, 3, showResult(r));
    assert.match(r.stderr, new RegExp(`names ${old} again`));
    const usage = await runCommand(
      runtimeCmd(RUNTIME, CLI, ["upgrade", "--control", s.ctl, "--promotion-window", "3000"]),
    );
    assert.equal(usage.code, 2, showResult(usage));
    process.kill(old, "SIGTERM");
    await stopped(old);
  });
});

describe(`promotion window: API and protocol (${RUNTIME})`, () => {
  const ups: Upgrader[] = [];
  after(() => ups.forEach((u) => u.stop()));
  const quiet = { upgradeSignal: null, stopSignals: [] as string[], exitAfterDrain: false };

  test("promotionWindow must be a whole number of ms from 0 to 24 h", async () => {
    for (const bad of [-1, 1.5, Number.NaN, Infinity, 86_400_001]) {
      await assert.rejects(
        Upgrader.create({ ...quiet, promotionWindow: bad }),
        (e: InstarError) => e.code === "INVALID_ARGUMENT" && /promotionWindow/.test(e.message),
      );
    }
    const up = await Upgrader.create({ ...quiet, promotionWindow: 0 });
    ups.push(up);
  });

  test("unhealthy() outside a window rejects NO_PROMOTION_WINDOW; a bad reason INVALID_ARGUMENT", async () => {
    const up = await Upgrader.create({ ...quiet, promotionWindow: 1000 });
    ups.push(up);
    await assert.rejects(
      up.unhealthy("db down"),
      (e: InstarError) => e.code === "NO_PROMOTION_WINDOW",
    );
    for (const bad of ["", "a\nMAINPID=1", "x".repeat(1025), 42 as unknown as string]) {
      await assert.rejects(up.unhealthy(bad), (e: InstarError) => e.code === "INVALID_ARGUMENT");
    }
    assert.equal(checkReason("x".repeat(1024)).length, 1024);
  });

  test("a hello's promotionWindow is checked; none is sent without a window", () => {
    const hello = messages.hello(2, "inherit", [], null);
    assert.equal("promotionWindow" in hello, false);
    assert.equal(validateHello(messages.hello(2, "inherit", [], null, 3000)).promotionWindow, 3000);
    for (const bad of [-1, 1.5, "3000", 86_400_001]) {
      assert.throws(
        () => validateHello({ ...hello, promotionWindow: bad }),
        (e: InstarError) => e.code === "PROTOCOL_ERROR" && /promotionWindow/.test(e.message),
      );
    }
  });
});
