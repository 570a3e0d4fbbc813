// A hello-world server for bench/serve.ts: `bare` is the runtime's own server on
// its own port; `raw` is transplant() alone; `transplant` and `fallback` are instar's serve() on an instar
// socket; `portable` is up.serve() in portable mode (INSTAR_PORTABLE=1: the runtime's server on the
// address itself, requests counted, docs/portable.md). Prints "port=<n>" once it accepts; runs until killed.
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { decode, encodeInet, type NetAddr } from "../src/ffi/sockaddr.ts";
import { serve } from "../src/serve/serve.ts";
import { transplant } from "../src/runtime/transplant.ts";

type Variant = "bare" | "raw" | "transplant" | "fallback" | "portable";
const variant = (process.argv[2] ?? "bare") as Variant;
const G = globalThis as unknown as {
  Deno?: {
    serve(o: Record<string, unknown>, h: () => Response): { addr: { port: number } };
  };
  Bun?: { serve(o: Record<string, unknown>): { port: number } };
};
const hello = () => new Response("Hello, World!");

let port: number;
if (variant === "portable") {
  process.env.INSTAR_PORTABLE = "1"; // read once, by the first Upgrader.create()
  const { Upgrader } = await import("../mod.ts");
  const up = await Upgrader.create();
  const server = await up.serve({ hostname: "127.0.0.1", port: 0, fetch: hello, onListen() {} });
  if (server.mode !== "direct") throw new Error(`expected portable mode, got ${server.mode}`);
  await up.ready();
  port = server.port;
} else if (variant === "bare") {
  port = G.Bun
    ? G.Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: hello }).port
    : G.Deno!.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, hello).addr.port;
} else {
  const fd = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.setsockoptInt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1);
  sys.bind(fd, encodeInet("127.0.0.1", 0)!);
  sys.listenFd(fd, 4096);
  const addr = decode(sys.getsockname(fd));
  port = addr.transport === "tcp" ? addr.port : 0;
  if (variant === "raw") {
    // transplant() alone, without serve()'s wrapper: isolates the wrapper's cost.
    const throwaway: NetAddr = G.Bun
      ? {
        transport: "tcp",
        hostname: "127.0.0.1",
        port: G.Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: hello }).port,
      }
      : G.Deno!.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, hello).addr as NetAddr;
    transplant({ throwaway, fd });
  } else {
    // `fetch` on both runtimes; Deno's onListen would print the address.
    const server = await serve(fd, { mode: variant, fetch: hello, onListen() {} });
    if (server.mode !== variant) throw new Error(`asked for ${variant}, got ${server.mode}`);
  }
}
console.log(`port=${port}`);
