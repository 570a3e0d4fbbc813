import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as net from "node:net";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { encodeUnix } from "../src/ffi/sockaddr.ts";
import { InstarError } from "../src/errors.ts";
import { QUIET_MS } from "../src/serve/options.ts";
import {
  type InstarServeOptions,
  type PortableServeOptions,
  serve,
  type ServeOptions,
  type Server,
  type UpgraderServeOptions,
} from "../src/serve/serve.ts";
import { Upgrader } from "../src/lifecycle/upgrader.ts";
import { listen } from "../src/net/listener.ts";
import {
  connectClient,
  exchange,
  httpGet,
  leakedSockets,
  onPath,
  openFds,
  rawListen,
  ROOT,
  RUNTIME,
  runtimeCmd,
  skipIf,
} from "./support/helpers.ts";

const CHUNKS = 8;

/**
 * Bun.serve's options: deno check checks this file with Deno's types, under which they are
 * not serve()'s, so they are written against the portable type and cast.
 */
const bunOptions = (o: PortableServeOptions & InstarServeOptions) => o as ServeOptions;

/** Why this machine cannot listen on ::1, or false when it can. */
const noIpv6Loopback = await rawListen("::1").then(
  ({ fd }) => (sys.close(fd), false as const),
  (err: Error) => `cannot listen on ::1 here (${err.message})`,
);

/** Deno.upgradeWebSocket, typed just enough (this file also runs under Bun). */
type Upgrade = (req: Request) => { socket: WebSocket; response: Response };

/** The test app: "/" says hello and who asked, "/stream" streams slowly, "/ws" echoes. */
function app(
  fd: number | { fd: number },
  mode: "transplant" | "fallback" | "auto",
  extra: Record<string, unknown> = {},
): Promise<Server> {
  const stream = () => {
    let i = 0;
    return new Response(
      new ReadableStream({
        async pull(c) {
          await new Promise((r) => setTimeout(r, 50));
          c.enqueue(new TextEncoder().encode(`chunk${i}\n`));
          if (++i === CHUNKS) c.close();
        },
      }),
    );
  };
  if (RUNTIME === "deno") {
    const upgrade = (globalThis as unknown as { Deno: { upgradeWebSocket: Upgrade } }).Deno
      .upgradeWebSocket;
    return serve(fd, {
      mode,
      onListen() {},
      ...extra,
      handler(req, info) {
        const path = new URL(req.url).pathname;
        if (path === "/stream") return stream();
        if (path === "/ws") {
          const { socket, response } = upgrade(req);
          socket.onmessage = (e) => socket.send("echo:" + e.data);
          return response;
        }
        return new Response(`hello ${info.remoteAddr.hostname}:${info.remoteAddr.port}`);
      },
    });
  }
  type BunView = {
    port: number;
    upgrade(req: Request): boolean;
    requestIP(req: Request): { address: string; port: number } | null;
  };
  return serve(
    fd,
    bunOptions({
      mode,
      ...extra,
      fetch(req: Request, server: BunView) {
        const path = new URL(req.url).pathname;
        if (path === "/stream") return stream();
        if (path === "/ws") {
          return server.upgrade(req) ? undefined : new Response("no", { status: 400 });
        }
        // requestIP() is null for a Unix socket client.
        const ip = server.requestIP(req);
        return new Response(`hello ${ip?.address}:${ip?.port} on ${server.port}`);
      },
      websocket: {
        message(ws: { send(m: string): void }, m: string) {
          ws.send("echo:" + m);
        },
      },
    }),
  );
}

function body(raw: string): string {
  return raw.split("\r\n\r\n").slice(1).join("\r\n\r\n");
}

/** Runs `fn` with our own listening socket; checks no socket leaked once it is closed. */
async function withSocket<T>(fn: (ours: { fd: number; port: number }) => Promise<T>): Promise<T> {
  const before = openFds();
  const ours = await rawListen();
  let result: T;
  try {
    result = await fn(ours);
  } finally {
    sys.close(ours.fd);
  }
  assert.deepEqual(await leakedSockets(before), [], "leaked sockets");
  return result;
}

