/**
 * A raw TCP echo server that upgrades in place.
 *
 *   deno run -A examples/echo_server.ts --port 9000     (or: bun examples/echo_server.ts …)
 *   kill -HUP <pid>    # start the program as it now is on disk; this generation drains
 *   kill -TERM <pid>   # stop gracefully
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend), plus --socket-name <name>:
 * serve the socket systemd passed under that name (FileDescriptorName=), with
 * --hostname/--port only as the fallback when there is none.
 *
 * @module
 */
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, flags } = await startGeneration("echo", {
  "socket-name": { type: "string" },
});
const name = flags["socket-name"] as string | undefined;
const listener = await up.listen({ hostname, port, ...(name ? { name } : {}) });

(async () => {
  for await (const conn of listener) {
    conn.readable.pipeTo(conn.writable).catch(() => {/* the peer went away */});
  }
})();

await up.ready();
