/**
 * A server whose request handler lives in another file, for
 * `instar run --watch`: each saved edit of that file starts a new generation
 * with the new handler while the old one drains, and an edit that does not
 * load (a syntax error) leaves the running version serving.
 *
 *   instar run --watch handler.ts -- deno run -A examples/watch_app.ts --handler handler.ts --port 8080
 *   (or: instar run --watch handler.ts -- bun examples/watch_app.ts --handler handler.ts --port 8080)
 *
 * The handler file default-exports `(req: Request) => Response | Promise<Response>`;
 * this example answers with what it returns and adds
 * `x-served-by: <pid> generation <n>`. Flags: see examples/_lifecycle.ts, plus
 * --handler <path> (required).
 *
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode, flags } = await startGeneration("watch", {
  handler: { type: "string" },
});
if (typeof flags.handler !== "string") throw new Error("--handler <path> is required");

// Loaded before serving: a handler that does not load fails this generation before ready(),
// and the previous one (if any) serves on. Each generation is a new process: it loads the
// file as it is on disk now.
const url = pathToFileURL(resolve(flags.handler)).href;
const handler = (await import(url)).default as (req: Request) => Response | Promise<Response>;
if (typeof handler !== "function") throw new Error(`${flags.handler}: no default export function`);

const servedBy = `${up.pid} generation ${up.generation}`;
await up.serve({
  hostname,
  port,
  mode: serveMode,
  fetch: async (req: Request) => {
    const res = await handler(req);
    res.headers.set("x-served-by", servedBy);
    return res;
  },
});
await up.ready();