/** Two GETs on one keep-alive connection, `between()` called between them; the raw answers. */
function keepAliveExchange(
  port: number,
  between: () => void,
): Promise<{ first: string; second: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const req = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let got = "", first = "";
    s.setEncoding("latin1");
    s.on("connect", () => s.write(req));
    s.on("data", (d: string) => {
      got += d;
      const end = got.indexOf("\r\n\r\n");
      const len = Number(/content-length:\s*(\d+)/i.exec(got)?.[1] ?? -1);
      if (end < 0 || len < 0 || got.length < end + 4 + len) return;
      if (first) {
        s.destroy();
        return resolve({ first, second: got });
      }
      first = got;
      got = "";
      between();
      s.write(req);
    });
    s.on("error", reject);
  });
}

for (const mode of ["transplant", "fallback"] as const) {
  describe(`serve() under ${RUNTIME}, ${mode} mode`, () => {
    test("once it stops accepting, responses on a kept-alive connection carry Connection: close", async () => {
      await withSocket(async (ours) => {
        const server = await app({ fd: ours.fd }, mode);
        try {
          const r = await keepAliveExchange(ours.port, () => server.pauseAccepting());
          assert.doesNotMatch(r.first, /connection:\s*close/i, "not before: keep-alive as usual");
          assert.match(r.second, /^HTTP\/1\.1 200/);
          // The client opens its next connection elsewhere (Deno keeps the socket open until
          // its graceful shutdown closes it idle; Bun closes it after the response).
          assert.match(r.second, /\r\nconnection:\s*close\r\n/i);
        } finally {
          await server.shutdown();
        }
      });
    });

    test("shutdown() waits for a quiet second only while the server holds a connection", async () => {
      const timedShutdown = async (server: Server) => {
        const t0 = performance.now();
        await server.shutdown();
        return performance.now() - t0;
      };
      // An idle keep-alive connection: it might still carry a request, so the quiet wait runs.
      const held = await withSocket(async (ours) => {
        const server = await app({ fd: ours.fd }, mode);
        const s = net.connect({ host: "127.0.0.1", port: ours.port });
        try {
          await new Promise<void>((resolve, reject) => {
            let got = "";
            s.setEncoding("latin1");
            s.on("data", (d: string) => (got += d, /\r\n\r\n[^]*hello/.test(got) && resolve()));
            s.on("error", reject);
            s.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
          });
          return await timedShutdown(server);
        } finally {
          s.destroy();
        }
      });
      // None: nothing to answer or to close.
      const none = await withSocket(async (ours) =>
        timedShutdown(await app({ fd: ours.fd }, mode))
      );
      assert.ok(held >= QUIET_MS, `with an idle connection: ${held.toFixed(0)} ms`);
      assert.ok(none < QUIET_MS - 100, `with no connection: ${none.toFixed(0)} ms`);
    });

    for (const idleConnections of ["close-when-quiet", "keep"] as const) {
      test(`at the fd limit, shutdown() still lets a request in flight finish (idleConnections ${idleConnections})`, async () => {
        await withSocket(async (ours) => {
          const server = await app({ fd: ours.fd }, mode, { idleConnections });
          const c = await connectClient(ours.port);
          // A streamed answer: in flight for 8 × 50 ms, long after the fds run out.
          const answer = c.request(httpGet("/stream"));
          await new Promise((r) => setTimeout(r, 60));
          const limit = sys.getNofileLimit();
          const filler: number[] = [];
          try {
            sys.setNofileLimit({ ...limit, soft: Math.min(limit.soft, 1024) });
            try {
              for (;;) filler.push(sys.dupCloexec(0));
            } catch (err) {
              assert.equal((err as { code?: string }).code, "EMFILE");
            }
            // The drain cannot read /proc/self/fd now: what it does then is the subject.
            assert.throws(() => openFds(), { code: "EMFILE" });
            const shutdown = server.shutdown();
            assert.match(await answer, /chunk7\n/, "the streamed answer ends in full");
            await shutdown;
          } finally {
            try {
              for (const fd of filler) sys.close(fd);
            } finally {
              sys.setNofileLimit(limit);
            }
          }
        });
      });
    }

    test("answers requests and the connections queued before serve(), reporting the real addresses", async () => {
      await withSocket(async (ours) => {
        const queued = await Promise.all([1, 2, 3].map(() => connectClient(ours.port)));
        const server = await app({ fd: ours.fd }, mode);
        try {
          assert.equal(server.mode, mode);
          assert.equal(server.port, ours.port);
          assert.equal(server.url.href, `http://127.0.0.1:${ours.port}/`);
          const answers = await Promise.all(queued.map((c) => c.request(httpGet())));
          for (const a of answers) assert.match(body(a), /^hello 127\.0\.0\.1:\d+/);
          // The handler sees the client's own address, even behind the proxy.
          const c = await connectClient(ours.port);
          const a = body(await c.request(httpGet()));
          assert.match(a, new RegExp(`^hello 127\\.0\\.0\\.1:${c.localPort}\\b`));
          if (RUNTIME === "bun") {
            assert.ok(a.endsWith(` on ${ours.port}`), a);
            assert.equal((server.native as { port: number }).port, ours.port);
          }
        } finally {
          await server.shutdown();
        }
      });
    });

    test("a streaming response in flight during shutdown() completes", async () => {
      await withSocket(async (ours) => {
        const server = await app(ours.fd, mode);
        const res = await fetch(`http://127.0.0.1:${ours.port}/stream`);
        const reader = res.body!.getReader();
        const first = await reader.read();
        assert.equal(new TextDecoder().decode(first.value), "chunk0\n");
        let shutDown = false;
        const shutdown = server.shutdown().then(() => (shutDown = true));
        let text = "chunk0\n";
        let finishedMidStream = false;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          text += new TextDecoder().decode(value);
          // Until the last chunk the response is still in flight.
          if (!text.endsWith(`chunk${CHUNKS - 1}\n`)) finishedMidStream ||= shutDown;
        }
        assert.equal(text, Array.from({ length: CHUNKS }, (_, i) => `chunk${i}\n`).join(""));
        assert.equal(finishedMidStream, false, "shutdown() finished while a response streamed");
        await shutdown;
      });
    });

    test("a WebSocket keeps exchanging messages during the drain until it closes", async () => {
      await withSocket(async (ours) => {
        const server = await app(ours.fd, mode);
        const ws = new WebSocket(`ws://127.0.0.1:${ours.port}/ws`);
        const received: string[] = [];
        let waiter: (() => void) | undefined;
        ws.onmessage = (e) => {
          received.push(String(e.data));
          waiter?.();
        };
        const closed = new Promise<number>((r) => (ws.onclose = (e) => r(e.code)));
        await new Promise((r, j) => {
          ws.onopen = r;
          ws.onerror = j;
        });
        const roundTrip = async (m: string) => {
          const got = new Promise<void>((r) => (waiter = r));
          ws.send(m);
          await got;
          assert.equal(received.at(-1), "echo:" + m);
        };
        await roundTrip("before");
        let shutDown = false;
        const shutdown = server.shutdown().then(() => (shutDown = true));
        for (let i = 0; i < 5; i++) {
          await new Promise((r) => setTimeout(r, 60));
          await roundTrip(`during ${i}`);
        }
        assert.equal(shutDown, false, "shutdown() finished while a WebSocket was open");
        // New connections are not accepted while draining: they wait on the socket.
        const waiting = await connectClient(ours.port);
        waiting.send(httpGet());
        ws.close(1000);
        await closed;
        await shutdown;
        const conn = sys.accept4(ours.fd, C.SOCK_CLOEXEC);
        assert.notEqual(conn, -1, "the draining server accepted a new connection");
        sys.close(conn);
        waiting.destroy();
      });
    });

    test("drainTimeoutMs closes a WebSocket that stays open", async () => {
      await withSocket(async (ours) => {
        const server = await app(ours.fd, mode, { drainTimeoutMs: 300 });
        const ws = new WebSocket(`ws://127.0.0.1:${ours.port}/ws`);
        const closed = new Promise<void>((r) => (ws.onclose = () => r()));
        await new Promise((r, j) => {
          ws.onopen = r;
          ws.onerror = j;
        });
        await server.shutdown();
        await closed; // the client sees the close (a hung test here means it never came)
      });
    });

    test("pauseAccepting() leaves connections queued; resumeAccepting() serves them", async () => {
      await withSocket(async (ours) => {
        const server = await app(ours.fd, mode);
        try {
          assert.equal(server.pauseAccepting(), true);
          assert.equal(server.pauseAccepting(), false);
          const c = await connectClient(ours.port);
          const answer = c.request(httpGet());
          await new Promise((r) => setTimeout(r, 150));
          assert.equal(server.resumeAccepting(), true);
          assert.match(body(await answer), /^hello/);
          assert.match(body(await exchange(ours.port, httpGet())), /^hello/);
        } finally {
          await server.shutdown();
        }
      });
    });

    test("a server process that shuts down exits by itself, leaving no socket open", async () => {
      const child = spawn(
        runtimeCmd(RUNTIME, join(ROOT, "tests", "serve_child.ts"), [mode])[0],
        runtimeCmd(RUNTIME, join(ROOT, "tests", "serve_child.ts"), [mode]).slice(1),
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      try {
        let out = "";
        const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
        const port = await new Promise<number>((resolve, reject) => {
          child.stdout!.on("data", (d) => {
            out += d;
            const m = /port=(\d+)/.exec(out);
            if (m) resolve(Number(m[1]));
          });
          child.on("exit", () => reject(new Error(`child exited early: ${out}`)));
        });
        assert.match(body(await exchange(port, httpGet())), /^hello/);
        assert.match(body(await exchange(port, httpGet("/shutdown"))), /^hello/);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const code = await Promise.race([
          exited,
          new Promise<string>((r) => (timer = setTimeout(() => r("still running"), 20_000))),
        ]);
        clearTimeout(timer);
        assert.equal(code, 0, out);
        assert.match(out, /leaked=\[\]/);
      } finally {
        if (child.exitCode === null) child.kill("SIGKILL");
      }
    });
  });
}

