import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as http from "node:http";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import type { NetAddr } from "../src/ffi/sockaddr.ts";
import { InstarError } from "../src/errors.ts";
import {
  epollRegistrationsOf,
  KNOWN_EVENT_MASKS,
  listeningFdsAt,
  pauseAccepting,
  pauseSocket,
  resumeAccepting,
  resumeSocket,
  transplant,
  type TransplantOptions,
} from "../src/runtime/transplant.ts";
import { socketInode } from "../src/proc.ts";
import {
  connectClient,
  exchange,
  httpGet,
  leakedSockets,
  openFds,
  rawListen,
  RUNTIME,
} from "./support/helpers.ts";

// The runtime globals, typed just enough for these tests (one file runs under both).
interface DenoConn {
  read(b: Uint8Array): Promise<number | null>;
  write(b: Uint8Array): Promise<number>;
  close(): void;
}
interface DenoNs {
  serve(
    o: { hostname: string; port: number; onListen?: () => void },
    h: (r: Request) => Response,
  ): { addr: NetAddr; shutdown(): Promise<void>; finished: Promise<void> };
  listen(o: { hostname: string; port: number }): AsyncIterable<DenoConn> & {
    addr: NetAddr;
    close(): void;
  };
}
interface BunNs {
  serve(o: { hostname: string; port: number; fetch: (r: Request) => Response }): {
    port: number;
    stop(force?: boolean): Promise<void>;
  };
  listen(o: {
    hostname: string;
    port: number;
    socket: { data(s: { write(b: string): number; end(): void }, d: Uint8Array): void };
  }): { port: number; stop(force?: boolean): void };
}
const G = globalThis as unknown as { Deno: DenoNs; Bun: BunNs };

/** A native server started on a throwaway 127.0.0.1 port. */
interface Native {
  name: string;
  throwaway: NetAddr;
  /** A request the server answers, and a fragment of the answer. */
  payload: string;
  expect: string;
  close(): Promise<void>;
}

function local(port: number): NetAddr {
  return { transport: "tcp", hostname: "127.0.0.1", port };
}

const HELLO = "hello from the transplanted server";

async function startNodeHttp(): Promise<Native> {
  const server = http.createServer((_req, res) => res.end(HELLO));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    name: "node:http",
    throwaway: local(port),
    payload: httpGet(),
    expect: HELLO,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const starters: Record<string, () => Promise<Native>> = RUNTIME === "deno"
  ? {
    "Deno.serve": () => {
      const s = G.Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen() {} },
        () => new Response(HELLO),
      );
      return Promise.resolve({
        name: "Deno.serve",
        throwaway: s.addr,
        payload: httpGet(),
        expect: HELLO,
        close: () => s.shutdown(),
      });
    },
    "Deno.listen": () => {
      const l = G.Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const loop = (async () => {
        try {
          for await (const conn of l) {
            const buf = new Uint8Array(64);
            const n = await conn.read(buf);
            await conn.write(new TextEncoder().encode("echo:" + HELLO + ":" + (n ?? 0)));
            conn.close();
          }
        } catch {
          // closed
        }
      })();
      return Promise.resolve({
        name: "Deno.listen",
        throwaway: l.addr,
        payload: "ping",
        expect: "echo:" + HELLO + ":4",
        close: async () => {
          l.close();
          await loop;
        },
      });
    },
    "node:http": startNodeHttp,
  }
  : {
    "Bun.serve": () => {
      const s = G.Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(HELLO) });
      return Promise.resolve({
        name: "Bun.serve",
        throwaway: local(s.port),
        payload: httpGet(),
        expect: HELLO,
        close: () => s.stop(false),
      });
    },
    "Bun.listen": () => {
      const l = G.Bun.listen({
        hostname: "127.0.0.1",
        port: 0,
        socket: {
          data(s, d) {
            s.write("echo:" + HELLO + ":" + d.byteLength);
            s.end();
          },
        },
      });
      return Promise.resolve({
        name: "Bun.listen",
        throwaway: local(l.port),
        payload: "ping",
        expect: "echo:" + HELLO + ":4",
        close: () => Promise.resolve(l.stop(true)),
      });
    },
    "node:http": startNodeHttp,
  };

function assertUnsupported(fn: () => unknown, reason: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InstarError, `expected InstarError, got ${err}`);
    assert.equal(err.code, "TRANSPLANT_UNSUPPORTED");
    assert.match(err.message, reason);
    return true;
  });
}

