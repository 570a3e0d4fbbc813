/**
 * Deno.serve on a listening socket instar owns, at Deno.serve's own speed.
 *
 *   deno run -A examples/deno_serve.ts                  # makes a socket on 127.0.0.1:8080
 *   systemd-socket-activate -l 127.0.0.1:8080 deno run -A examples/deno_serve.ts --fd 3
 *
 * SIGTERM or Ctrl-C drains: stop accepting, finish what is in flight (WebSockets
 * included, up to 10 s), exit.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { serve } from "../src/serve.ts";
import { listenSocket } from "./_socket.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { fd: { type: "string" }, port: { type: "string", default: "8080" } },
});
const fd = values.fd ? Number(values.fd) : listenSocket("127.0.0.1", Number(values.port));

const server = await serve(fd, {
  drainTimeoutMs: 10_000,
  onFallback: (why) => console.warn(`serving through the proxy: ${why.message}`),
}, (req, info) => {
  if (req.headers.get("upgrade") === "websocket") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  }
  return new Response(`hello ${info.remoteAddr.hostname} from ${Deno.pid}\n`);
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, async () => {
    await server.shutdown();
    Deno.exit(0);
  });
}
