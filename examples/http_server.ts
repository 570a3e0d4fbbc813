/**
 * An HTTP server that upgrades in place without dropping a request. It runs on
 * Deno and on Bun, with the runtime's own server (Deno.serve / Bun.serve) at
 * full speed on the socket instar passes from generation to generation.
 *
 *   deno run -A examples/http_server.ts --port 8080     (or: bun examples/http_server.ts …)
 *   kill -HUP $(cat app.pid)    # run the program as it now is on disk; this generation drains
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Every request gets 200 and `hello from pid <pid> generation <n>`.
 *
 * Flags: --port <n> (default 8080), --hostname <addr> (default 127.0.0.1),
 * --pid-file <path>, --drain-timeout <ms>, --ready-timeout <ms>,
 * --spawn-backend fork|posix_spawn|auto, --control <socket path>,
 * --serve-mode auto|transplant|fallback, --version-label <text>.
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
    "serve-mode": { type: "string" },
    "version-label": { type: "string" },
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
logLifecycle(up, "http");

const label = values["version-label"] ?? runtimeVersion();
const body = `hello from pid ${process.pid} generation ${up.generation} (${label})\n`;

await up.serve(
  { hostname: values.hostname, port: Number(values.port) },
  { mode: values["serve-mode"] as "auto" | "transplant" | "fallback" | undefined },
  () => new Response(body),
);

await up.ready();

function runtimeVersion(): string {
  return process.versions.bun ? `bun ${process.versions.bun}` : `deno ${process.versions.deno}`;
}
