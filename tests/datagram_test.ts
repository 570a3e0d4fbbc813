// Datagram sockets (UDP and Unix datagram) in this runtime: the API on its
// own (echo, sender addresses, close, bad options, the portable reader), and
// the udp_echo example upgraded 20 times while a client sends a datagram
// every millisecond and waits for its echo: every datagram must be answered.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { InstarError, Upgrader } from "../mod.ts";
import { listenDatagram } from "../unstable.ts";
import { openDatagram } from "../src/net/datagram.ts";
import type { DatagramAddr, DatagramSocket } from "../src/net/datagram.ts";
import { bind, C, close as closeFd, fcntl, getsockname, listenFd, socket } from "../src/ffi/mod.ts";
import { decode, encodeInet } from "../src/ffi/sockaddr.ts";
import { checkListeningFd } from "../src/protocol/validate.ts";
import {
  alive,
  bunBin,
  cleanupAfterTests,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  showResult,
  sleep,
  startServer,
  stopped,
} from "./support/helpers.ts";
import {
  type Generations,
  startGenerations,
  upgradeAndDrain,
  upgradeByHup,
} from "./support/generations.ts";
import { nextPidInPidFile, portOf, readyGeneration } from "./support/status.ts";

const left = cleanupAfterTests();
const EXAMPLE = join(ROOT, "examples", "udp_echo.ts");

/** Echoes every datagram `sock` receives until it is closed. */
function echo(sock: DatagramSocket): Promise<void> {
  return (async () => {
    for await (const { data, addr } of sock) await sock.send(data, addr);
  })();
}

/** A node:dgram client bound to 127.0.0.1; resolves with the next answer to `msg`. */
async function udpClient() {
  const c = dgram.createSocket("udp4");
  await new Promise<void>((r) => c.bind({ port: 0, address: "127.0.0.1" }, () => r()));
  const answers: string[] = [];
  let wake: (() => void) | undefined;
  c.on("message", (m) => {
    answers.push(String(m));
    wake?.();
  });
  return {
    port: c.address().port,
    send: (msg: string, port: number) => c.send(msg, port, "127.0.0.1"),
    /** The next answer within `ms`, or undefined. */
    async next(ms: number): Promise<string | undefined> {
      const deadline = Date.now() + ms;
      while (answers.length === 0 && Date.now() < deadline) {
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, Math.max(1, deadline - Date.now()));
        });
      }
      return answers.shift();
    },
    close: () => c.close(),
  };
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    assert.ok(err instanceof InstarError, `not an InstarError: ${err}`);
    return err.code;
  }
  return "no error";
}

