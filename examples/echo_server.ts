/**
 * A raw TCP echo server that upgrades in place.
 *
 *   deno run -A examples/echo_server.ts --port 9000     (or: bun examples/echo_server.ts …)
 *   kill -HUP <pid>    # start the program as it now is on disk; this generation drains
 *   kill -TERM <pid>   # stop gracefully
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend).
 *
 * @module
 */
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port } = await startGeneration("echo");
const listener = await up.listen({ hostname, port });

(async () => {
  for await (const conn of listener) {
    conn.readable.pipeTo(conn.writable).catch(() => {/* the peer went away */});
  }
})();

await up.ready();