if (RUNTIME === "bun") {
  describe("serve() under bun, Bun.serve options", () => {
    test("routes (static, with params, per method) are served in both modes", async () => {
      for (const mode of ["transplant", "fallback"] as const) {
        await withSocket(async (ours) => {
          const server = await serve(
            ours.fd,
            bunOptions({
              mode,
              routes: {
                "/health": new Response("ok"),
                "/users/:id": (req: Request & { params: { id: string } }) =>
                  new Response(`user ${req.params.id}`),
                "/items": { GET: () => new Response("list"), POST: () => new Response("made") },
              },
              fetch: () => new Response("fallthrough", { status: 404 }),
            }),
          );
          try {
            const get = async (path: string, method = "GET") =>
              await (await fetch(`http://127.0.0.1:${ours.port}${path}`, { method })).text();
            assert.equal(await get("/health"), "ok");
            assert.equal(await get("/users/42"), "user 42");
            assert.equal(await get("/items"), "list");
            assert.equal(await get("/items", "POST"), "made");
            assert.equal(await get("/nothing"), "fallthrough");
          } finally {
            await server.shutdown();
          }
        });
      }
    });
  });
}

describe(`serve() under ${RUNTIME}, TLS`, () => {
  const name = "serves HTTPS with the runtime's TLS options in both modes";
  // The certificate comes from openssl; without it there is nothing to serve.
  const noOpenssl = !onPath("openssl") && "openssl is not on the PATH (Debian package openssl)";
  test(name, skipIf(noOpenssl, name), async () => {
    const dir = mkdtempSync(join(tmpdir(), "instar-tls-"));
    try {
      const args = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 " +
        "-addext subjectAltName=IP:127.0.0.1";
      const made = spawnSync("openssl", [
        ...args.split(" "),
        ...["-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")],
      ], { encoding: "utf8" });
      assert.equal(made.status, 0, `openssl req failed: ${made.error ?? made.stderr}`);
      const cert = readFileSync(join(dir, "cert.pem"), "utf8");
      const key = readFileSync(join(dir, "key.pem"), "utf8");
      for (const mode of ["transplant", "fallback"] as const) {
        await withSocket(async (ours) => {
          const hello = () => new Response("secure hello");
          const server = RUNTIME === "bun"
            ? await serve(ours.fd, bunOptions({ mode, tls: { cert, key }, fetch: hello }))
            : await serve(ours.fd, { mode, cert, key, onListen() {}, handler: hello });
          try {
            assert.equal(server.mode, mode);
            assert.equal(server.url.href, `https://127.0.0.1:${ours.port}/`);
            const text = await new Promise<string>((resolve, reject) => {
              https.get({ host: "127.0.0.1", port: ours.port, ca: cert, agent: false }, (r) => {
                let t = "";
                r.on("data", (d) => (t += d)).on("end", () => resolve(t)).on("error", reject);
              }).on("error", reject);
            });
            assert.equal(text, "secure hello");
          } finally {
            await server.shutdown();
          }
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe(`serve() under ${RUNTIME}, handing the socket over`, () => {
  for (const mode of ["transplant", "fallback"] as const) {
    test(`shutdown() of a ${mode} server under load loses no connection to the server that stays`, async () => {
      const { runLoad } = await import("./support/load_client.ts");
      await withSocket(async (ours) => {
        const old = await app(ours.fd, mode);
        const next = await app(ours.fd, "transplant");
        // One connection per request: every connection either gets a response or is lost.
        const load = runLoad({
          port: ours.port,
          connections: 8,
          durationMs: 2500,
          keepAlive: false,
        });
        await new Promise((r) => setTimeout(r, 800));
        await old.shutdown();
        const result = await load;
        await next.shutdown();
        assert.equal(result.failed, 0, JSON.stringify(result.samples));
        assert.ok(result.ok > 50, `only ${result.ok} requests answered`);
      });
    });
  }
});

describe(`serve() under ${RUNTIME}, choosing the mode`, () => {
  test("a Unix socket is served by transplant, and the throwaway socket file is removed", async () => {
    const before = openFds();
    const path = `@instar-serve-test-${sys.getpid()}`;
    const fd = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
    sys.bind(fd, encodeUnix(path));
    sys.listenFd(fd, 16);
    const tmp = () =>
      readdirSync(tmpdir()).filter((f) => f.startsWith(`instar-serve-${process.pid}-`));
    const server = await app(fd, "auto");
    try {
      assert.equal(server.mode, "transplant");
      assert.deepEqual(server.addr, { transport: "unix", path });
      assert.deepEqual(tmp(), []);
      const answer = await new Promise<string>((resolve, reject) => {
        let text = "";
        // node:net spells the abstract namespace with a leading NUL.
        const s = net.connect({ path: "\0" + path.slice(1) }, () => s.write(httpGet()));
        s.on("data", (d) => (text += d)).on("error", reject).on("close", () => resolve(text));
      });
      assert.match(body(answer), /^hello/);
    } finally {
      await server.shutdown();
      sys.close(fd);
    }
    assert.deepEqual(await leakedSockets(before), []);
  });

  const unknownReactor =
    "auto mode falls back when the reactor is not one instar knows, and says why";
  test(unknownReactor, {}, async () => {
    // What a runtime upgrade that changed its reactor would look like: no mask is known.
    await withSocket(async (ours) => {
      const reasons: InstarError[] = [];
      const server = await app(ours.fd, "auto", {
        knownMasks: {},
        onFallback: (e: InstarError) => reasons.push(e),
      });
      try {
        assert.equal(server.mode, "fallback");
        assert.equal(reasons.length, 1);
        assert.equal(reasons[0].code, "TRANSPLANT_UNSUPPORTED");
        assert.match(reasons[0].message, /event mask 0x[0-9a-f]+ is not one instar knows/);
        assert.equal(server.fallbackReason, reasons[0]);
        assert.match(body(await exchange(ours.port, httpGet())), /^hello/);
      } finally {
        await server.shutdown();
      }
    });
  });

  const v6name = "serves an IPv6 socket by transplant";
  // Containers without IPv6 loopback cannot run this.
  test(v6name, skipIf(noIpv6Loopback, v6name), async () => {
    const v6 = await rawListen("::1");
    const server = await app(v6.fd, "auto");
    try {
      assert.equal(server.mode, "transplant");
      assert.equal(server.url.href, `http://[::1]:${v6.port}/`);
      assert.match(body(await exchange(v6.port, httpGet(), { host: "::1" })), /^hello ::1:\d+/);
    } finally {
      await server.shutdown();
      sys.close(v6.fd);
    }
  });

  test("serve() on a Listener takes its socket over: HTTP answers, the listener accepts nothing", async () => {
    const listener = await listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as { port: number }).port;
    let accepted = 0;
    (async () => {
      for await (const conn of listener) {
        accepted++;
        conn.close();
      }
    })();
    const server = await app(listener, "auto");
    try {
      assert.equal(server.port, port);
      // Concurrent connections: both reactors would race for them if the listener still accepted.
      const replies = await Promise.all(
        Array.from({ length: 40 }, () => exchange(port, httpGet()).then(body, (e) => String(e))),
      );
      for (const r of replies) assert.match(r, /^hello 127\.0\.0\.1:\d+/);
      assert.equal(accepted, 0);
    } finally {
      await server.shutdown();
      listener.close();
    }
  });

  const refuses = "transplant mode refuses with TRANSPLANT_UNSUPPORTED and leaves nothing running";
  test(refuses, {}, async () => {
    await withSocket(async (ours) => {
      await assert.rejects(app(ours.fd, "transplant", { knownMasks: {} }), (err: unknown) => {
        assert.ok(err instanceof InstarError);
        assert.equal(err.code, "TRANSPLANT_UNSUPPORTED");
        return true;
      });
      // withSocket checks that the throwaway server's socket is gone too.
    });
  });

  test("serve() rejects a bad target or mode with INVALID_ARGUMENT", async () => {
    await assert.rejects(app(-1, "auto"), { code: "INVALID_ARGUMENT" });
    await withSocket(async (ours) => {
      await assert.rejects(app(ours.fd, "sideways" as "auto"), { code: "INVALID_ARGUMENT" });
    });
  });
});

describe(`serve() under ${RUNTIME}, one options object`, () => {
  const hello = () => new Response("hello");
  const get = async (port: number, path = "/") => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, text: await res.text() };
  };

  if (RUNTIME === "deno") {
    test("`fetch` is the handler on Deno too, called with the request and Deno's info", async () => {
      await withSocket(async (ours) => {
        const server = await serve(ours.fd, {
          onListen() {},
          fetch: (_req, info) => new Response(`from ${info.remoteAddr.hostname}`),
        });
        try {
          assert.deepEqual(await get(ours.port), { status: 200, text: "from 127.0.0.1" });
        } finally {
          await server.shutdown();
        }
      });
    });

    test("Deno's onError answers for a handler that throws", async () => {
      await withSocket(async (ours) => {
        const errors: unknown[] = [];
        const server = await serve(ours.fd, {
          onListen() {},
          handler(req) {
            if (new URL(req.url).pathname === "/boom") throw new Error("boom");
            return new Response("fine");
          },
          onError(err) {
            errors.push(err);
            return new Response(`oops: ${(err as Error).message}`, { status: 503 });
          },
        });
        try {
          assert.deepEqual(await get(ours.port, "/boom"), { status: 503, text: "oops: boom" });
          assert.deepEqual(await get(ours.port), { status: 200, text: "fine" });
          assert.equal(errors.length, 1);
        } finally {
          await server.shutdown();
        }
      });
    });

    for (const mode of ["transplant", "fallback"] as const) {
      test(`Deno's onListen gets the address really served, not the throwaway port (${mode})`, async () => {
        await withSocket(async (ours) => {
          const heard: unknown[] = [];
          const server = await serve(ours.fd, {
            mode,
            handler: hello,
            onListen: (a) => heard.push(a),
          });
          try {
            assert.deepEqual(heard, [{ transport: "tcp", hostname: "127.0.0.1", port: ours.port }]);
          } finally {
            await server.shutdown();
          }
        });
      });
    }
  }

  if (RUNTIME === "bun") {
    test("`handler` is the handler on Bun too, called with the request and Bun's server", async () => {
      await withSocket(async (ours) => {
        const server = await serve(
          ours.fd,
          bunOptions({
            handler: (_req: Request, server: { port: number }) => new Response(`on ${server.port}`),
          }),
        );
        try {
          assert.deepEqual(await get(ours.port), { status: 200, text: `on ${ours.port}` });
        } finally {
          await server.shutdown();
        }
      });
    });

    test("Bun's error answers for a handler that throws", async () => {
      await withSocket(async (ours) => {
        const server = await serve(
          ours.fd,
          bunOptions({
            fetch(req: Request) {
              if (new URL(req.url).pathname === "/boom") throw new Error("boom");
              return new Response("fine");
            },
            error: (err: Error) => new Response(`oops: ${err.message}`, { status: 503 }),
          }),
        );
        try {
          assert.deepEqual(await get(ours.port, "/boom"), { status: 503, text: "oops: boom" });
          assert.deepEqual(await get(ours.port), { status: 200, text: "fine" });
        } finally {
          await server.shutdown();
        }
      });
    });
  }

  test("both `fetch` and `handler`, or neither, is INVALID_ARGUMENT naming them", async () => {
    await withSocket(async (ours) => {
      const both = { fetch: hello, handler: hello } as unknown as ServeOptions;
      await assert.rejects(serve(ours.fd, both), {
        code: "INVALID_ARGUMENT",
        message: /both `fetch` and `handler`/,
      });
      const neither = { mode: "auto" } as unknown as ServeOptions;
      await assert.rejects(serve(ours.fd, neither), {
        code: "INVALID_ARGUMENT",
        message: /no request handler; pass `fetch: \(req\) => Response` \(or `handler`/,
      });
      // The socket was not touched: a good call still serves on it.
      const server = await serve(ours.fd, { fetch: hello, onListen() {} });
      assert.equal((await get(ours.port)).text, "hello");
      await server.shutdown();
    });
  });

  test("the old (fd, options, handler) form and a bare function are INVALID_ARGUMENT showing the one-object form", async () => {
    await withSocket(async (ours) => {
      const old = serve as unknown as (...args: unknown[]) => Promise<Server>;
      const oneObject =
        /serve\(fd, \{ fetch: \(req\) => new Response\("hi"\), \.\.\.otherOptions \}\)/;
      await assert.rejects(old(ours.fd, {}, hello), {
        code: "INVALID_ARGUMENT",
        message: oneObject,
      });
      await assert.rejects(old(ours.fd, hello), { code: "INVALID_ARGUMENT", message: oneObject });
    });
  });

  test("where to listen is refused by serve(fd): the fd's socket decides", async () => {
    await withSocket(async (ours) => {
      const withPort = { port: 8080, fetch: hello } as unknown as ServeOptions;
      await assert.rejects(serve(ours.fd, withPort), {
        code: "INVALID_ARGUMENT",
        message: /`port`.*up\.serve\(\) or listen\(\)/,
      });
    });
  });

  test("up.serve() and up.serveNode() refuse drainTimeoutMs, naming the Upgrader's drainTimeout, and open no socket", async () => {
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    try {
      const before = openFds();
      const message = /drainTimeoutMs is 5000; .*Upgrader\.create\(\{ drainTimeout \}\)/;
      const options = { hostname: "127.0.0.1", port: 0, drainTimeoutMs: 5000 };
      await assert.rejects(
        up.serve({ ...options, fetch: hello } as unknown as UpgraderServeOptions),
        { name: "InstarError", code: "INVALID_ARGUMENT", message: /^up\.serve\(\) option/ },
      );
      await assert.rejects(up.serve({ ...options, fetch: hello } as never), { message });
      const node = http.createServer();
      await assert.rejects(up.serveNode(node, options as never), {
        name: "InstarError",
        code: "INVALID_ARGUMENT",
        message: /^up\.serveNode\(\) option/,
      });
      await assert.rejects(up.serveNode(node, options as never), { message });
      assert.deepEqual(await leakedSockets(before), []);
      assert.deepEqual(up.addrs(), []);
    } finally {
      await up.ready();
      up.stop();
      await up.drained;
    }
  });

  test("up.serve() in the old (listen, options, handler) form is INVALID_ARGUMENT and opens no socket", async () => {
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    try {
      const before = openFds();
      const old = up.serve.bind(up) as unknown as (...args: unknown[]) => Promise<Server>;
      await assert.rejects(old({ hostname: "127.0.0.1", port: 0 }, {}, hello), {
        code: "INVALID_ARGUMENT",
        message: /up\.serve\(\{ port: 8080, fetch: \(req\) => new Response\("hi"\)/,
      });
      await assert.rejects(up.serve({ hostname: "127.0.0.1", port: 0 } as UpgraderServeOptions), {
        code: "INVALID_ARGUMENT",
        message: /no request handler/,
      });
      assert.deepEqual(await leakedSockets(before), []);
      const server = await up.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: hello,
        onListen() {},
      });
      assert.equal((await get(server.port)).text, "hello");
    } finally {
      await up.ready();
      up.stop();
      await up.drained;
    }
  });
});
