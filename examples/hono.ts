/**
 * A Hono app that upgrades in place without dropping a request, on Deno and on
 * Bun. `app.fetch` is an ordinary fetch handler, so it goes to `up.serve()` as
 * its `fetch`, as it would to Bun.serve: Deno.serve / Bun.serve run it at full
 * speed on the socket instar passes from generation to generation.
 *
 *   deno run -A examples/hono.ts --port 8080     (or: bun examples/hono.ts …)
 *   kill -HUP $(cat app.pid)    # run the program as it now is on disk; this generation drains
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Routes:
 *   GET /              200 `hono from pid <pid> generation <n>`
 *   GET /hello/:name   200 JSON `{ "hello": name, "pid": …, "generation": … }`
 *   GET /health        200 `ok`
 *   anything else      404
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file,
 * --drain-timeout, --ready-timeout, --spawn-backend, --control).
 *
 * @module
 */
import process from "node:process";
import { Hono } from "hono";
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode } = await startGeneration("hono");

const app = new Hono();
app.get("/", (c) => c.text(`hono from pid ${process.pid} generation ${up.generation}\n`));
app.get(
  "/hello/:name",
  (c) => c.json({ hello: c.req.param("name"), pid: process.pid, generation: up.generation }),
);
app.get("/health", (c) => c.text("ok\n"));

await up.serve({ hostname, port, mode: serveMode, fetch: app.fetch });

await up.ready();
