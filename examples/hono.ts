/**
 * A Hono app that upgrades in place without dropping a request, on Deno and on
 * Bun. `app.fetch` is an ordinary fetch handler, so it goes to `up.serve()` as
 * it is: Deno.serve / Bun.serve run it at full speed on the socket instar
 * passes from generation to generation.
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
 * Flags: --port <n> (default 8080), --hostname <addr> (default 127.0.0.1),
 * --pid-file <path>, --drain-timeout <ms>, --ready-timeout <ms>,
 * --spawn-backend fork|posix_spawn|auto, --control <socket path>.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { Hono } from "hono";
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
logLifecycle(up, "hono");

const app = new Hono();
app.get("/", (c) => c.text(`hono from pid ${process.pid} generation ${up.generation}\n`));
app.get(
  "/hello/:name",
  (c) => c.json({ hello: c.req.param("name"), pid: process.pid, generation: up.generation }),
);
app.get("/health", (c) => c.text("ok\n"));

await up.serve({ hostname: values.hostname, port: Number(values.port) }, {}, app.fetch);

await up.ready();
