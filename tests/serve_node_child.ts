// A generation serving a node:http server through up.serveNode() with a
// transplant precondition that fails (no known reactor mask), for
// tests/serve_node_test.ts: on Bun `auto` falls back to the proxy and the
// lifecycle log says why, and so does the application's own onFallback.
import http from "node:http";
import process from "node:process";
import { logLifecycle, Upgrader } from "../mod.ts";

const up = await Upgrader.create({ controlSocket: process.argv[2], drainTimeout: 5_000 });
logLifecycle(up, "node-child");
const server = http.createServer((_req, res) => res.end(`fallback pid ${process.pid}\n`));
const s = await up.serveNode(server, {
  hostname: "127.0.0.1",
  port: 0,
  knownMasks: {},
  // The application's own report does not replace the lifecycle's.
  onFallback: (reason) => console.log(`app-fallback: ${reason.code}`),
});
console.log(`mode=${s.mode}`);
await up.ready();
