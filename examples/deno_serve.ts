/**
 * Deno.serve with its own options and handler, at Deno.serve's speed, on a
 * socket that survives upgrades. Deno only: it uses Deno.upgradeWebSocket.
 *
 * `up.serve()` takes what `Deno.serve` takes, in one object, typed with
 * Deno's own types: `handler(req, info)`, `onError`, `onListen` (given the
 * address really served), `signal`, `cert`/`key`; plus where to listen
 * (`hostname`, `port`) and instar's options (`mode`).
 *
 *   deno run -A examples/deno_serve.ts --port 8080 --pid-file app.pid
 *   kill -HUP $(cat app.pid)   # the new version takes over; open WebSockets stay on this one
 *
 * `GET /boom` throws: `onError` answers 500 `oops: boom`.
 *
 * Flags: see examples/_lifecycle.ts.
 *
 * @module
 */
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode } = await startGeneration("deno_serve");

await up.serve({
  hostname,
  port,
  mode: serveMode,
  handler(req, info) {
    if (new URL(req.url).pathname === "/boom") throw new Error("boom");
    if (req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(e.data);
      return response;
    }
    return new Response(
      `hello ${info.remoteAddr.hostname} from ${Deno.pid} (generation ${up.generation})\n`,
    );
  },
  onError: (err) => new Response(`oops: ${(err as Error).message}\n`, { status: 500 }),
  onListen: ({ hostname, port }) => console.log(`deno_serve: serving on ${hostname}:${port}`),
});

await up.ready();
