/**
 * Bun.serve (fetch, routes, websocket) on a listening socket instar owns, at
 * Bun.serve's own speed.
 *
 *   bun examples/bun_serve.ts                           # makes a socket on 127.0.0.1:8080
 *   systemd-socket-activate -l 127.0.0.1:8080 bun examples/bun_serve.ts --fd 3
 *
 * SIGTERM or Ctrl-C drains: stop accepting, finish what is in flight (WebSockets
 * included, up to 10 s), exit.
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { serve } from "../src/serve.ts";
import { listenSocket } from "./_socket.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { fd: { type: "string" }, port: { type: "string", default: "8080" } },
});
const fd = values.fd ? Number(values.fd) : listenSocket("127.0.0.1", Number(values.port));

interface BunServer {
  upgrade(req: Request): boolean;
  port: number;
}

const server = await serve(fd, {
  drainTimeoutMs: 10_000,
  onFallback: (why) => console.warn(`serving through the proxy: ${why.message}`),
  routes: { "/health": new Response("ok\n") },
  fetch(req: Request, srv: BunServer) {
    if (srv.upgrade(req)) return undefined;
    return new Response(`hello from ${process.pid} on port ${srv.port}\n`);
  },
  websocket: {
    message(ws: { send(m: string | Uint8Array): void }, m: string | Uint8Array) {
      ws.send(m);
    },
  },
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, async () => {
    await server.shutdown();
    process.exit(0);
  });
}