describe(`listenDatagram (${RUNTIME})`, () => {
  for (const backend of ["auto", "poll"] as const) {
    test(`UDP echo with the sender's address (${backend} reader), then close()`, async () => {
      const sock = await openDatagram({ hostname: "127.0.0.1", port: 0 }, { backend });
      assert.equal(sock.addr.transport, "udp");
      const port = (sock.addr as { port: number }).port;
      assert.ok(port > 0);
      if (backend === "poll") assert.equal(sock.kind, "recvfrom + poll worker");
      const seen: DatagramAddr[] = [];
      const done = (async () => {
        for await (const { data, addr } of sock) {
          seen.push(addr);
          await sock.send(data, addr);
        }
      })();
      const c = await udpClient();
      try {
        for (let i = 0; i < 50; i++) {
          c.send(`ping ${i}`, port);
          assert.equal(await c.next(5000), `ping ${i}`);
        }
      } finally {
        c.close();
      }
      assert.deepEqual(seen[0], { transport: "udp", hostname: "127.0.0.1", port: c.port });
      const fd = sock.fd;
      sock.close();
      await done; // the iteration ends
      assert.equal(sock.fd, -1);
      assert.throws(() => fcntl(fd, C.F_GETFD), /EBADF/, "the fd is closed");
      assert.equal(await codeOf(sock.receive()), "SOCKET_CLOSED");
      assert.equal(await codeOf(sock.send("x", seen[0])), "SOCKET_CLOSED");
      sock.close(); // idempotent
    });
  }

  for (const backend of ["auto", "poll"] as const) {
    test(`a paused socket takes nothing; resumed, it gets what waited (${backend} reader)`, async () => {
      // What the lifecycle does: a new generation is paused until ready(), the old one at the handover.
      const sock = await openDatagram({ hostname: "127.0.0.1", port: 0 }, {
        backend,
        paused: true,
      });
      const port = (sock.addr as { port: number }).port;
      const c = await udpClient();
      const got: string[] = [];
      const done = (async () => {
        for await (const { data, addr } of sock) {
          got.push(new TextDecoder().decode(data));
          await sock.send(data, addr);
        }
      })();
      for (let i = 0; i < 5; i++) c.send(`p${i}`, port);
      await sleep(300);
      assert.deepEqual(got, [], "nothing read while paused");
      sock.resumeReceiving();
      const echoed: (string | undefined)[] = [];
      for (let i = 0; i < 5; i++) echoed.push(await c.next(5000));
      // (Deno's node:dgram client may send a burst out of order.)
      assert.deepEqual(echoed.sort(), ["p0", "p1", "p2", "p3", "p4"]);
      // Paused again (a handover) under a stream of datagrams: nothing more is taken.
      sock.pauseReceiving();
      await sleep(50);
      const before = got.length;
      for (let i = 0; i < 50; i++) c.send(`q${i}`, port);
      await sleep(300);
      assert.equal(got.length, before, `read while paused: ${got.slice(before)}`);
      await sock.endReceiving(); // the iteration ends; sending still works
      await done;
      assert.equal(
        await sock.send("still", { transport: "udp", hostname: "127.0.0.1", port: c.port }),
        5,
      );
      assert.equal(await c.next(5000), "still");
      sock.close();
      c.close();
    });
  }

  for (const backend of ["auto", "poll"] as const) {
    test(`a queued datagram holds only its own bytes, not a 64 KiB receive buffer (${backend} reader)`, async () => {
      const sock = await openDatagram({ hostname: "127.0.0.1", port: 0 }, { backend });
      const c = await udpClient();
      try {
        for (let i = 0; i < 20; i++) c.send(`tiny ${i}`, (sock.addr as { port: number }).port);
        const got: string[] = [];
        for (let i = 0; i < 20; i++) {
          const d = await sock.receive();
          got.push(new TextDecoder().decode(d.data));
          assert.ok(d.data.buffer.byteLength < 1024, `retains ${d.data.buffer.byteLength} bytes`);
        }
        // (Deno's node:dgram client may send a burst out of order.)
        assert.deepEqual(got.sort(), Array.from({ length: 20 }, (_, i) => `tiny ${i}`).sort());
      } finally {
        c.close();
        sock.close();
      }
    });
  }

  test("the end of receiving waits for a loop still handling a datagram, not for one that left", async () => {
    const sock = await openDatagram({ hostname: "127.0.0.1", port: 0 });
    const port = (sock.addr as { port: number }).port;
    const c = await udpClient();
    let release!: () => void;
    const handling = new Promise<void>((r) => (release = r));
    const loop = (async () => {
      for await (const { data, addr } of sock) {
        await handling; // still busy with this datagram when the end comes
        await sock.send(data, addr);
      }
    })();
    c.send("slow", port);
    await sleep(200);
    let ended = false;
    const end = sock.endReceiving().then(() => (ended = true));
    await sleep(200);
    assert.equal(ended, false, "it waits for the datagram in hand");
    release();
    await end;
    await loop;
    assert.equal(await c.next(5000), "slow", "answered after the end of receiving");
    sock.close();
    // A loop that broke out takes nothing more: nothing to wait for.
    const other = await openDatagram({ hostname: "127.0.0.1", port: 0 });
    const left_ = (async () => {
      for await (const _ of other) break;
    })();
    c.send("one", (other.addr as { port: number }).port);
    await left_;
    const t0 = performance.now();
    await other.endReceiving();
    assert.ok(performance.now() - t0 < 100, "resolved at once");
    other.close();
    c.close();
  });

  test("the hello check takes a datagram socket only under a datagram key, and only a datagram socket there", async () => {
    const sock = await listenDatagram({ hostname: "127.0.0.1", port: 0 });
    const addr = decode(getsockname(sock.fd));
    const listening = socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    try {
      bind(listening, encodeInet("127.0.0.1", 0)!);
      listenFd(listening, 1);
      const tcpAddr = decode(getsockname(listening));
      assert.doesNotThrow(() => checkListeningFd(sock.fd, addr, "udp:127.0.0.1:0"));
      assert.equal(
        await codeOf(() => checkListeningFd(sock.fd, addr, "tcp:127.0.0.1:0")),
        "PROTOCOL_ERROR",
      );
      assert.equal(
        await codeOf(() => checkListeningFd(listening, tcpAddr, "udp:127.0.0.1:0")),
        "PROTOCOL_ERROR",
      );
      assert.equal(
        await codeOf(() => checkListeningFd(listening, tcpAddr, "unixgram:/x")),
        "PROTOCOL_ERROR",
      );
      assert.doesNotThrow(() => checkListeningFd(listening, tcpAddr, "tcp:127.0.0.1:0"));
      const other = { ...addr, port: (addr as { port: number }).port + 1 };
      assert.equal(
        await codeOf(() => checkListeningFd(sock.fd, other, "udp:127.0.0.1:0")),
        "PROTOCOL_ERROR",
      );
    } finally {
      closeFd(listening);
      sock.close();
    }
  });

  test("a dual-stack socket answers IPv4 and IPv6 senders", async () => {
    const sock = await listenDatagram({ hostname: "::", port: 0 });
    const port = (sock.addr as { port: number }).port;
    const done = echo(sock);
    for (const [type, host] of [["udp4", "127.0.0.1"], ["udp6", "::1"]] as const) {
      const c = dgram.createSocket(type);
      const got = new Promise<string>((r) => c.once("message", (m) => r(String(m))));
      c.send(`hi ${type}`, port, host);
      assert.equal(await Promise.race([got, sleep(5000).then(() => "timeout")]), `hi ${type}`);
      c.close();
    }
    sock.close();
    await done;
  });

  test("Unix datagram echo with the sender's path; an unnamed sender cannot be answered", async () => {
    const dir = left.tempDir("instar-dgram-");
    const server = await listenDatagram({ path: join(dir, "s.sock"), mode: 0o600 });
    const client = await listenDatagram({ path: join(dir, "c.sock") });
    assert.deepEqual(server.addr, { transport: "unixgram", path: join(dir, "s.sock") });
    let from: DatagramAddr | undefined;
    const done = (async () => {
      for await (const { data, addr } of server) {
        from = addr;
        await server.send(data, addr);
      }
    })();
    for (let i = 0; i < 20; i++) {
      await client.send(`u${i}`, server.addr);
      const d = await client.receive();
      assert.equal(new TextDecoder().decode(d.data), `u${i}`);
      assert.deepEqual(d.addr, server.addr);
    }
    assert.deepEqual(from, { transport: "unixgram", path: join(dir, "c.sock") });
    assert.equal(
      await codeOf(server.send("x", { transport: "unixgram", path: "" })),
      "INVALID_ARGUMENT",
    );
    server.close();
    client.close();
    await done;
  });

  test("bad options and addresses give typed errors", async () => {
    assert.equal(await codeOf(listenDatagram({ port: 70000 })), "INVALID_ARGUMENT");
    assert.equal(
      await codeOf(listenDatagram({ hostname: "localhost", port: 0 })),
      "INVALID_ARGUMENT",
    );
    assert.equal(await codeOf(listenDatagram({} as never)), "INVALID_ARGUMENT");
    assert.equal(await codeOf(listenDatagram(null as never)), "INVALID_ARGUMENT");
    assert.equal(await codeOf(listenDatagram({ path: "" })), "INVALID_ARGUMENT");
    assert.equal(
      await codeOf(listenDatagram({ path: "/tmp/x", mode: 0o70000 })),
      "INVALID_ARGUMENT",
    );
    const stream = socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    try {
      listenFd(stream, 1);
      assert.equal(await codeOf(listenDatagram({ fd: stream })), "INVALID_ARGUMENT");
    } finally {
      closeFd(stream);
    }
    assert.equal(await codeOf(listenDatagram({ fd: 100_000 })), "EBADF");
    const a = await listenDatagram({ hostname: "127.0.0.1", port: 0 });
    try {
      assert.equal(
        await codeOf(
          listenDatagram({ hostname: "127.0.0.1", port: (a.addr as { port: number }).port }),
        ),
        "EADDRINUSE",
      );
      assert.equal(
        await codeOf(a.send("x", { transport: "udp", hostname: "nowhere", port: 1 })),
        "INVALID_ARGUMENT",
      );
      assert.equal(
        await codeOf(a.send("x", { transport: "udp", hostname: "127.0.0.1", port: 0 })),
        "INVALID_ARGUMENT",
      );
      assert.equal(
        await codeOf(a.send("x", { transport: "unixgram", path: "/tmp/x" })),
        "INVALID_ARGUMENT",
      );
      assert.equal(await codeOf(a.send(42 as never, a.addr)), "INVALID_ARGUMENT");
    } finally {
      a.close();
    }
    const up = await Upgrader.create({
      systemd: false,
      exitAfterDrain: false,
      upgradeSignal: null,
      stopSignals: [],
    });
    assert.equal(await codeOf(up.listenDatagram({ fd: 3 } as never)), "INVALID_ARGUMENT");
    const s = await up.listenDatagram({ hostname: "127.0.0.1", port: 0 });
    assert.equal(
      await codeOf(up.listenDatagram({ hostname: "127.0.0.1", port: 0 })),
      "INVALID_ARGUMENT",
      "one key once",
    );
    s.close();
    up.stop();
    await up.drained;
  });
});

