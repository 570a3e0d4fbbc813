/**
 * An HTTP server that upgrades in place without dropping a request. It runs on
 * Deno and on Bun, with the runtime's own server (Deno.serve / Bun.serve) at
 * full speed on the socket instar passes from generation to generation.
 *
 *   deno run -A examples/http_server.ts --port 8080 --pid-file app.pid   (or: bun examples/http_server.ts …)
 *   kill -HUP $(cat app.pid)    # run the program as it now is on disk; this generation drains
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Every request gets 200 and `hello from pid <pid> generation <n> (<label>)`.
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend, --serve-mode), plus
 * --version-label <text>.
 *
 * @module
 */
import process from "node:process";
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode, flags } = await startGeneration("http", {
  "version-label": { type: "string" },
});

const label = flags["version-label"] ??
  (process.versions.bun ? `bun ${process.versions.bun}` : `deno ${process.versions.deno}`);
const body = `hello from pid ${process.pid} generation ${up.generation} (${label})\n`;

await up.serve({ hostname, port, mode: serveMode, fetch: () => new Response(body) });

await up.ready();
