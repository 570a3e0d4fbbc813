/**
 * Bun.serve with its own options (fetch, routes, websocket), at Bun.serve's
 * speed, on a socket that survives upgrades. Bun only.
 *
 *   bun examples/bun_serve.ts --port 8080 --pid-file app.pid
 *   kill -HUP $(cat app.pid)   # the new version takes over; open WebSockets stay on this one
 *
 * Flags: see examples/_lifecycle.ts.
 *
 * @module
 */
import process from "node:process";
import { startGeneration } from "./_lifecycle.ts";

interface BunServer {
  upgrade(req: Request): boolean;
  port: number;
}

const { up, hostname, port, serveMode } = await startGeneration("bun_serve");

await up.serve({ hostname, port }, {
  mode: serveMode,
  routes: { "/health": new Response("ok\n") },
  fetch(req: Request, server: BunServer) {
    if (server.upgrade(req)) return undefined;
    return new Response(
      `hello from ${process.pid} (generation ${up.generation}) on port ${server.port}\n`,
    );
  },
  websocket: {
    message(ws: { send(m: string | Uint8Array): void }, m: string | Uint8Array) {
      ws.send(m);
    },
  },
});

await up.ready();
