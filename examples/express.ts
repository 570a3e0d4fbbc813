/**
 * An Express app that upgrades in place without dropping a request, on Deno
 * and on Bun: `http.createServer(app)` goes to `up.serveNode()`, which serves
 * it on the socket instar passes from generation to generation (on Bun, on
 * Bun's native server, transplanted; on Deno, node:http's `listen({ fd })`).
 *
 *   deno run -A examples/express.ts --port 8080 --pid-file app.pid   (or: bun examples/express.ts …)
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
import express from "express";
import { startNodeApp } from "./_node_app.ts";

const a = await startNodeApp("express");

const app = express();
app.get("/slow", (req, res) => void setTimeout(() => res.send(a.hello), a.msOf(req.url)));
app.get("/{*any}", (_req, res) => void res.send(a.hello));
app.post("/{*any}", express.raw({ type: () => true, limit: "16mb" }), (req, res) => {
  const n = Buffer.isBuffer(req.body) ? req.body.length : 0;
  a.counted();
  res.send(`${n}\n`);
});

const server = http.createServer(app);
a.webSockets(server);
await a.up.serveNode(server, { hostname: a.hostname, port: a.port, mode: a.serveMode });

await a.up.ready();
