/**
 * A Fastify app that upgrades in place without dropping a request, on Deno
 * and on Bun: after `await app.ready()`, `app.server` (a node:http server
 * that is not listening) goes to `up.serveNode()` instead of `app.listen()`.
 *
 *   deno run -A examples/fastify.ts --port 8080 --pid-file app.pid   (or: bun examples/fastify.ts …)
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
import Fastify from "fastify";
import { startNodeApp } from "./_node_app.ts";

const a = await startNodeApp("fastify");

const app = Fastify({ bodyLimit: 16 * 1024 * 1024 });
// Every body is read whole as bytes, whatever its content type.
app.removeAllContentTypeParsers();
app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
app.get("/slow", (req, reply) => {
  setTimeout(() => reply.type("text/plain").send(a.hello), a.msOf(req.url));
  return reply;
});
app.get("/*", (_req, reply) => reply.type("text/plain").send(a.hello));
app.post("/*", (req, reply) => {
  const n = (req.body as Uint8Array | undefined)?.byteLength ?? 0;
  a.counted();
  return reply.type("text/plain").send(`${n}\n`);
});

await app.ready();
a.webSockets(app.server);
await a.up.serveNode(app.server, { hostname: a.hostname, port: a.port, mode: a.serveMode });

await a.up.ready();
