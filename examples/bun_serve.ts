// @ts-nocheck -- Bun only. `deno check` checks examples/ with Deno's types, under which Bun's
// options are not up.serve()'s; scripts/check_bun_types.sh checks this file with bun-types.
/**
 * Bun.serve with its own options (fetch, routes, websocket, error), at
 * Bun.serve's speed, on a socket that survives upgrades. Bun only.
 *
 * `up.serve()` takes what `Bun.serve` takes, in one object, typed with Bun's
 * own types where bun-types is loaded: `fetch(req, server)`, `routes`,
 * `websocket`, `error`, `tls`, …; plus where to listen (`hostname`, `port`)
 * and instar's options (`mode`). `server.port` is the port really served.
 *
 *   bun examples/bun_serve.ts --port 8080 --pid-file app.pid
 *   kill -HUP $(cat app.pid)   # the new version takes over; open WebSockets stay on this one
 *
 * `GET /boom` throws: `error` answers 500 `oops: boom`.
 *
 * Flags: see examples/_lifecycle.ts.
 *
 * @module
 */
import process from "node:process";
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode } = await startGeneration("bun_serve");

await up.serve({
  hostname,
  port,
  mode: serveMode,
  routes: { "/health": new Response("ok\n") },
  fetch(req, server) {
    if (new URL(req.url).pathname === "/boom") throw new Error("boom");
    if (server.upgrade(req)) return undefined;
    return new Response(
      `hello from ${process.pid} (generation ${up.generation}) on port ${server.port}\n`,
    );
  },
  websocket: {
    message(ws, m) {
      ws.send(m);
    },
  },
  error: (err) => new Response(`oops: ${err.message}\n`, { status: 500 }),
});

await up.ready();
