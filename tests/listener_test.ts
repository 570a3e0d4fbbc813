import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import process from "node:process";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { type Addr, encodeInet, encodeUnix, type NetAddr } from "../src/ffi/sockaddr.ts";
import { InstarError, SystemError } from "../src/errors.ts";
import { type Conn, listen, type Listener, openListener, openSocket } from "../src/net/listener.ts";
import {
  cleanupAfterTests,
  leakedSockets,
  openFds,
  rawListen,
  RUNTIME,
  sleep,
} from "./support/helpers.ts";

const dir = cleanupAfterTests().tempDir("instar-listener-");

const NATIVE_KIND = RUNTIME === "deno" ? "Deno.listen" : "Bun.listen";

/** Echoes every connection of `l` (prefixing each answer with `tag`) until the listener ends. */
function serveEcho(l: Listener, tag = ""): Promise<void> {
  const prefix = new TextEncoder().encode(tag);
  return (async () => {
    for await (const conn of l) {
      (async () => {
        const buf = new Uint8Array(16 * 1024);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            if (prefix.byteLength) await writeAll(conn, prefix);
            await writeAll(conn, buf.subarray(0, n));
          }
        } catch {
          // closed by closeConnections() or reset: the test asserts what the client saw
        } finally {
          conn.close();
        }
      })();
    }
  })();
}

async function writeAll(c: Conn, p: Uint8Array): Promise<void> {
  for (let off = 0; off < p.byteLength;) off += await c.write(p.subarray(off));
}

/** A node:net client with request/answer round trips. */
interface Client {
  socket: net.Socket;
  /** Sends `msg` and resolves with the next `expectBytes` bytes received. */
  roundTrip(msg: string, expectBytes?: number): Promise<string>;
  /** Resolves when the peer ended or closed the connection. */
  ended: Promise<void>;
  close(): void;
}

function connectTo(addr: Addr, timeoutMs = 10_000): Promise<Client> {
  const socket = addr.transport === "unix"
    ? net.connect({ path: addr.path.startsWith("@") ? `\0${addr.path.slice(1)}` : addr.path })
    : net.connect({ host: addr.hostname, port: addr.port, allowHalfOpen: true });
  let received = "";
  let wake: (() => void) | undefined;
  const ended = new Promise<void>((resolve) => {
    socket.on("end", () => resolve());
    socket.on("close", () => resolve());
  });
  socket.on("data", (d: Uint8Array) => {
    received += new TextDecoder().decode(d);
    wake?.();
  });
  socket.on("error", () => wake?.());
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.once("connect", () => {
      resolve({
        socket,
        ended,
        close: () => socket.destroy(),
        async roundTrip(msg, expectBytes = msg.length) {
          socket.write(msg);
          const deadline = Date.now() + timeoutMs;
          while (received.length < expectBytes) {
            if (Date.now() > deadline || socket.destroyed) {
              throw new Error(`expected ${expectBytes} bytes, got ${JSON.stringify(received)}`);
            }
            await Promise.race([new Promise<void>((r) => (wake = r)), sleep(50)]);
          }
          const out = received.slice(0, expectBytes);
          received = received.slice(expectBytes);
          return out;
        },
      });
    });
  });
}

function port(l: Listener): number {
  return (l.addr as NetAddr).port;
}

/** Connects with a blocking libc socket: the kernel completes the handshake without the event loop. */
function rawConnect(addr: NetAddr): number {
  const sa = encodeInet(addr.hostname, addr.port)!;
  const family = new DataView(sa.buffer).getUint16(0, true);
  const fd = sys.socket(family, C.SOCK_STREAM | C.SOCK_CLOEXEC);
  sys.connect(fd, sa);
  sys.setNonBlocking(fd, true);
  return fd;
}

/** Writes `msg` on a raw fd and polls (without blocking the loop) for `expect` bytes. */
async function rawRoundTrip(fd: number, msg: string, expect: number): Promise<string> {
  sys.write(fd, new TextEncoder().encode(msg));
  const buf = new Uint8Array(256);
  let out = "";
  const deadline = Date.now() + 10_000;
  while (out.length < expect && Date.now() < deadline) {
    const n = sys.read(fd, buf);
    if (n === 0) break;
    if (n === null) await sleep(5);
    else out += new TextDecoder().decode(buf.subarray(0, n));
  }
  return out;
}