/** What a ping loop saw. */
interface Pings {
  sent: number;
  answered: number;
  unanswered: number[];
  late: number;
  pids: Set<string>;
}

/**
 * Sends `seq <n>` about every millisecond, each time waiting up to
 * `timeoutMs` for its echo (`<pid> seq <n>`: the example's --tag) before the
 * next; never re-sends. Runs until `stop` is aborted, at most `maxMs`.
 */
async function pingLoop(
  send: (msg: string) => unknown,
  next: (ms: number) => Promise<string | undefined>,
  stop: AbortSignal,
  timeoutMs = 3000,
  maxMs = 240_000,
): Promise<Pings> {
  const r: Pings = { sent: 0, answered: 0, unanswered: [], late: 0, pids: new Set() };
  const end = Date.now() + maxMs;
  while (!stop.aborted && Date.now() < end) {
    const msg = `seq ${r.sent}`;
    send(msg);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const a = await next(deadline - Date.now());
      if (a === undefined) {
        r.unanswered.push(r.sent);
        break;
      }
      const m = /^(\d+) (seq \d+)$/.exec(a);
      if (m?.[2] === msg) {
        r.answered++;
        r.pids.add(m[1]);
        break;
      }
      r.late++; // an earlier datagram's echo after its timeout
    }
    r.sent++;
    await sleep(1);
  }
  return r;
}

