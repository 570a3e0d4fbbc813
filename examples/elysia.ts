/**
 * An Elysia app (Bun only) that upgrades in place without dropping a request.
 * Elysia's `app.listen()` is `Bun.serve({ fetch: app.fetch, websocket })`
 * underneath; `up.serve()` takes the same two (the `websocket` handlers are
 * Elysia's own, from `elysia/ws`: they dispatch to each route's `.ws()`
 * handlers), so it runs at Bun.serve's speed on the socket instar passes from
 * generation to generation. Elysia's `.ws()` routes upgrade through
 * `app.server` (which `app.listen()` would have set): give it the Bun server.
 *
 *   app.server = (await up.serve({ hostname, port, fetch: app.fetch, websocket })).native;
 *
 *   bun examples/elysia.ts --port 8080 --pid-file app.pid
 *   kill -HUP $(cat app.pid)    # run the program as it now is on disk; this generation drains
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Answers: `GET /slow?ms=N` the hello line after N ms; `POST` anything: the
 * number of body bytes; any other GET: `hello from pid <pid> generation <n>
 * (<label>)`; a WebSocket on `/ws` echoes `<pid>: <message>` and stays on its
 * generation until it closes (at the drain timeout: code 1012).
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend, --serve-mode) and
 * examples/_node_app.ts (--stats-file, --version-label).
 *
 * @module
 */
import { appendFileSync } from "node:fs";
import process from "node:process";
import { Elysia } from "elysia";
import { websocket } from "elysia/ws";
import type { UpgraderServeOptions } from "../mod.ts";
import { startGeneration } from "./_lifecycle.ts";

if (!process.versions.bun) throw new Error("examples/elysia.ts runs on Bun (Elysia is Bun's)");

const { up, hostname, port, serveMode, flags } = await startGeneration("elysia", {
  "version-label": { type: "string" },
  "stats-file": { type: "string" },
});
const label = (flags["version-label"] as string | undefined) ??
  `elysia, bun ${process.versions.bun}`;
const hello = `hello from pid ${process.pid} generation ${up.generation} (${label})\n`;
let posts = 0;
const statsFile = flags["stats-file"] as string | undefined;
if (statsFile) up.onDrained(() => appendFileSync(statsFile, `${process.pid} ${posts}\n`));

const app = new Elysia()
  .get("/slow", async ({ query }) => {
    const ms = Math.min(Number(query.ms ?? 0) || 0, 600_000);
    await new Promise((r) => setTimeout(r, ms));
    return hello;
  })
  .ws("/ws", {
    open: (ws) => void ws.send(`welcome pid ${process.pid} generation ${up.generation}`),
    message: (ws, m) =>
      void ws.send(`${process.pid}: ${typeof m === "string" ? m : JSON.stringify(m)}`),
  })
  .get("/*", () => hello)
  .post("/*", async ({ request }) => {
    const n = (await request.arrayBuffer()).byteLength;
    posts++;
    return `${n}\n`;
  }, { parse: "none" });

// Elysia's fetch and its WebSocket handlers, as app.listen() would give Bun.serve (the cast:
// `deno check` reads this file with Deno's types, under which Bun's options are not up.serve()'s),
// and the Bun server, through which its .ws() routes upgrade.
const options = { hostname, port, mode: serveMode, fetch: app.fetch, websocket };
const server = await up.serve(options as UpgraderServeOptions);
app.server = server.native as typeof app.server;

await up.ready();
