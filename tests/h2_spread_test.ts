// HTTP/2 and the close spread: a node:http2 server through serveNode() gets GOAWAY to its
// sessions a few at a time over the drain's closeSpread window (the server's own close
// would send it to every idle session at once, in both runtimes), and all at once without
// a window. Two servers drained side by side, 20 h2c clients each.
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
  return new Promise((resolve, reject) => {
    const r = c.request({ ":path": "/" });
    let body = "";
    r.on("data", (d) => body += d);
    r.on("end", () => resolve(body));
    r.on("error", reject);
    r.end();
  });
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
});
