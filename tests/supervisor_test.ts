/**
 * `instar run` (src/supervisor/): the supervisor as PID 1 of a new pid
 * namespace and under tini, upgrades under load, graceful stop, crash exit
 * status, crash restarts with held sockets, hostile NOTIFY_SOCKET datagrams,
 * and its parsers. Runs under `deno test -A` and `bun test`; the supervisor
 * and the app run under the same runtime as the test.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { encodeUnix } from "../src/ffi/sockaddr.ts";
import { parseListenSpec } from "../src/supervisor/listen_spec.ts";
import { parseNotify } from "../src/supervisor/notify_socket.ts";
import { parseRunArgs } from "../src/supervisor/options.ts";
import { Backoff } from "../src/supervisor/backoff.ts";
import { childrenOf, descendsFrom } from "../src/supervisor/ancestry.ts";
import { exitStatus } from "../src/supervisor/reaper.ts";
import { activatedSockets, SUPERVISOR_PID_ENV } from "../src/systemd/activation.ts";
import { spawn } from "../src/process/spawn.ts";
import {
  alive,
  cleanupAfterTests,
  datagramReceiver,
  drainDatagrams,
  onPath,
  rawListen,
  ROOT,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  skipIf,
  sleep,
  startedTogether,
  startServer,
  stopped,
  within,
} from "./support/helpers.ts";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import { serverStatus, type StatusReport } from "./support/status.ts";

const left = cleanupAfterTests();
const isRoot = process.getuid?.() === 0;
const noUnshare = !isRoot
  ? "unshare --pid needs root"
  : !onPath("unshare")
  ? "unshare (util-linux) is not installed"
  : false;
const noTini = !onPath("tini") ? "tini is not installed (Debian package tini)" : false;
const UPGRADES = 20;

async function freePort(): Promise<number> {
  const { fd, port } = await rawListen();
  sys.close(fd);
  return port;
}

/** `instar run <options> -- <runtime> examples/http_server.ts --port <port>`. */
function runCmd(options: string[], port: number, appArgs: string[] = []): string[] {
  const app = runtimeCmd(RUNTIME, join(ROOT, "examples/http_server.ts"), [
    "--hostname",
    "127.0.0.1",
    "--port",
    String(port),
    ...appArgs,
  ]);
  return runtimeCmd(RUNTIME, join(ROOT, "src/cli/main.ts"), ["run", ...options, "--", ...app]);
}

/** Starts `cmd` (killed after the tests) and returns it. */
function start(cmd: string[]): ServerProcess {
  const s = startServer(cmd);
  left.servers.push(s);
  return s;
}

