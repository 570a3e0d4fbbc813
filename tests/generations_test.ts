// Black-box tests of upgrades: real servers of this runtime, both spawn
// backends, real load counting every failure.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runEchoLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  cleanupAfterTests,
  echoOnce,
  fdTable,
  ROOT,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  sideBySide,
  sleep,
  startServer,
  stopped,
  zombieChildren,
} from "./support/helpers.ts";
import { nextPidInPidFile, portOf, readyGeneration, waitForState } from "./support/status.ts";

const BACKENDS = ["fork", "posix_spawn"] as const;
const { servers, tempDir } = cleanupAfterTests();

/** A deploy directory whose server.ts is the echo example, replaceable by a broken one. */
function deployDir(): { dir: string; script: string; deploy(source: string): void } {
  const dir = tempDir("instar-gen-");
  const script = join(dir, "server.ts");
  const deploy = (source: string) => writeFileSync(script, source);
  deploy(GOOD);
  return { dir, script, deploy };
}

const GOOD = `import ${JSON.stringify(join(ROOT, "examples", "echo_server.ts"))};\n`;
const THROWS = `throw new Error("broken deploy: throws at start-up");\n`;
const EXITS = `import process from "node:process";\nprocess.exit(1);\n`;
const NEVER_READY = `import { Upgrader } from ${JSON.stringify(join(ROOT, "mod.ts"))};
const up = await Upgrader.create();
await up.listen({ hostname: "127.0.0.1", port: 0 });
console.error("never-ready: listening");
setInterval(() => {}, 1000); // never calls ready()
`;

// ready() cannot write its PID file (ENOTDIR): it must fail before the socket is resumed.
const READY_FAILS = `import { Upgrader } from ${JSON.stringify(join(ROOT, "mod.ts"))};
const up = await Upgrader.create({ pidFile: "/dev/null/instar.pid" });
await up.listen({ hostname: "127.0.0.1", port: 0 });
await up.ready();
`;

/** A started server with a control socket and a PID file (read by tests/support/status.ts). */
interface Started {
  server: ServerProcess;
  port: number;
  deploy: (s: string) => void;
  dir: string;
  /** The control socket's path. */
  ctl: string;
  /** The PID file's path. */
  pidFile: string;
}

async function start(backend: string, extra: string[] = []): Promise<Started> {
  const { script, deploy, dir } = deployDir();
  const ctl = join(dir, "ctl.sock");
  const given = extra.indexOf("--pid-file");
  const pidFile = given >= 0 ? extra[given + 1] : join(dir, "app.pid");
  const server = startServer(
    runtimeCmd(RUNTIME, script, [
      "--port",
      "0",
      "--spawn-backend",
      backend,
      "--control",
      ctl,
      ...(given >= 0 ? [] : ["--pid-file", pidFile]),
      ...extra,
    ]),
  );
  servers.push(server);
  const s = await readyGeneration(ctl, 1, { pid: server.pid, log: server.lines });
  return { server, port: portOf(s), deploy, dir, ctl, pidFile };
}

/**
 * The same server without a control socket, for a test that counts the
 * sockets passed on (a control socket would be one more): it waits on log lines.
 */
async function startWithoutControl(): Promise<{ server: ServerProcess; port: number }> {
  const { script } = deployDir();
  const server = startServer(runtimeCmd(RUNTIME, script, ["--port", "0"]));
  servers.push(server);
  const m = await server.waitFor(/gen=1\] ready on 127\.0\.0\.1:(\d+)/);
  return { server, port: Number(m[1]) };
}

/**
 * Sends SIGHUP to the generation `pid` and resolves with the pid of the next
 * generation once it is ready: once it has written the PID file.
 */
async function upgradeTo({ server, pidFile }: Started, pid: number): Promise<number> {
  process.kill(pid, "SIGHUP");
  const next = await nextPidInPidFile(pidFile, pid, { timeoutMs: 60_000, log: server.lines });
  server.pids.add(next); // killed by after() even if it has not logged yet
  return next;
}

/** Sends SIGHUP to `pid` and waits for the log line of a failed upgrade: its reason is the subject. */
async function failedUpgrade(server: ServerProcess, pid: number): Promise<string> {
  const from = server.lines.length;
  process.kill(pid, "SIGHUP");
  const m = await server.waitFor(/upgrade-(succeeded|failed): (.*)/, 60_000, from);
  assert.equal(m[1], "failed", m[2]);
  return m[2];
}

