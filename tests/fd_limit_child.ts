// A generation with two servers on Unix sockets, for tests/fd_limit_test.ts under prlimit:
// the runtime's own server through up.serve() (Deno.serve, whose accept loop ends at EMFILE)
// on argv[2], and a node:http server through up.serveNode() (on Deno its node:net server,
// deaf after EMFILE) on argv[3]. Each answers with its name and the pid; the lifecycle log
// says "ready" once both accept, and each warning.
import http from "node:http";
import process from "node:process";
import { logLifecycle, Upgrader } from "../mod.ts";

const [nativePath, nodePath] = process.argv.slice(2);
const up = await Upgrader.create();
logLifecycle(up, "fd-limit-child");
await up.serve({ path: nativePath, fetch: () => new Response(`native pid ${process.pid}\n`) });
const server = http.createServer((_req, res) => res.end(`node pid ${process.pid}\n`));
await up.serveNode(server, { path: nodePath });
await up.ready();