/** The first child of `pid` (the supervisor under unshare or tini). */
async function childOf(pid: number, timeoutMs = 15_000): Promise<number> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const [c] = childrenOf(pid);
    if (c !== undefined) return c;
    if (Date.now() > until) throw new Error(`pid ${pid} started no child in ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Polls the supervisor's control socket until `ok(status)`. */
async function statusWhere(
  ctl: string,
  ok: (s: StatusReport) => boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<StatusReport> {
  const until = Date.now() + timeoutMs;
  let last: StatusReport | null = null;
  for (;;) {
    last = await serverStatus(ctl).catch(() => null);
    if (last && ok(last)) return last;
    if (Date.now() > until) {
      throw new Error(`${what}: not within ${timeoutMs} ms (last ${JSON.stringify(last)})`);
    }
    await sleep(50);
  }
}

/** Every process of the tree under `root` (root included), with its state. */
function tree(root: number): Map<number, string> {
  const procs = new Map<number, { ppid: number; state: string }>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      procs.set(Number(e), { ppid: Number(f[1]), state: f[0] });
    } catch { /* raced with its exit */ }
  }
  const out = new Map<number, string>();
  const queue = [root];
  while (queue.length) {
    const p = queue.shift()!;
    const info = procs.get(p);
    if (!info || out.has(p)) continue;
    out.set(p, info.state);
    for (const [pid, i] of procs) if (i.ppid === p) queue.push(pid);
  }
  return out;
}

/**
 * Zombies under `root` that are still zombies 500 ms later (a process is a
 * zombie for the moment between its exit and its reaping; one that stays is
 * one nobody reaps). Returns as soon as every one of them was reaped.
 */
async function lastingZombies(root: number): Promise<number[]> {
  let z = [...tree(root)].filter(([, s]) => s === "Z").map(([p]) => p);
  const end = performance.now() + 500;
  while (z.length > 0 && performance.now() < end) {
    await sleep(25);
    const now = tree(root);
    z = z.filter((p) => now.get(p) === "Z");
  }
  return z;
}

/**
 * The supervised server under `wrapper` (unshare or tini): 20 upgrades by
 * SIGHUP to the supervisor under a load that never re-sends, then SIGTERM.
 */
async function upgradesUnder(wrapper: string[], name: string): Promise<void> {
  const port = await freePort();
  const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
  const s = start([...wrapper, ...runCmd(["--control", ctl], port)]);
  const sup = await childOf(s.pid);
  let status = await statusWhere(ctl, (r) => r.state === "ready", "generation 1 ready");
  const ac = new AbortController();
  const servedBy = new Set<string>();
  const load = runLoad({
    port,
    connections: 8,
    durationMs: 300_000,
    pauseMs: TEST_PAUSE_MS,
    signal: ac.signal,
    onResponse: (body) => servedBy.add(body.split(" ")[3]),
  });
  const pids = new Set([status.pid]);
  try {
    for (let i = 0; i < UPGRADES; i++) {
      process.kill(sup, "SIGHUP");
      const before = status.pid;
      status = await statusWhere(
        ctl,
        (r) => r.pid !== before && r.state === "ready",
        `${name}: upgrade ${i + 1}`,
      );
      assert.equal(status.generation, i + 2, "the supervisor counts generations");
      assert.ok(!pids.has(status.pid), "each upgrade has a new pid");
      pids.add(status.pid);
      assert.ok(alive(sup), `the supervisor is alive after upgrade ${i + 1}`);
      assert.deepEqual(await lastingZombies(s.pid), [], `no zombie after upgrade ${i + 1}`);
    }
    await sleep(500);
  } finally {
    ac.abort();
  }
  const r = await load;
  assert.equal(r.failed, 0, `0 failed requests: ${JSON.stringify(r.failures)} ${r.samples}`);
  assert.ok(r.ok > UPGRADES, `the load was answered (${r.ok})`);
  assert.ok(servedBy.size >= 3, `several generations answered the load: ${[...servedBy]}`);
  process.kill(sup, "SIGTERM");
  assert.equal(await within(s.exited, 60_000, `${name}: exit`), 0);
  assert.ok(s.lines.some((l) => /exiting with status 0/.test(l)), s.lines.join("\n"));
}

/** The generation the supervisor follows, killed with SIGKILL: the supervisor exits with 137. */
async function killedWithSigkill(wrapper: readonly string[]): Promise<void> {
  const port = await freePort();
  const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
  const s = start([...wrapper, ...runCmd(["--control", ctl], port)]);
  const sup = wrapper.length ? await childOf(s.pid) : s.pid;
  const first = await statusWhere(ctl, (r) => r.state === "ready", "ready");
  assert.equal(first.parentPid, sup, "the supervisor reports itself as the parent");
  // An upgrade the supervisor did not trigger (SIGHUP to the generation itself) is followed too,
  // and the new generation, started by the old one, becomes the supervisor's child.
  process.kill(first.pid, "SIGHUP");
  const st = await statusWhere(
    ctl,
    (r) => r.generation === 2 && r.state === "ready",
    "upgrade",
  );
  assert.notEqual(st.pid, first.pid);
  await within(
    (async () => {
      while (childrenOf(sup).join() !== String(st.pid)) await sleep(50);
    })(),
    30_000,
    "generation 2 reparented to the supervisor",
  );
  process.kill(st.pid, "SIGKILL");
  assert.equal(await within(s.exited, 30_000, "exit"), 137);
  assert.ok(
    s.lines.some((l) => /killed by SIGKILL \(status 137\)/.test(l)),
    s.lines.join("\n"),
  );
}

/** Hostile datagrams on the generation's NOTIFY_SOCKET: ignored, the generation stays. */
async function hostileDatagrams(): Promise<void> {
  const port = await freePort();
  const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
  const s = start(runCmd(["--control", ctl], port));
  const st = await statusWhere(ctl, (r) => r.state === "ready", "ready");
  const env = readFileSync(`/proc/${st.pid}/environ`, "utf8").split("\0");
  const path = env.find((e) => e.startsWith("NOTIFY_SOCKET="))!.slice("NOTIFY_SOCKET=".length);
  assert.ok(path.length > 0, "the generation got the supervisor's NOTIFY_SOCKET");
  const fd = sys.socket(sys.C.AF_UNIX, sys.C.SOCK_DGRAM | sys.C.SOCK_CLOEXEC);
  const [r0, w0] = sys.pipe2(sys.C.O_CLOEXEC);
  const pipe = readlinkSync(`/proc/self/fd/${r0}`);
  try {
    sys.connect(fd, encodeUnix(path));
    const send = (text: string | Uint8Array, fds: number[] = []) =>
      sys.sendFds(fd, typeof text === "string" ? new TextEncoder().encode(text) : text, fds);
    send(`MAINPID=${process.pid}\nREADY=1\n`, [r0, w0]); // a stranger, with fds attached
    send(`STATUS=${"x".repeat(5000)}\n`); // oversized
    send("READY=1\nthis is no field\n"); // malformed
    send(new Uint8Array([0xff, 0xfe, 0x3d, 0x0a])); // not UTF-8: malformed too, counted quietly
  } finally {
    sys.close(fd);
    sys.close(r0);
    sys.close(w0);
  }
  await s.waitFor(/not a descendant of the supervisor/, 10_000);
  await s.waitFor(/ignored a 50\d\d-byte datagram/, 10_000);
  await s.waitFor(/is not KEY=VALUE/, 10_000);
  const after = await statusWhere(ctl, () => true, "status");
  assert.equal(after.pid, st.pid, "the current generation did not change");
  assert.equal(after.generation, 1);
  const links = readdirSync(`/proc/${s.pid}/fd`).map((f) => {
    try {
      return readlinkSync(`/proc/${s.pid}/fd/${f}`);
    } catch {
      return "";
    }
  });
  assert.ok(!links.includes(pipe), `the attached fds (${pipe}) were closed: ${links}`);
  // It still follows the real generations: `instar upgrade --control` against the supervisor.
  const cli = startServer(
    runtimeCmd(RUNTIME, join(ROOT, "src/cli/main.ts"), ["upgrade", "--control", ctl]),
  );
  assert.equal(await within(cli.exited, 60_000, "instar upgrade"), 0, cli.lines.join("\n"));
  const up = await statusWhere(ctl, (r) => r.pid !== st.pid && r.state === "ready", "upgrade");
  assert.equal(up.generation, 2);
  assert.ok(
    cli.lines.includes(String(up.pid)),
    `instar upgrade printed the new pid: ${cli.lines}`,
  );
  process.kill(s.pid, "SIGTERM");
  assert.equal(await within(s.exited, 30_000, "exit"), 0);
}

/** A successor announced after the stop is stopped too. */
async function successorAfterStop(): Promise<void> {
  const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
  const child = runtimeCmd(RUNTIME, join(ROOT, "tests/supervisor_handoff_child.ts"), []);
  const s = start(
    runtimeCmd(RUNTIME, join(ROOT, "src/cli/main.ts"), ["run", "--control", ctl, "--", ...child]),
  );
  await statusWhere(ctl, (r) => r.state === "ready", "ready");
  process.kill(s.pid, "SIGTERM");
  const m = await s.waitFor(/generation 2 \(pid (\d+)\) took over/, 30_000);
  // `sleep 60` would keep the supervisor a minute: it must get the stop too.
  assert.equal(await within(s.exited, 20_000, "exit"), 128 + 15, s.lines.join("\n"));
  assert.ok(!alive(Number(m[1])), "the successor is gone");
}

/** A program that is no instar app: upgrades refused, crashes restarted. */
async function plainProgram(): Promise<void> {
  const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
  const cli = (args: string[]) => runtimeCmd(RUNTIME, join(ROOT, "src/cli/main.ts"), args);
  const s = start(
    cli(["run", "--control", ctl, "--restart", "on-failure", "--", "sleep", "300"]),
  );
  const st = await statusWhere(ctl, (r) => r.state === "starting" && r.pid !== s.pid, "started");
  process.kill(s.pid, "SIGHUP");
  await s.waitFor(/upgrade \(SIGHUP\) refused: .*not an instar app/, 10_000);
  const up = startServer(cli(["upgrade", "--control", ctl]));
  assert.equal(await within(up.exited, 30_000, "instar upgrade"), 1);
  assert.ok(up.lines.some((l) => /refused: not-ready/.test(l)), up.lines.join("\n"));
  assert.ok(alive(st.pid), "the program was not signalled");
  process.kill(st.pid, "SIGKILL");
  const again = await statusWhere(ctl, (r) => r.pid !== st.pid && r.pid !== s.pid, "restart");
  assert.equal(again.generation, 2);
  process.kill(s.pid, "SIGTERM");
  assert.equal(await within(s.exited, 30_000, "exit"), 128 + 15, "sleep's own status: SIGTERM");
}

/** A leftover that ignores SIGTERM, killed once the grace ends. */
async function leftoverIgnoringTerm(): Promise<void> {
  const dir = left.tempDir("instar-sup-");
  const pidFile = join(dir, "leftover.pid");
  // The program leaves a process behind that ignores SIGTERM, then ends on SIGTERM itself.
  const script = `(trap '' TERM; exec sleep 300) & echo $! > ${pidFile}; ` +
    `trap 'exit 0' TERM; while :; do sleep 0.1; done`;
  const cli = runtimeCmd(RUNTIME, join(ROOT, "src/cli/main.ts"), [
    "run",
    "--",
    "sh",
    "-c",
    script,
  ]);
  const s = start(cli);
  const until = Date.now() + 15_000;
  while (!existsSync(pidFile) || !readFileSync(pidFile, "utf8").trim()) {
    assert.ok(Date.now() < until, "the program never started its leftover");
    await sleep(50);
  }
  const leftover = Number(readFileSync(pidFile, "utf8").trim());
  try {
    await sleep(300);
    process.kill(s.pid, "SIGTERM");
    assert.equal(await within(s.exited, 15_000, "supervisor exit"), 0);
    assert.ok(s.lines.some((l) => /SIGTERM to 1 leftover/.test(l)), s.lines.join("\n"));
    await stopped(leftover, 5_000);
  } finally {
    if (alive(leftover)) process.kill(leftover, "SIGKILL");
  }
}

/** What the supervisor relays to a NOTIFY_SOCKET of the test's. */
async function relaysNotify(): Promise<void> {
  const port = await freePort();
  const dir = left.tempDir("instar-sup-");
  const ctl = join(dir, "ctl.sock");
  const rx = datagramReceiver(join(dir, "systemd.sock"));
  left.sockets.push({ close: () => sys.close(rx) });
  const s = startServer(runCmd(["--control", ctl], port), {
    NOTIFY_SOCKET: join(dir, "systemd.sock"),
  });
  left.servers.push(s);
  const got: string[] = [];
  const until = async (re: RegExp, what: string) => {
    const end = Date.now() + 30_000;
    while (!got.some((d) => re.test(d))) {
      if (Date.now() > end) throw new Error(`${what}: got ${JSON.stringify(got)}`);
      await sleep(50);
      got.push(...drainDatagrams(rx));
    }
  };
  await until(/^READY=1\n/m, "ready");
  const st = await statusWhere(ctl, (r) => r.state === "ready", "ready");
  got.length = 0;
  process.kill(s.pid, "SIGHUP");
  await until(/READY=1/, "reload done");
  assert.ok(got.some((d) => /RELOADING=1\nMONOTONIC_USEC=\d+/.test(d)), got.join("|"));
  await statusWhere(ctl, (r) => r.pid !== st.pid, "upgraded");
  process.kill(s.pid, "SIGTERM");
  await until(/STOPPING=1/, "stopping");
  assert.equal(await within(s.exited, 30_000, "exit"), 0);
  got.push(...drainDatagrams(rx));
  assert.ok(!got.some((d) => d.includes("MAINPID")), `systemd never hears MAINPID: ${got}`);
}

const KILLED = (where: string) =>
  `the current generation (reparented) killed with SIGKILL${where}: the supervisor exits with 137`;
const HOSTILE = "hostile NOTIFY_SOCKET datagrams are ignored with a warning; the generation stays";
const SUCCESSOR =
  "a successor announced after the stop is stopped too (the supervisor does not wait for it)";
const PLAIN = "a plain program: upgrades refused with the reason, crashes restarted";
const LEFTOVER =
  "a leftover that ignores SIGTERM is killed once the grace ends, then the supervisor exits";
const RELAYS = "relays READY, RELOADING, READY and STOPPING, never MAINPID";

// Each of these starts a supervisor of its own, puts no load on it and bounds no time tightly:
// they mostly wait for runtimes to start and stop, so they are started all at once when the
// first of them runs, before every test with load or a time bound (the first tests below), and
// each test asserts on its own (its assertions run inside it; a failure rejects it).
const scenario = startedTogether<void>({
  [KILLED("")]: () => killedWithSigkill([]),
  ...(noTini ? {} : { [KILLED(" under tini")]: () => killedWithSigkill(["tini", "--"]) }),
  [HOSTILE]: hostileDatagrams,
  [SUCCESSOR]: successorAfterStop,
  [PLAIN]: plainProgram,
  [LEFTOVER]: leftoverIgnoringTerm,
  [RELAYS]: relaysNotify,
});

describe(`instar run leftovers (${RUNTIME})`, () => {
  test(LEFTOVER, () => scenario(LEFTOVER));
});

describe(`instar run under systemd (${RUNTIME}, a NOTIFY_SOCKET of the test's)`, () => {
  test(RELAYS, () => scenario(RELAYS));
});

