// HTTP/2 and the close spread: a node:http2 server through serveNode() gets GOAWAY to its
// sessions a few at a time over the drain's closeSpread window (the server's own close
// would send it to every idle session at once, in both runtimes), and all at once without
// a window. Two servers drained side by side, 20 h2c clients each. A server answering on
// `stream` alone keeps that one handler through a drain (no `request` listener turns on the
// compatibility API): a slow stream in flight completes whole, a stream opened while draining
// is answered once and without `Connection: close`, and the client gets GOAWAY.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import { close as closeFd } from "../src/ffi/mod.ts";
import { openSocket } from "../src/net/listener.ts";
import { drainAlone } from "../src/net/drain.ts";
import { startServeNode } from "../src/serve/serve_node.ts";
import type { NodeHttpServer } from "../src/serve/node_types.ts";
import { cleanupAfterTests, RUNTIME } from "./support/helpers.ts";

const left = cleanupAfterTests();
const CLIENTS = 20;
const WINDOW_MS = 1_000;

/** A node:http2 server on a fresh loopback socket through startServeNode(), with `n` clients that each had an answer. */
async function h2Server(n: number) {
  const sock = await openSocket({ hostname: "127.0.0.1", port: 0 });
  left.sockets.push({ close: () => closeFd(sock.fd) });
  const h2 = http2.createServer();
  h2.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.respond({ ":status": 200 });
    stream.end("hi");
  });
  const { drain } = await startServeNode(sock.fd, h2 as unknown as NodeHttpServer);
  const port = (sock.addr as { port: number }).port;
  const clients = Array.from({ length: n }, () => http2.connect(`http://127.0.0.1:${port}`));
  left.sockets.push({ close: () => clients.forEach((c) => c.destroy()) });
  const answers = await Promise.all(clients.map((c) => get(c)));
  assert.deepEqual(answers, Array(n).fill("hi"));
  return { drain, addr: sock.addr, clients };
}

function get(c: http2.ClientHttp2Session): Promise<string> {
  return answer(c.request({ ":path": "/" })).then((a) => a.body);
}

/** The status, headers and body of a request's answer. */
function answer(r: http2.ClientHttp2Stream): Promise<{ headers: object; body: string }> {
  return new Promise((resolve, reject) => {
    let headers = {};
    let body = "";
    r.on("response", (h) => headers = h);
    r.on("data", (d) => body += d);
    r.on("end", () => resolve({ headers, body }));
    r.on("error", reject);
    r.end();
  });
}

/** A node:http2 server answering on `stream` only: `/slow` sends "a", then "b" once released. */
async function streamServer() {
  const sock = await openSocket({ hostname: "127.0.0.1", port: 0 });
  left.sockets.push({ close: () => closeFd(sock.fd) });
  const h2 = http2.createServer();
  const errors: string[] = [];
  const answered: number[] = [];
  let release = () => {};
  const released = new Promise<void>((r) => release = r);
  h2.on("session", (s) => s.on("error", (e) => errors.push(`session: ${e.message}`)));
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    answered.push(stream.id!);
    stream.on("error", (e) => errors.push(`stream: ${e.message}`));
    // No `request` listener: the compatibility API stays off (it would add a handler of its own to each stream).
    if (h2.listenerCount("request") > 0) errors.push("a request listener");
    stream.respond({ ":status": 200 });
    // Answered a moment later, as an application that awaits something first.
    if (headers[":path"] !== "/slow") return void setTimeout(() => stream.end("hi"), 10);
    stream.write("a");
    released.then(() => stream.end("b"));
  });
  const { drain } = await startServeNode(sock.fd, h2 as unknown as NodeHttpServer);
  return {
    drain,
    addr: sock.addr,
    port: (sock.addr as { port: number }).port,
    errors,
    answered,
    release,
  };
}

/** When each client heard GOAWAY, in ms from `start` (sorted). */
function goaways(clients: http2.ClientHttp2Session[], start: () => number): Promise<number[]> {
  return Promise.all(clients.map((c) =>
    new Promise<number>((resolve) => {
      c.on("error", () => {});
      c.once("goaway", () => resolve(performance.now() - start()));
    })
  )).then((at) => at.sort((a, b) => a - b));
}

describe(`HTTP/2 and the close spread (${RUNTIME})`, () => {
  test("a node:http2 server's sessions get GOAWAY spread over closeSpread, and at once without it", async () => {
    const [spread, atOnce] = await Promise.all([h2Server(CLIENTS), h2Server(CLIENTS)]);
    let t0 = 0;
    const heard = Promise.all([
      goaways(spread.clients, () => t0),
      goaways(atOnce.clients, () => t0),
    ]);
    t0 = performance.now();
    const o = { timeoutMs: 4 * WINDOW_MS, delayMs: 50 };
    const results = await Promise.all([
      drainAlone("h2 spread", spread.addr, spread.drain, { ...o, closeSpreadMs: WINDOW_MS }),
      drainAlone("h2 at once", atOnce.addr, atOnce.drain, o),
    ]);
    const [spreadAt, onceAt] = await heard;
    const span = (at: number[]) => Math.round(at[at.length - 1] - at[0]);
    console.log(
      `GOAWAY to ${CLIENTS} sessions: spread over ${span(spreadAt)} ms, at once within ${
        span(onceAt)
      } ms`,
    );
    // Batches 10 ms apart from the window's start to its end: the last ones near the end.
    assert.ok(
      span(spreadAt) >= WINDOW_MS / 2,
      `spread over ${span(spreadAt)} ms only: ${spreadAt}`,
    );
    assert.ok(span(spreadAt) <= WINDOW_MS + 300, `spread over ${span(spreadAt)} ms: ${spreadAt}`);
    assert.ok(span(onceAt) < WINDOW_MS / 4, `not at once: ${onceAt}`);
    // Every session closed gracefully within the drain timeout: nothing was cut.
    assert.deepEqual(results.map((r) => [r.forced, r.timedOut]), [[0, false], [0, false]]);
  });

  test("a node:http2 server answering on `stream` alone answers each stream once through a drain, the slow one whole", async () => {
    const h = await streamServer();
    const c = http2.connect(`http://127.0.0.1:${h.port}`);
    left.sockets.push({ close: () => c.destroy() });
    const clientErrors: string[] = [];
    c.on("error", (e) => clientErrors.push(e.message));
    const goaway = new Promise<void>((r) => c.once("goaway", () => r()));
    const slowStream = c.request({ ":path": "/slow" });
    const firstByte = new Promise((r) => slowStream.once("data", r));
    const slow = answer(slowStream);
    await firstByte;
    // drainAlone() pauses at once; its delay leaves time for a stream opened while draining.
    const drained = drainAlone("h2 stream", h.addr, h.drain, { timeoutMs: 4_000, delayMs: 300 });
    const during = await answer(c.request({ ":path": "/" }));
    h.release();
    const [result, slowAnswer] = await Promise.all([drained, slow, goaway]);
    assert.equal(during.body, "hi");
    assert.equal((during.headers as Record<string, unknown>).connection, undefined);
    assert.equal(slowAnswer.body, "ab", "the stream in flight completes whole");
    assert.deepEqual(h.answered, [1, 3], "each stream answered once, by the application");
    assert.deepEqual([h.errors, clientErrors], [[], []]);
    assert.deepEqual(result, { forced: 0, timedOut: false });
  });
});