/** Runs `body` with a fresh native server and our own listening socket; cleans both up. */
async function withServer(
  name: string,
  body: (native: Native, ours: { fd: number; port: number }) => Promise<void>,
): Promise<void> {
  const before = openFds();
  const ours = await rawListen();
  const native = await starters[name]();
  try {
    await body(native, ours);
  } finally {
    await native.close();
    sys.close(ours.fd);
  }
  // The runtime closes its (transplanted) fd; nothing else may be left behind.
  assert.deepEqual(await leakedSockets(before), [], "leaked sockets");
}

describe(`transplant() under ${RUNTIME}`, () => {
  for (const name of Object.keys(starters)) {
    test(`${name} answers on our socket, including connections queued before the transplant`, async () => {
      await withServer(name, async (native, ours) => {
        // Handshakes complete in the kernel: these wait in our socket's accept queue.
        const queued = await Promise.all([1, 2, 3].map(() => connectClient(ours.port)));
        const info = transplant({ throwaway: native.throwaway, fd: ours.fd });
        assert.deepEqual(info.addr, local(ours.port));
        assert.equal(socketInode(info.serverFd), socketInode(ours.fd));
        // The throwaway socket is gone.
        assert.deepEqual(listeningFdsAt(native.throwaway), []);
        const answers = await Promise.all(queued.map((c) => c.request(native.payload)));
        for (const a of answers) assert.ok(a.includes(native.expect), a);
        for (let i = 0; i < 3; i++) {
          assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
        }
      });
    });
  }

  const first = Object.keys(starters)[0];

  test(`${first} transplants with the kcmp-free epoll dedupe`, async () => {
    await withServer(first, async (native, ours) => {
      const info = transplant({ throwaway: native.throwaway, fd: ours.fd, dedupe: "probe" });
      assert.equal(info.dedupe, "probe");
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
      // Deno's reactor dups its epoll fd: the probe had to find the two are one instance.
      const regs = epollRegistrationsOf(info.serverFd, info.inode);
      assert.equal(regs.length, RUNTIME === "deno" ? 2 : 1);
    });
  });

  test("transplant() copies TCP_DEFER_ACCEPT and keeps our socket non-blocking", async () => {
    await withServer(first, async (native, ours) => {
      const [serverFd] = listeningFdsAt(native.throwaway);
      sys.setsockoptInt(serverFd, C.IPPROTO_TCP, C.TCP_DEFER_ACCEPT, 5);
      sys.setNonBlocking(ours.fd, false);
      const info = transplant({ throwaway: native.throwaway, fd: ours.fd });
      assert.ok(info.deferAccept > 0);
      assert.equal(
        sys.getsockoptInt(ours.fd, C.IPPROTO_TCP, C.TCP_DEFER_ACCEPT),
        info.deferAccept,
      );
      assert.notEqual(sys.fcntl(ours.fd, C.F_GETFL) & C.O_NONBLOCK, 0);
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
    });
  });

  test("pauseAccepting() leaves new connections queued on our socket; resumeAccepting() serves again", async () => {
    await withServer(first, async (native, ours) => {
      const info = transplant({ throwaway: native.throwaway, fd: ours.fd });
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
      assert.equal(pauseAccepting(info), true);
      assert.equal(pauseAccepting(info), false, "already paused");
      const waiting = await connectClient(ours.port);
      // Bun's TCP_DEFER_ACCEPT (copied to our socket) queues a connection only once data arrives.
      waiting.send(native.payload);
      await new Promise((r) => setTimeout(r, 200));
      // The server did not take it: it is still in the accept queue, for us.
      const conn = sys.accept4(ours.fd, C.SOCK_CLOEXEC);
      assert.notEqual(conn, -1, "the paused server accepted a connection");
      sys.close(conn);
      waiting.destroy();
      assert.equal(resumeAccepting(info), true);
      assert.equal(resumeAccepting(info), false, "already registered");
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
    });
  });

  test("pauseSocket() stops every reactor accepting on the socket; resumeSocket() restores them", async () => {
    await withServer(first, async (native, ours) => {
      const info = transplant({ throwaway: native.throwaway, fd: ours.fd });
      const paused = pauseSocket(ours.fd);
      // Deno's duplicated epoll fd lists the one registration twice: removed once.
      assert.equal(paused.registrations.length, 1);
      assert.equal(paused.registrations[0].tfd, info.serverFd);
      assert.deepEqual(epollRegistrationsOf(info.serverFd, info.inode), []);
      const waiting = await connectClient(ours.port);
      waiting.send(native.payload);
      await new Promise((r) => setTimeout(r, 200));
      const conn = sys.accept4(ours.fd, C.SOCK_CLOEXEC);
      assert.notEqual(conn, -1, "a paused reactor accepted a connection");
      sys.close(conn);
      waiting.destroy();
      resumeSocket(paused);
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
    });
  });

  test("transplant() refuses what it cannot move, with TRANSPLANT_UNSUPPORTED, changing nothing", async () => {
    await withServer(first, async (native, ours) => {
      const opts = (o: Partial<TransplantOptions>): TransplantOptions => ({
        throwaway: native.throwaway,
        fd: ours.fd,
        ...o,
      });
      // Nothing listens at the throwaway address.
      assertUnsupported(
        () => transplant(opts({ throwaway: local(1) })),
        /one listening socket at 127\.0\.0\.1:1, found 0/,
      );
      // Our fd is not a socket / not listening / of another family.
      const [r, w] = sys.pipe2(C.O_CLOEXEC);
      assertUnsupported(() => transplant(opts({ fd: r })), /not an open socket/);
      sys.close(r);
      sys.close(w);
      const idle = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
      assertUnsupported(() => transplant(opts({ fd: idle })), /is not listening/);
      sys.close(idle);
      const unix = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
      const { encodeUnix } = await import("../src/ffi/sockaddr.ts");
      sys.bind(unix, encodeUnix(`@instar-transplant-test-${sys.getpid()}`));
      sys.listenFd(unix, 8);
      assertUnsupported(() => transplant(opts({ fd: unix })), /address family 1/);
      sys.close(unix);

      const [serverFd] = listeningFdsAt(native.throwaway);
      const [reg] = epollRegistrationsOf(serverFd, socketInode(serverFd)!);
      // An event mask instar does not know.
      // (The kernel always adds EPOLLERR | EPOLLHUP: 0x80000001 reads back as 0x80000019.)
      sys.epollCtl(reg.epfd, C.EPOLL_CTL_MOD, serverFd, 0x80000001, reg.data);
      try {
        assertUnsupported(
          () => transplant(opts({})),
          /event mask 0x80000019 is not one instar knows/,
        );
      } finally {
        sys.epollCtl(reg.epfd, C.EPOLL_CTL_MOD, serverFd, reg.events, reg.data);
      }
      // A caller that knows no mask (what a changed reactor looks like), or other masks.
      const mask = reg.events.toString(16);
      assertUnsupported(
        () => transplant(opts({ knownMasks: {} })),
        new RegExp(`event mask 0x${mask} is not one instar knows for ${RUNTIME} \\(none\\)`),
      );
      const others = KNOWN_EVENT_MASKS[RUNTIME === "deno" ? "bun" : "deno"];
      const otherList = Object.keys(others).map((k) => "0x" + Number(k).toString(16)).join(", ");
      assertUnsupported(
        () => transplant(opts({ knownMasks: others })),
        new RegExp(
          `event mask 0x${mask} is not one instar knows for ${RUNTIME} \\(${otherList}\\)`,
        ),
      );
      // A second epoll instance watching the server's fd, seen by kcmp and by the probe.
      const other = sys.epollCreate(C.O_CLOEXEC);
      sys.epollCtl(other, C.EPOLL_CTL_ADD, serverFd, 0, 0n);
      try {
        for (const dedupe of ["kcmp", "probe"] as const) {
          assertUnsupported(
            () => transplant(opts({ dedupe })),
            /registered with 2 epoll instances/,
          );
        }
      } finally {
        sys.close(other);
      }
      // After all the refusals the server still answers on its throwaway port.
      assert.equal(socketInode(serverFd), socketInode(listeningFdsAt(native.throwaway)[0]));
      assert.ok((await exchange(native.throwaway.port, native.payload)).includes(native.expect));
      // And can still be transplanted, under a reactor the caller names.
      const info = transplant(opts({ knownMasks: { [reg.events]: "the test's reactor" } }));
      assert.equal(info.reactor, "the test's reactor");
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
    });
  });

  test("this runtime's reactor is known by default, from a table no caller can change", async () => {
    await withServer(first, async (native, ours) => {
      const info = transplant({ throwaway: native.throwaway, fd: ours.fd });
      assert.equal(info.reactor, KNOWN_EVENT_MASKS[RUNTIME][info.events]);
      assert.match(info.reactor, RUNTIME === "deno" ? /^mio/ : /^uSockets/);
      assert.ok((await exchange(ours.port, native.payload)).includes(native.expect));
    });
    const table = KNOWN_EVENT_MASKS as Record<string, Record<number, string>>;
    assert.throws(() => (table[RUNTIME] = {}), TypeError);
    assert.throws(() => delete table.bun, TypeError);
    assert.throws(() => (table[RUNTIME][0x1] = "another reactor"), TypeError);
    assert.throws(() => delete table.deno[0x8000201d], TypeError);
    assert.equal(Object.keys(table[RUNTIME]).length, 1);
  });
});