describe(`instar run (${RUNTIME})`, () => {
  test(KILLED(""), () => scenario(KILLED("")));
  test(
    KILLED(" under tini"),
    skipIf(noTini, KILLED(" under tini")),
    () => scenario(KILLED(" under tini")),
  );
  test(HOSTILE, () => scenario(HOSTILE));
  test(SUCCESSOR, () => scenario(SUCCESSOR));
  test(PLAIN, () => scenario(PLAIN));

  test(
    `as PID 1 of a new pid namespace: ${UPGRADES} upgrades under load, 0 failed, no zombie`,
    skipIf(noUnshare, "supervisor in a pid namespace"),
    async () => {
      await upgradesUnder(["unshare", "--pid", "--fork", "--mount-proc"], "unshare");
    },
  );

  test(
    `under tini: ${UPGRADES} upgrades under load, 0 failed, no zombie`,
    skipIf(noTini, "supervisor under tini"),
    async () => {
      await upgradesUnder(["tini", "--"], "tini");
    },
  );

  test(
    "SIGTERM in a pid namespace: in-flight requests finish, exit status 0",
    skipIf(noUnshare, "SIGTERM in a pid namespace"),
    async () => {
      const port = await freePort();
      const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
      const s = start([
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        ...runCmd(["--control", ctl], port),
      ]);
      const sup = await childOf(s.pid);
      await statusWhere(ctl, (r) => r.state === "ready", "ready");
      const slow = runLoad({
        port,
        path: "/slow?ms=2000",
        connections: 5,
        maxRequests: 5,
        durationMs: 30_000,
        timeoutMs: 20_000,
      });
      await sleep(700); // the five requests are in flight
      process.kill(sup, "SIGTERM");
      const r = await slow;
      assert.equal(r.ok, 5, `every in-flight request answered: ${JSON.stringify(r.failures)}`);
      assert.equal(r.failed, 0);
      assert.equal(await within(s.exited, 30_000, "exit"), 0);
      assert.ok(r.latencies.every((ms) => ms >= 1900), "they were answered after their 2 s");
    },
  );

  // Outside any namespace and under tini (the pids the status reports are the host's there).
  for (
    const [where, wrapper, skip] of [
      ["", [], false],
      [" under tini", ["tini", "--"], noTini],
    ] as const
  ) {
    const crashes =
      `--restart on-failure --listen${where}: a load across two crashes sees 0 refused connections, no zombie`;
    test(crashes, skipIf(skip, crashes), async () => {
      const port = await freePort();
      const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
      const listen = `web=tcp://127.0.0.1:${port}`;
      const s = start([
        ...wrapper,
        ...runCmd(["--control", ctl, "--restart", "on-failure", "--listen", listen], port),
      ]);
      let st = await statusWhere(ctl, (r) => r.state === "ready", "ready");
      const served = new Set<string>();
      const ac = new AbortController();
      const load = runLoad({
        port,
        connections: 8,
        keepAlive: false,
        durationMs: 120_000,
        timeoutMs: 20_000,
        pauseMs: TEST_PAUSE_MS,
        signal: ac.signal,
        onResponse: (body) => served.add(body.split(" ")[3]),
      });
      try {
        for (let i = 0; i < 2; i++) {
          await sleep(500);
          const before = st.pid;
          process.kill(before, "SIGKILL");
          st = await statusWhere(ctl, (r) => r.pid !== before && r.state === "ready", "restart");
          assert.ok(alive(s.pid), "the supervisor stays");
          assert.deepEqual(await lastingZombies(s.pid), [], `no zombie after crash ${i + 1}`);
        }
        await sleep(500);
      } finally {
        ac.abort();
      }
      const r = await load;
      assert.equal(r.failures.refused, 0, `0 refused: ${JSON.stringify(r.failures)} ${r.samples}`);
      assert.ok(served.size >= 3, `three generations answered: ${[...served]}`);
      assert.ok(s.lines.filter((l) => /restarting in \d+ ms/.test(l)).length === 2);
      process.kill(s.pid, "SIGTERM");
      assert.equal(await within(s.exited, 30_000, "exit"), 0);
    });
  }

  test("SIGINT twice: the second is forwarded as SIGINT, and the generation stops without its drain", async () => {
    const port = await freePort();
    const ctl = join(left.tempDir("instar-sup-"), "ctl.sock");
    const s = start(runCmd(["--control", ctl], port, ["--drain-timeout", "60000"]));
    await statusWhere(ctl, (r) => r.state === "ready", "ready");
    const slow = runLoad({
      port,
      path: "/slow?ms=9500", // under Bun.serve's 10 s idle timeout
      connections: 1,
      maxRequests: 1,
      durationMs: 60_000,
      timeoutMs: 50_000,
    });
    await sleep(700); // in flight: a graceful stop would wait for its 9.5 s
    process.kill(s.pid, "SIGINT");
    await s.waitFor(/SIGINT: stopping every generation/, 10_000);
    await sleep(500);
    const t0 = performance.now();
    process.kill(s.pid, "SIGINT");
    await within(s.exited, 20_000, "exit after the second SIGINT");
    const ms = performance.now() - t0;
    assert.ok(
      ms < 4_000,
      `exited ${Math.round(ms)} ms after the second SIGINT: ${s.lines.join("\n")}`,
    );
    await slow;
  });
});

