/**
 * A Koa app that upgrades in place without dropping a request, on Deno and on
 * Bun: `http.createServer(app.callback())` goes to `up.serveNode()` instead of
 * `app.listen()`.
 *
 *   deno run -A examples/koa.ts --port 8080 --pid-file app.pid   (or: bun examples/koa.ts …)
 *   kill -HUP $(cat app.pid)    # run the program as it now is on disk; this generation drains
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Answers: `GET /slow?ms=N` the hello line after N ms; `POST` anything: the
 * number of body bytes; any other GET: `hello from pid <pid> generation <n>
 * (<label>)`; a WebSocket (the `ws` package) on any path echoes
 * `<pid>: <message>` and stays on its generation until it closes.
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend, --serve-mode) and
 * examples/_node_app.ts (--stats-file, --version-label).
 *
 * @module
 */
import http from "node:http";
import Koa from "koa";
import { startNodeApp } from "./_node_app.ts";

const a = await startNodeApp("koa");

// The body of a request, read whole; its byte count.
async function bodyBytes(req: http.IncomingMessage): Promise<number> {
  let n = 0;
  for await (const chunk of req) n += (chunk as Uint8Array).byteLength;
  return n;
}

const app = new Koa();
app.use(async (ctx) => {
  ctx.type = "text/plain";
  if (ctx.method === "POST") {
    const n = await bodyBytes(ctx.req);
    a.counted();
    ctx.body = `${n}\n`;
    return;
  }
  if (ctx.path === "/slow") await new Promise((r) => setTimeout(r, a.msOf(ctx.url)));
  ctx.body = a.hello;
});

const server = http.createServer(app.callback());
a.webSockets(server);
await a.up.serveNode(server, { hostname: a.hostname, port: a.port, mode: a.serveMode });

await a.up.ready();
