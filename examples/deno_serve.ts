/**
 * Deno.serve with its own options and handler, at Deno.serve's speed, on a
 * socket that survives upgrades. Deno only: it uses Deno.upgradeWebSocket.
 *
 *   deno run -A examples/deno_serve.ts --port 8080 --pid-file app.pid
 *   kill -HUP $(cat app.pid)   # the new version takes over; open WebSockets stay on this one
 *
 * Flags: see examples/_lifecycle.ts.
 *
 * @module
 */
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode } = await startGeneration("deno_serve");

await up.serve({ hostname, port }, {
  mode: serveMode,
}, (req: Request, info?: unknown) => {
  if (req.headers.get("upgrade") === "websocket") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  }
  const { remoteAddr } = info as Deno.ServeHandlerInfo<Deno.NetAddr>;
  return new Response(
    `hello ${remoteAddr.hostname} from ${Deno.pid} (generation ${up.generation})\n`,
  );
});

await up.ready();