describe("instar run: its parts", () => {
  test("LISTEN_PID naming the parent is believed only with the supervisor's marker", () => {
    const ppid = sys.getppid();
    const marked = {
      LISTEN_PID: String(ppid),
      LISTEN_FDS: "0",
      [SUPERVISOR_PID_ENV]: String(ppid),
    };
    const a = activatedSockets({ env: marked });
    assert.deepEqual(a, { sockets: [] }, "ours: nothing ignored");
    const unmarked = activatedSockets({ env: { LISTEN_PID: String(ppid), LISTEN_FDS: "0" } });
    assert.match(unmarked.ignored ?? "", /names another process/);
    const wrong = { LISTEN_PID: String(ppid), LISTEN_FDS: "0", [SUPERVISOR_PID_ENV]: "1" };
    assert.match(activatedSockets({ env: wrong }).ignored ?? "", /names another process/);
  });

  test("spawn moves an fd to another number in the child, and nothing else leaks", () => {
    const [r, w] = sys.pipe2(sys.C.O_CLOEXEC);
    try {
      const high = sys.dupCloexec(w, 200);
      const pid = spawn({
        path: "/bin/sh",
        argv: [
          "sh",
          "-c",
          "echo moved >&3; ls /proc/self/fd > /dev/null; test ! -e /proc/self/fd/200",
        ],
        env: [],
        fds: [],
        moves: [{ from: high, to: 3 }],
      });
      sys.close(high);
      sys.close(w);
      const end = sys.waitpidBlocking(pid);
      assert.deepEqual(end, { pid, exited: true, code: 0 }, "fd 200 was not passed");
      const buf = new Uint8Array(64);
      const n = sys.read(r, buf)!;
      assert.equal(new TextDecoder().decode(buf.subarray(0, n)), "moved\n");
      assert.throws(
        () =>
          spawn({
            path: "/bin/true",
            argv: ["true"],
            env: [],
            fds: [],
            moves: [{ from: 3, to: 3 }],
          }),
        /not also a target/,
      );
    } finally {
      sys.close(r);
    }
  });

  test("--listen specs", () => {
    assert.deepEqual(parseListenSpec("tcp://0.0.0.0:8080").options, {
      hostname: "0.0.0.0",
      port: 8080,
    });
    assert.deepEqual(parseListenSpec("tcp://[::1]:0").options, { hostname: "::1", port: 0 });
    const web = parseListenSpec("web=tcp://127.0.0.1:80");
    assert.equal(web.name, "web");
    assert.deepEqual(parseListenSpec("unix:///run/app.sock"), {
      text: "unix:///run/app.sock",
      name: "unknown",
      options: { path: "/run/app.sock" },
    });
    for (
      const bad of [
        "",
        "8080",
        "tcp://:80",
        "tcp://1.2.3.4:70000",
        "udp://1.2.3.4:5",
        "unix://rel",
        "a:b=tcp://x:1",
      ]
    ) {
      assert.throws(() => parseListenSpec(bad), /INVALID_ARGUMENT|--listen/, bad);
    }
  });

  test("run options", () => {
    const o = parseRunArgs([
      "--restart",
      "on-failure",
      "--watch",
      "src",
      "--",
      "sh",
      "-c",
      "true",
    ])!;
    assert.equal(o.restart, "on-failure");
    assert.ok(o.command.endsWith("/sh"));
    assert.deepEqual(o.argv, ["sh", "-c", "true"]);
    assert.equal(o.watchDebounceMs, 300);
    assert.equal(parseRunArgs(["--help"]), null);
    assert.throws(() => parseRunArgs(["--restart", "always", "--", "sh"]), /--restart/);
    assert.throws(() => parseRunArgs(["--listen", "tcp://x:1"]), /command/);
    assert.throws(() => parseRunArgs(["--", "no-such-command-instar"]), /not found on PATH/);
    assert.throws(() => parseRunArgs(["--watch-debounce", "0", "--", "sh"]), /--watch-debounce/);
  });

  test("notification parsing", () => {
    const ok = parseNotify(new TextEncoder().encode("READY=1\nSTATUS=a=b\n"));
    assert.ok(ok instanceof Map);
    assert.equal(ok.get("STATUS"), "a=b");
    assert.equal(typeof parseNotify(new TextEncoder().encode("ready=1")), "string");
    assert.equal(typeof parseNotify(new Uint8Array([0xc3])), "string");
    assert.equal(typeof parseNotify(new TextEncoder().encode("A=1\n".repeat(40))), "string");
  });

  test("back-off, ancestry and exit status", () => {
    const b = new Backoff();
    assert.deepEqual([b.next(0), b.next(0), b.next(0), b.next(60_000)], [0, 100, 200, 0]);
    for (let i = 0; i < 20; i++) b.next(0);
    assert.equal(b.next(0), 10_000, "bounded");
    assert.ok(descendsFrom(process.pid, 1) || process.pid === 1);
    assert.equal(descendsFrom(1, process.pid), false);
    assert.equal(exitStatus({ pid: 1, exited: false, signal: 9 }), 137);
    assert.equal(exitStatus({ pid: 1, exited: true, code: 3 }), 3);
  });
});