for (const backend of BACKENDS) {
  describe(`upgrades (${RUNTIME}, ${backend})`, () => {
    test("20 consecutive upgrades under load lose no connection", async () => {
      const started = await start(backend);
      const { port, server } = started;
      const ac = new AbortController();
      const load = runEchoLoad({
        port,
        connections: 8,
        durationMs: 120_000,
        pauseMs: TEST_PAUSE_MS,
        signal: ac.signal,
      });
      let current = server.pid;
      try {
        for (let i = 0; i < 20; i++) current = await upgradeTo(started, current);
      } finally {
        ac.abort();
      }
      const r = await load;
      assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > 100, `only ${r.ok} exchanges`);
      assert.equal(alive(current), true);
      process.kill(current, "SIGTERM");
    });

    test("a connection opened before an upgrade keeps working until it closes, across a second upgrade", async () => {
      const started = await start(backend);
      const { server, port } = started;
      const conn = net.connect({ host: "127.0.0.1", port });
      await new Promise((r) => conn.once("connect", r));
      await echoOnce(port, conn);
      const child = await upgradeTo(started, server.pid);
      await echoOnce(port, conn); // served by the draining generation
      assert.equal(alive(server.pid), true, "old generation drains while the connection is open");
      await echoOnce(port); // new connections reach the new generation
      // The new generation upgrades again while its parent still drains.
      const grandchild = await upgradeTo(started, child);
      assert.equal(alive(server.pid), true, "generation 1 still drains");
      await echoOnce(port, conn);
      await echoOnce(port);
      conn.end();
      assert.equal(await server.exited, 0, "old generation exits once drained");
      await stopped(child, 10_000); // generation 2 drained (it had no connection) and exited
      assert.equal(alive(grandchild), true);
      process.kill(grandchild, "SIGTERM");
    });

    for (
      const [name, source, reason] of [
        ["throws at start-up", THROWS, "exited"],
        ["exits 1", EXITS, "exited"],
        ["never becomes ready", NEVER_READY, "ready-timeout"],
        ["fails in ready() before it accepts anything", READY_FAILS, "exited"],
      ] as const
    ) {
      test(`a broken deploy that ${name} leaves the old generation serving`, async () => {
        // 3 s where the timeout is the subject; elsewhere the broken deploy fails by exiting, and
        // the good deploy after it gets a loaded machine's margin (3 s timed out, once).
        const readyTimeout = reason === "ready-timeout" ? "3000" : "20000";
        const started = await start(backend, ["--ready-timeout", readyTimeout]);
        const { server, port, deploy } = started;
        const ac = new AbortController();
        const load = runEchoLoad({
          port,
          connections: 4,
          durationMs: 60_000,
          pauseMs: TEST_PAUSE_MS,
          signal: ac.signal,
        });
        deploy(source);
        const failure = await failedUpgrade(server, server.pid);
        ac.abort();
        assert.match(failure, new RegExp(`^${reason}: `));
        const r = await load;
        assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
        await echoOnce(port);
        assert.deepEqual(zombieChildren(server.pid), []);
        deploy(GOOD);
        const child = await upgradeTo(started, server.pid); // a later upgrade can be tried again
        await server.exited;
        process.kill(child, "SIGTERM");
      });
    }
  });
}

