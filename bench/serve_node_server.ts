// A hello-world node:http server for bench/serve_node.ts. argv: <app> <variant>
//   app:     node (a bare http.createServer handler) | express
//   variant: own (the framework's own listen() on 127.0.0.1:0) | own+drain (the same with
//            instar's drain listeners installed: their steady-state cost alone) | auto | transplant |
//            fallback (instar's serveNode() on an instar socket, in that mode)
// Prints "port=<n> mode=<path>" once it accepts; runs until killed.
import http from "node:http";
import process from "node:process";
import express from "express";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { decode, encodeInet } from "../src/ffi/sockaddr.ts";
import { serveNode } from "../src/serve/serve_node.ts";
import { NodeDrain } from "../src/serve/node_drain.ts";

const [app = "node", variant = "own"] = process.argv.slice(2);
const text = "Hello, World!";

function handler(): http.RequestListener {
  if (app === "express") {
    const e = express();
    e.get("/", (_req, res) => void res.send(text));
    return e;
  }
  return (_req, res) => {
    res.setHeader("content-type", "text/plain");
    res.end(text);
  };
}

const server = http.createServer(handler());
let port: number, mode = "own";
if (variant === "own" || variant === "own+drain") {
  if (variant === "own+drain") new NodeDrain(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", 4096, () => r()));
  port = (server.address() as { port: number }).port;
} else {
  const fd = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.setsockoptInt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1);
  sys.bind(fd, encodeInet("127.0.0.1", 0)!);
  sys.listenFd(fd, 4096);
  const addr = decode(sys.getsockname(fd));
  port = addr.transport === "tcp" ? addr.port : 0;
  const s = await serveNode(fd, server, { mode: variant as "auto" });
  mode = s.mode;
}
console.log(`port=${port} mode=${mode}`);