/** A Unix datagram client bound at `path`, with the answers it received queued. */
async function unixClient(path: string) {
  const sock = await listenDatagram({ path });
  const answers: string[] = [];
  let wake: (() => void) | undefined;
  void (async () => {
    for await (const { data } of sock) {
      answers.push(new TextDecoder().decode(data));
      wake?.();
    }
  })();
  return {
    sock,
    async next(ms: number): Promise<string | undefined> {
      const deadline = Date.now() + ms;
      while (answers.length === 0 && Date.now() < deadline) {
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, Math.max(1, deadline - Date.now()));
        });
      }
      return answers.shift();
    },
  };
}

/** The example on a Unix datagram socket at `path` (startGenerations reads a TCP port). */
async function startUnixgram(path: string): Promise<Generations> {
  const dir = left.tempDir("instar-unixgram-");
  const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
  const args = ["--path", path, "--tag", "--control", ctl, "--pid-file", pidFile];
  const server = startServer(runtimeCmd(RUNTIME, EXAMPLE, args));
  left.servers.push(server);
  await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs: 60_000, log: server.lines });
  return { server, port: 0, pidFile, ctl };
}

describe(`udp_echo upgrades (${RUNTIME})`, () => {
  for (const kind of ["udp", "unixgram"] as const) {
    test(`every datagram of a 1 ms ping loop is answered across 20 upgrades (${kind})`, async () => {
      const dir = left.tempDir("instar-udp-");
      const path = join(dir, "echo.sock");
      const g = kind === "udp"
        ? await startGenerations(left, EXAMPLE, ["--tag"])
        : await startUnixgram(path);
      const ac = new AbortController();
      let pings: Promise<Pings>;
      let close = () => {};
      if (kind === "udp") {
        const c = await udpClient();
        close = c.close;
        pings = pingLoop((m) => c.send(m, g.port), c.next, ac.signal);
      } else {
        const c = await unixClient(join(dir, "client.sock"));
        close = () => c.sock.close();
        const to: DatagramAddr = { transport: "unixgram", path };
        pings = pingLoop((m) => c.sock.send(m, to), c.next, ac.signal);
      }
      let current = g.server.pid;
      try {
        await sleep(200);
        for (let i = 0; i < 20; i++) {
          current = await upgradeByHup(g, current);
          await sleep(50);
        }
        await sleep(500);
      } finally {
        ac.abort();
      }
      const r = await pings;
      close();
      console.log(
        `${kind}: ${r.sent} sent, ${r.answered} answered by ${r.pids.size} generations, ` +
          `${r.unanswered.length} unanswered, ${r.late} late`,
      );
      assert.deepEqual(
        r.unanswered,
        [],
        `unanswered of ${r.sent}: ${r.unanswered.length} (${
          r.unanswered.slice(0, 10)
        }); late ${r.late}`,
      );
      assert.equal(r.late, 0);
      assert.ok(r.answered > 200, `only ${r.answered} answered`);
      assert.ok(r.pids.size >= 10, `answers came from ${r.pids.size} generations`);
      assert.ok(r.pids.has(String(current)), "the last generation answers");
      assert.equal(alive(current), true);
      // Every replaced generation drained and exited (none waits for the drain timeout).
      for (const pid of g.server.pids) if (pid !== current) await stopped(pid, 10_000);
      process.kill(current, "SIGTERM");
      await stopped(current, 10_000); // a stop drains too
    });
  }

  test("handovers to independently started processes (SCM_RIGHTS) answer every datagram", async () => {
    const g = await startGenerations(left, EXAMPLE, ["--tag"]);
    const c = await udpClient();
    const ac = new AbortController();
    const pings = pingLoop((m) => c.send(m, g.port), c.next, ac.signal);
    let current = g.server.pid;
    try {
      await sleep(200);
      for (let i = 0; i < 3; i++) {
        // Same flags: the same key (udp:127.0.0.1:0) claims the socket it is handed.
        const args = ["--port", "0", "--tag", "--control", g.ctl, "--pid-file", g.pidFile];
        const next = startServer(runtimeCmd(RUNTIME, EXAMPLE, args));
        left.servers.push(next);
        current = await nextPidInPidFile(g.pidFile, current, {
          timeoutMs: 60_000,
          log: next.lines,
        });
        assert.equal(current, next.pid, "the independently started process took over");
        await sleep(100);
      }
      await sleep(300);
    } finally {
      ac.abort();
    }
    const r = await pings;
    c.close();
    assert.deepEqual(r.unanswered, [], `unanswered of ${r.sent}; late ${r.late}`);
    assert.ok(r.pids.size >= 4, `answers came from ${r.pids.size} processes`);
    assert.ok(r.pids.has(String(current)));
    process.kill(current, "SIGTERM");
  });

  test("a new generation that never gets ready reads no datagram; the old one answers all", async () => {
    // A deploy directory whose server.ts is replaced by a broken version for one upgrade.
    const dir = left.tempDir("instar-udp-deploy-");
    const script = join(dir, "server.ts");
    writeFileSync(script, `import ${JSON.stringify(EXAMPLE)};\n`);
    const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
    const args = ["--port", "0", "--tag", "--ready-timeout", "2000", "--control", ctl];
    const server = startServer(runtimeCmd(RUNTIME, script, [...args, "--pid-file", pidFile]));
    left.servers.push(server);
    const port = portOf(await readyGeneration(ctl, 1, { pid: server.pid, log: server.lines }));
    // Claims the socket (same key) and would answer "0 seq N", but never calls ready().
    writeFileSync(
      script,
      `import { Upgrader } from ${JSON.stringify(join(ROOT, "mod.ts"))};
const up = await Upgrader.create();
const sock = await up.listenDatagram({ hostname: "127.0.0.1", port: 0 });
for await (const { data, addr } of sock) await sock.send("0 " + new TextDecoder().decode(data), addr);
`,
    );
    const c = await udpClient();
    const ac = new AbortController();
    const pings = pingLoop((m) => c.send(m, port), c.next, ac.signal);
    try {
      await sleep(200);
      process.kill(server.pid, "SIGHUP");
      await server.waitFor(/upgrade-failed.*ready-timeout|ready-timeout/, 60_000);
      await sleep(300);
    } finally {
      ac.abort();
    }
    const r = await pings;
    c.close();
    assert.deepEqual(r.unanswered, [], `unanswered of ${r.sent}`);
    assert.deepEqual([...r.pids], [String(server.pid)], "only the serving generation answered");
    assert.ok(r.answered > 500, `only ${r.answered} answered`);
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(server.pid));
    process.kill(server.pid, "SIGTERM");
  });

  test("a bun build --compile binary reads a Unix datagram socket (the poll worker runs from source text) and upgrades", async () => {
    // Under deno test too: it builds with Bun (deno compile needs a download these machines cannot reach).
    const dir = left.tempDir("instar-udp-compile-");
    const binary = join(dir, "app");
    const built = await runCommand(
      [bunBin(), "build", "--compile", EXAMPLE, "--outfile", binary],
      { timeoutMs: 180_000 },
    );
    assert.equal(built.code, 0, showResult(built, 3000));
    const path = join(dir, "echo.sock"),
      ctl = join(dir, "ctl.sock"),
      pidFile = join(dir, "app.pid");
    const server = startServer([
      binary,
      "--path",
      path,
      "--tag",
      "--control",
      ctl,
      "--pid-file",
      pidFile,
    ]);
    left.servers.push(server);
    await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs: 60_000, log: server.lines });
    const c = await unixClient(join(dir, "client.sock"));
    const to: DatagramAddr = { transport: "unixgram", path };
    await c.sock.send("seq 1", to);
    assert.equal(await c.next(5000), `${server.pid} seq 1`);
    const g: Generations = { server, port: 0, pidFile, ctl };
    // The old generation reads until it is told the new one is ready, a moment after the PID file
    // changes: wait for its drain, so that seq 2 can only reach the new generation.
    const next = await upgradeAndDrain(g, server.pid);
    await c.sock.send("seq 2", to);
    assert.equal(await c.next(5000), `${next} seq 2`);
    c.sock.close();
    process.kill(next, "SIGTERM");
    await stopped(next); // drained and gone before the runner ends (else a leftover)
  });
});