describe(`generations (${RUNTIME})`, () => {
  // These put no load on their servers and bound no time tightly: their bodies run side by side
  // (sideBySide()), each on a server of its own; the load test after them runs alone.
  const testSideBySide = sideBySide();
  testSideBySide("50 upgrades keep the fd count and zombies flat", async () => {
    const started = await start("auto");
    let current = started.server.pid;
    const first: number[] = [], last: number[] = [];
    for (let i = 0; i < 50; i++) {
      const next = await upgradeTo(started, current);
      // The first and last five: wait until the previous generation has exited (so that its
      // end is counted too), then measure the new one. Between them, upgrades follow each
      // other while the previous generations still drain.
      const counted = i < 5 ? first : i >= 45 ? last : undefined;
      if (counted) {
        for (let t = 0; t < 200 && alive(current); t++) await sleep(25);
        assert.equal(alive(current), false, `generation ${i + 1} exited`);
        counted.push(fdTable(next).size);
      }
      current = next;
      assert.deepEqual(zombieChildren(current), []);
    }
    assert.ok(
      Math.max(...last) <= Math.max(...first) + 2,
      `fd count grew: first ${first} last ${last}`,
    );
    // Every earlier generation finished its drain and exited, the unwaited ones too.
    for (const pid of started.server.pids) if (pid !== current) await stopped(pid, 10_000);
    process.kill(current, "SIGTERM");
  });

  testSideBySide(
    "only the listener, the control channel and the counter region are passed to the new generation",
    async () => {
      const { server, port } = await startWithoutControl();
      const idle = net.connect({ host: "127.0.0.1", port }); // an accepted connection in the parent
      await new Promise((r) => idle.once("connect", r));
      await echoOnce(port, idle);
      // fds 0-2 are the test's pipes (socketpairs under Bun), inherited on purpose, and
      // the runtime may hold duplicates of them.
      const table = fdTable(server.pid);
      const stdio = new Set([0, 1, 2].map((fd) => table.get(fd)));
      const sockets = (pid: number) =>
        [...fdTable(pid).values()].filter((l) => l.startsWith("socket:") && !stdio.has(l));
      const parentSockets = new Set(sockets(server.pid));
      const from = server.lines.length;
      process.kill(server.pid, "SIGHUP");
      const m = await server.waitFor(/upgrade-(succeeded|failed): (.*)/, 60_000, from);
      const child = Number(/pid (\d+)/.exec(m[2])![1]);
      // The child may hold the listening socket twice (instar's fd and the runtime's duplicate).
      const shared = new Set(sockets(child).filter((l) => parentSockets.has(l)));
      assert.equal(shared.size, 1, `child shares ${[...shared]} with its parent`);
      // The counter region (observe/counter_region.ts): one memfd in each, never a second one.
      const regions = (pid: number) =>
        [...fdTable(pid).values()].filter((l) => l.startsWith("/memfd:instar-counters"));
      assert.equal(regions(server.pid).length, 1, `parent: ${[...fdTable(server.pid).values()]}`);
      assert.equal(regions(child).length, 1, `child: ${[...fdTable(child).values()]}`);
      idle.end();
      await server.exited;
      process.kill(child, "SIGTERM");
    },
  );

  testSideBySide(
    "the PID file names the ready generation, also after a failed upgrade",
    async () => {
      const { dir } = deployDir();
      const pidFile = join(dir, "app.pid");
      const started = await start("auto", [
        "--pid-file",
        pidFile,
        // The failed deploy exits at once; the margin is for the good one, started while the
        // tests beside this one upgrade too.
        "--ready-timeout",
        "20000",
      ]);
      const { server, deploy } = started;
      assert.equal(readFileSync(pidFile, "utf8").trim(), String(server.pid));
      deploy(EXITS);
      await failedUpgrade(server, server.pid);
      assert.equal(readFileSync(pidFile, "utf8").trim(), String(server.pid));
      deploy(GOOD);
      // The PID file is the subject here: the new generation is found through the control socket.
      process.kill(server.pid, "SIGHUP");
      const child =
        (await readyGeneration(started.ctl, 2, { timeoutMs: 60_000, log: server.lines }))
          .pid;
      assert.equal(readFileSync(pidFile, "utf8").trim(), String(child));
      await server.exited;
      process.kill(child, "SIGTERM");
      for (let t = 0; t < 200 && alive(child); t++) await sleep(25);
      assert.throws(
        () => readFileSync(pidFile),
        { code: "ENOENT" },
        "a stopped server removes its PID file",
      );
    },
  );

  testSideBySide(
    "an upgrade triggered while one is in flight is rejected with a clear reason",
    async () => {
      const { server, port, deploy, ctl } = await start("auto", ["--ready-timeout", "2000"]);
      deploy(NEVER_READY);
      const from = server.lines.length;
      process.kill(server.pid, "SIGHUP");
      await waitForState(ctl, (s) => s.state === "upgrading", {
        timeoutMs: 10_000,
        log: server.lines,
      });
      process.kill(server.pid, "SIGHUP");
      // The reasons the lifecycle reports are the subject here: read from its log.
      const m = await server.waitFor(/upgrade-refused: in-progress: (.*)/, 10_000, from);
      assert.match(m[1], /already in flight/);
      await server.waitFor(/upgrade-failed: ready-timeout/, 10_000, from);
      await echoOnce(port); // both failures left the running generation serving
      process.kill(server.pid, "SIGTERM");
      assert.equal(await server.exited, 0);
    },
  );

  testSideBySide("SIGTERM drains and exits with code 0", async () => {
    const { server, port } = await start("auto");
    await echoOnce(port);
    process.kill(server.pid, "SIGTERM");
    assert.equal(await server.exited, 0);
    await assert.rejects(echoOnce(port), { code: "ECONNREFUSED" });
  });

  test("a new generation stopped before it is ready leaves the old one serving its shared socket", async () => {
    const started = await start("auto", ["--ready-timeout", "20000"]);
    const { server, port, deploy } = started;
    // Claims the same socket (key tcp:127.0.0.1:0) and never calls ready().
    deploy(NEVER_READY);
    const from = server.lines.length;
    process.kill(server.pid, "SIGHUP");
    const spawned = await server.waitFor(/upgrade-spawned: pid (\d+)/, 30_000, from);
    const child = Number(spawned[1]);
    server.pids.add(child);
    // It has adopted the inherited socket and waits (a stop before its runtime handles
    // SIGTERM would kill it: a different reason).
    await server.waitFor(/never-ready: listening/, 30_000, from);
    const ac = new AbortController();
    const load = runEchoLoad({
      port,
      connections: 4,
      durationMs: 30_000,
      pauseMs: TEST_PAUSE_MS,
      signal: ac.signal,
    });
    process.kill(child, "SIGTERM"); // a stop of a starting generation: it closes only its own fds
    const failed = await server.waitFor(/upgrade-failed: (.*)/, 30_000, from);
    assert.match(failed[1], /^exited: /);
    await sleep(300);
    ac.abort();
    const r = await load;
    assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    await echoOnce(port); // the old generation still accepts on the socket
    assert.equal(alive(server.pid), true);
    process.kill(server.pid, "SIGTERM");
    assert.equal(await server.exited, 0);
  });
});
