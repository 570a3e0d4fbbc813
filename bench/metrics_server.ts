// A hello-world server for bench/metrics.ts. Prints "port=<n>" once it accepts; runs until killed.
//   bare      the runtime's own server on its own port
//   serve     instar's serve() on an instar socket: no request counting (serve() alone counts nothing)
//   counted   up.serve() of an Upgrader: the same server, every request counted for the metrics
//   scraped   counted, and up.metrics() (what a /metrics scrape computes) once a second
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { decode, encodeInet } from "../src/ffi/sockaddr.ts";
import { serve } from "../src/serve/serve.ts";
import { Upgrader } from "../mod.ts";
import { prometheusText } from "../unstable.ts";

const variant = process.argv[2] ?? "bare";
const G = globalThis as unknown as {
  Deno?: { serve(o: Record<string, unknown>, h: () => Response): { addr: { port: number } } };
  Bun?: { serve(o: Record<string, unknown>): { port: number } };
};
const hello = () => new Response("Hello, World!");

let port: number;
if (variant === "bare") {
  port = G.Bun
    ? G.Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: hello }).port
    : G.Deno!.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, hello).addr.port;
} else if (variant === "serve") {
  const fd = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.setsockoptInt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1);
  sys.bind(fd, encodeInet("127.0.0.1", 0)!);
  sys.listenFd(fd, 4096);
  const addr = decode(sys.getsockname(fd));
  port = addr.transport === "tcp" ? addr.port : 0;
  const server = await serve(fd, { mode: "transplant", fetch: hello, onListen() {} });
  if (server.mode !== "transplant") throw new Error(`asked for transplant, got ${server.mode}`);
} else {
  const up = await Upgrader.create({ upgradeSignal: null });
  const server = await up.serve({
    hostname: "127.0.0.1",
    port: 0,
    backlog: 4096,
    mode: "transplant",
    fetch: hello,
    onListen() {},
  });
  await up.ready();
  port = (server.addr as { port: number }).port;
  if (variant === "scraped") {
    let bytes = 0;
    setInterval(async () => void (bytes += prometheusText(await up.metrics()).length), 1000);
  }
}
console.log(`port=${port}`);
