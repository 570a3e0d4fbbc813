/**
 * A raw TCP echo server that upgrades in place.
 *
 *   deno run -A examples/echo_server.ts --port 9000     (or: bun examples/echo_server.ts …)
 *   kill -HUP <pid>    # start the program as it now is on disk; this generation drains
 *   kill -TERM <pid>   # stop gracefully
 *
 * Flags: --port <n> (default 8080), --hostname <addr> (default 127.0.0.1),
 * --pid-file <path>, --drain-timeout <ms>, --ready-timeout <ms>,
 * --spawn-backend fork|posix_spawn|auto, --control <socket path>.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { logLifecycle, Upgrader } from "../mod.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    port: { type: "string", default: "8080" },
    hostname: { type: "string", default: "127.0.0.1" },
    "pid-file": { type: "string" },
    "drain-timeout": { type: "string" },
    "ready-timeout": { type: "string" },
    "spawn-backend": { type: "string" },
    control: { type: "string" },
  },
  strict: true,
});

const up = await Upgrader.create({
  pidFile: values["pid-file"],
  drainTimeout: values["drain-timeout"] ? Number(values["drain-timeout"]) : undefined,
  readyTimeout: values["ready-timeout"] ? Number(values["ready-timeout"]) : undefined,
  spawnBackend: values["spawn-backend"] as "fork" | "posix_spawn" | "auto" | undefined,
  controlSocket: values.control,
});
logLifecycle(up, "echo");
const listener = await up.listen({ hostname: values.hostname, port: Number(values.port) });

(async () => {
  for await (const conn of listener) {
    conn.readable.pipeTo(conn.writable).catch(() => {/* the peer went away */});
  }
})();

await up.ready();