/** Whether connecting to `addr` is refused, retrying briefly (runtimes close their fd on the next turn). */
async function refused(addr: NetAddr): Promise<boolean> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const code = await new Promise<string>((resolve) => {
      const s = net.connect({ host: addr.hostname, port: addr.port });
      s.once("connect", () => {
        s.destroy();
        resolve("connected");
      });
      s.once("error", (e: Error & { code?: string }) => resolve(e.code ?? e.message));
    });
    if (code === "ECONNREFUSED") return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

async function rejectsWith(p: Promise<unknown>, code: string, mentions?: string): Promise<Error> {
  try {
    const l = await p;
    (l as Listener)?.close?.();
  } catch (err) {
    assert.ok(err instanceof InstarError, `expected an InstarError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (mentions) assert.ok(err.message.includes(mentions), `"${err.message}" names ${mentions}`);
    return err;
  }
  assert.fail(`expected a ${code} error`);
}

describe(`listen() under ${RUNTIME}`, () => {
  for (const backend of ["auto", "node"] as const) {
    const label = backend === "auto" ? "" : " (node:net fallback)";
    test(`listen() echoes over TCP on 127.0.0.1${label}`, async () => {
      const l = await openListener({ hostname: "127.0.0.1", port: 0 }, backend);
      assert.equal(l.kind, backend === "auto" ? NATIVE_KIND : "node:net");
      const done = serveEcho(l);
      const c = await connectTo(l.addr);
      assert.equal(await c.roundTrip("hello"), "hello");
      assert.equal(await c.roundTrip("x".repeat(100_000)), "x".repeat(100_000));
      c.close();
      l.close();
      await done;
      await l.drained();
    });

    test(`listen() echoes over TCP on ::1${label}`, async () => {
      const l = await openListener({ hostname: "::1", port: 0 }, backend);
      assert.deepEqual(l.addr, { transport: "tcp", hostname: "::1", port: port(l) });
      const done = serveEcho(l);
      const c = await connectTo(l.addr);
      assert.equal(await c.roundTrip("over v6"), "over v6");
      c.close();
      l.close();
      await done;
    });

    test(`listen() echoes over a Unix socket${label}`, async () => {
      const path = join(dir, `echo-${backend}.sock`);
      const l = await openListener({ path }, backend);
      assert.deepEqual(l.addr, { transport: "unix", path });
      const done = serveEcho(l);
      const c = await connectTo(l.addr);
      assert.equal(await c.roundTrip("over unix"), "over unix");
      c.close();
      l.close();
      await done;
      assert.ok(statSync(path).isSocket(), "close() leaves the socket file for a next generation");
    });
  }

  for (const backend of ["auto", "node"] as const) {
    const label = backend === "auto" ? "" : " (node:net fallback)";
    test(`a large upload to a slow reader arrives intact${label}`, async () => {
      const l = await openListener({ hostname: "127.0.0.1", port: 0 }, backend);
      const size = 8 << 20;
      const served = (async () => {
        const conn = await l.accept();
        await sleep(200); // let the runtime buffer past the high-water mark
        const buf = new Uint8Array(100_000);
        let total = 0, bad = -1;
        for (let n; (n = await conn.read(buf)) !== null;) {
          for (let i = 0; i < n && bad < 0; i++) if (buf[i] !== (total + i) % 251) bad = total + i;
          total += n;
        }
        await writeAll(conn, new TextEncoder().encode(`${total} ${bad}`));
        conn.close();
      })();
      const c = await connectTo(l.addr);
      let answer = "";
      c.socket.on("data", (d: Uint8Array) => (answer += new TextDecoder().decode(d)));
      const data = new Uint8Array(size).map((_, i) => i % 251);
      c.socket.end(data);
      await served;
      await c.ended;
      assert.equal(answer, `${size} -1`);
      c.close();
      l.close();
    });
  }

  test("listen() echoes over an abstract Unix socket", async () => {
    const path = `@instar-test-${process.pid}-${Date.now()}`;
    const l = await listen({ path });
    assert.deepEqual(l.addr, { transport: "unix", path });
    const done = serveEcho(l);
    const c = await connectTo(l.addr);
    assert.equal(await c.roundTrip("abstract"), "abstract");
    c.close();
    l.close();
    await done;
  });

  test("listen() serves 200 concurrent connections", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const done = serveEcho(l);
    const clients = await Promise.all(Array.from({ length: 200 }, () => connectTo(l.addr)));
    const answers = await Promise.all(clients.map((c, i) => c.roundTrip(`msg-${i}-`.repeat(50))));
    answers.forEach((a, i) => assert.equal(a, `msg-${i}-`.repeat(50)));
    assert.equal(l.connections, 200);
    for (const c of clients) c.close();
    await l.drained();
    assert.equal(l.connections, 0);
    l.close();
    await done;
  });

  test("listen() reports the real port, defaults to 0.0.0.0 and resolves names", async () => {
    const any = await listen({ port: 0 });
    assert.equal((any.addr as NetAddr).hostname, "0.0.0.0");
    assert.ok(port(any) > 0);
    any.close();
    const local = await listen({ hostname: "localhost", port: 0 });
    assert.ok(["127.0.0.1", "::1"].includes((local.addr as NetAddr).hostname));
    const done = serveEcho(local);
    const c = await connectTo(local.addr);
    assert.equal(await c.roundTrip("by name"), "by name");
    c.close();
    local.close();
    await done;
  });

  test('listen({ hostname: "::" }) accepts IPv4 and IPv6 clients', async () => {
    const l = await listen({ hostname: "::", port: 0 });
    const done = serveEcho(l);
    for (const hostname of ["127.0.0.1", "::1"]) {
      const c = await connectTo({ transport: "tcp", hostname, port: port(l) });
      assert.equal(await c.roundTrip(hostname), hostname);
      c.close();
    }
    l.close();
    await done;
  });

  test("the listener's fd is instar's own, close-on-exec and non-blocking", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    assert.ok(sys.fcntl(l.fd, C.F_GETFD) & C.FD_CLOEXEC);
    assert.ok(sys.fcntl(l.fd, C.F_GETFL) & C.O_NONBLOCK);
    assert.equal(sys.getsockoptInt(l.fd, C.SOL_SOCKET, C.SO_ACCEPTCONN), 1);
    const fd = l.fd;
    l.close();
    assert.equal(l.fd, -1);
    assert.throws(() => sys.fcntl(fd, C.F_GETFD), (e: SystemError) => e.code === "EBADF");
  });

  test("listen({ fd }) adopts a blocking listening socket made with libc", async () => {
    const sa = encodeInet("127.0.0.1", 0)!;
    const fd = sys.socket(C.AF_INET, C.SOCK_STREAM); // blocking, inheritable: as a parent might pass it
    sys.bind(fd, sa);
    sys.listenFd(fd, 16);
    const l = await listen({ fd });
    assert.equal(l.fd, fd);
    assert.ok(sys.fcntl(fd, C.F_GETFL) & C.O_NONBLOCK, "adoption sets O_NONBLOCK");
    assert.ok(sys.fcntl(fd, C.F_GETFD) & C.FD_CLOEXEC, "adoption sets FD_CLOEXEC");
    const done = serveEcho(l);
    const c = await connectTo(l.addr);
    assert.equal(await c.roundTrip("adopted"), "adopted");
    c.close();
    l.close();
    await done;
    assert.ok(await refused(l.addr as NetAddr), "close() closed the adopted fd");
  });

  test("openSocket() opens the same socket without serving it; listen({ fd }) serves it later", async () => {
    const { fd, addr } = await openSocket({ hostname: "127.0.0.1", port: 0 });
    assert.equal(sys.getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN), 1);
    assert.ok(sys.fcntl(fd, C.F_GETFD) & C.FD_CLOEXEC);
    const queued = rawConnect(addr as NetAddr); // waits in the accept queue until served
    const l = await listen({ fd });
    assert.deepEqual(l.addr, addr);
    const done = serveEcho(l);
    assert.equal(await rawRoundTrip(queued, "early", 5), "early");
    sys.close(queued);
    l.close();
    await done;
    await rejectsWith(openSocket({ port: 65536 }), "INVALID_ARGUMENT", "65536");
  });

  test("close() ends the iterator and refuses new connections; accepted ones keep working", async () => {
    const before = openFds();
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const done = serveEcho(l);
    const c = await connectTo(l.addr);
    assert.equal(await c.roundTrip("one"), "one");
    l.close();
    l.close(); // idempotent
    await done; // the for-await loop ended
    await assert.rejects(l.accept(), (e: InstarError) => e.code === "LISTENER_CLOSED");
    assert.ok(await refused(l.addr as NetAddr), "a closed listener refuses connections");
    assert.equal(await c.roundTrip("two"), "two");
    assert.equal(l.connections, 1);
    c.close();
    await l.drained();
    assert.deepEqual(await leakedSockets(before), []);
  });

  test("close() never shuts the shared socket down: a second listener on a dup takes over the queue", async () => {
    const l1 = await listen({ hostname: "127.0.0.1", port: 0 });
    const done1 = serveEcho(l1, "1:");
    const early = await connectTo(l1.addr);
    assert.equal(await early.roundTrip("a", 3), "1:a");
    const l2 = await listen({ fd: sys.dupCloexec(l1.fd) });
    assert.deepEqual(l2.addr, l1.addr);
    // Connect and close in one synchronous stretch: neither runtime can accept
    // in between, so these connections sit in the kernel's accept queue.
    const queued = Array.from({ length: 5 }, () => rawConnect(l1.addr as NetAddr));
    l1.close();
    const done2 = serveEcho(l2, "2:");
    try {
      for (const [i, fd] of queued.entries()) {
        assert.equal(await rawRoundTrip(fd, `q${i}`, 4), `2:q${i}`);
      }
      for (let i = 0; i < 5; i++) {
        const c = await connectTo(l2.addr);
        assert.equal(await c.roundTrip(`n${i}`, 4), `2:n${i}`);
        c.close();
      }
      // Accepted by l1 before its close: still served by l1, and counted there.
      assert.equal(await early.roundTrip("b", 3), "1:b");
      await done1;
      assert.equal(l1.connections, 1);
      early.close();
      await l1.drained();
    } finally {
      for (const fd of queued) sys.close(fd);
      l2.close();
    }
    await done2;
  });

  test("closeConnections() closes what drained() waits for", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const done = serveEcho(l);
    const clients = await Promise.all([1, 2, 3].map(() => connectTo(l.addr)));
    for (const c of clients) assert.equal(await c.roundTrip("hi"), "hi");
    assert.equal(l.connections, 3);
    let drained = false;
    const d = l.drained().then(() => (drained = true));
    await sleep(50);
    assert.equal(drained, false, "drained() waits while connections are open");
    l.close();
    l.closeConnections();
    await d;
    assert.equal(l.connections, 0);
    await Promise.all(clients.map((c) => c.ended));
    await done;
  });

  test("a connection half-closed by the peer can still be answered", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await l.accept();
      const buf = new Uint8Array(64);
      let got = "";
      for (let n; (n = await conn.read(buf)) !== null;) {
        got += new TextDecoder().decode(buf.subarray(0, n));
      }
      await writeAll(conn, new TextEncoder().encode(`got ${got}`));
      await conn.closeWrite();
      conn.close();
    })();
    const c = await connectTo(l.addr);
    let answer = "";
    c.socket.on("data", (d: Uint8Array) => (answer += new TextDecoder().decode(d)));
    c.socket.end("question");
    await c.ended;
    await served;
    assert.equal(answer, "got question");
    assert.equal(l.connections, 0);
    c.close();
    l.close();
  });

  test("closeWrite() ends our side while reading goes on", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await l.accept();
      await writeAll(conn, new TextEncoder().encode("hello"));
      await conn.closeWrite();
      const buf = new Uint8Array(64);
      let got = "";
      for (let n; (n = await conn.read(buf)) !== null;) {
        got += new TextDecoder().decode(buf.subarray(0, n));
      }
      conn.close();
      return got;
    })();
    const c = await connectTo(l.addr);
    let answer = "";
    c.socket.on("data", (d: Uint8Array) => (answer += new TextDecoder().decode(d)));
    await c.ended; // the server's FIN
    assert.equal(answer, "hello");
    c.socket.end("after your FIN");
    assert.equal(await served, "after your FIN");
    c.close();
    l.close();
  });

  test("conn.readable piped to conn.writable echoes and closes the connection", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await l.accept();
      assert.equal(conn.localAddr.transport, "tcp");
      assert.equal((conn.remoteAddr as NetAddr).hostname, "127.0.0.1");
      conn.setNoDelay(true);
      conn.setKeepAlive(true);
      await conn.readable.pipeTo(conn.writable);
    })();
    const c = await connectTo(l.addr);
    assert.equal(await c.roundTrip("streams"), "streams");
    c.socket.end();
    await served;
    await l.drained();
    c.close();
    l.close();
  });

  test("Symbol.asyncDispose closes the listener", async () => {
    let addr: NetAddr;
    {
      await using l = await listen({ hostname: "127.0.0.1", port: 0 });
      addr = l.addr as NetAddr;
    }
    assert.ok(await refused(addr));
  });

  test("a Unix listener replaces a stale socket file, applies mode, and refuses a live one", async () => {
    const path = join(dir, "stale.sock");
    // A socket file nobody listens on any more.
    const stale = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    sys.bind(stale, encodeUnix(path));
    sys.close(stale);
    const l = await listen({ path, mode: 0o600 });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await rejectsWith(listen({ path }), "EADDRINUSE", path);
    l.close();
    const file = join(dir, "not-a-socket");
    writeFileSync(file, "keep me");
    await rejectsWith(listen({ path: file }), "EADDRINUSE", file);
    assert.ok(statSync(file).isFile(), "a regular file is never removed");
  });

  test("listen() rejects bad options with a code naming the value", async () => {
    await rejectsWith(listen({ port: 70000 }), "INVALID_ARGUMENT", "70000");
    await rejectsWith(listen({ port: 80.5 }), "INVALID_ARGUMENT", "80.5");
    await rejectsWith(listen({ port: -1 }), "INVALID_ARGUMENT", "-1");
    await rejectsWith(listen({ port: 0, backlog: -2 }), "INVALID_ARGUMENT", "backlog");
    await rejectsWith(listen({ hostname: "no-such-host.invalid", port: 0 }), "ENOTFOUND");
    await rejectsWith(
      listen({ path: join(dir, "x".repeat(200)) }),
      "INVALID_ARGUMENT",
      "at most 107",
    );
    await rejectsWith(listen({ path: join(dir, "m.sock"), mode: 0o10000 }), "INVALID_ARGUMENT");
    await rejectsWith(listen({ fd: -3 }), "INVALID_ARGUMENT", "-3");
    await rejectsWith(listen({} as never), "INVALID_ARGUMENT");
  });

  test("listen() names the address already in use", async () => {
    const l = await listen({ hostname: "127.0.0.1", port: 0 });
    const err = await rejectsWith(
      listen({ hostname: "127.0.0.1", port: port(l) }),
      "EADDRINUSE",
      `127.0.0.1:${port(l)}`,
    );
    assert.ok(err instanceof SystemError && err.syscall === "bind");
    l.close();
  });

  test("listen({ fd }) refuses what is not a listening stream socket, naming the fd", async () => {
    // A closed fd.
    const [r, w] = sys.pipe2(C.O_CLOEXEC);
    sys.close(w);
    await rejectsWith(listen({ fd: w }), "EBADF", `fd ${w}`);
    // A pipe (not a socket).
    await rejectsWith(listen({ fd: r }), "ENOTSOCK", `fd ${r}`);
    sys.close(r);
    // A stream socket that is not listening.
    const idle = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    await rejectsWith(listen({ fd: idle }), "INVALID_ARGUMENT", `fd ${idle} is a stream socket`);
    sys.close(idle);
    // A datagram socket.
    const udp = sys.socket(C.AF_INET, C.SOCK_DGRAM | C.SOCK_CLOEXEC);
    await rejectsWith(listen({ fd: udp }), "INVALID_ARGUMENT", "SOCK_STREAM");
    sys.close(udp);
    // A listening socket is fine; rawListen is the shared helper's one.
    const raw = await rawListen();
    const l = await listen({ fd: raw.fd });
    assert.equal(port(l), raw.port);
    l.close();
  });
});
