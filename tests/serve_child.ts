// A server process for tests/serve_test.ts: serves on an instar socket in the
// mode given as argv[2] and prints its port; a request to /shutdown makes it
// shut down, close the socket and report leaked sockets. It must then exit by
// itself: nothing may keep the event loop alive.
import process from "node:process";
import { serve, type Server } from "../src/serve/serve.ts";
import * as sys from "../src/ffi/mod.ts";
import { decode } from "../src/ffi/sockaddr.ts";
import { leakedSockets, openFds, rawListen } from "./support/helpers.ts";

const before = openFds();
const mode = process.argv[2] as "transplant" | "fallback";
const ours = await rawListen();
const quit = async () => {
  await server.shutdown();
  sys.close(ours.fd);
  // Deno creates a Unix socketpair of its own (its signal machinery) at a moment that varies
  // with start-up timing; serve() never makes an unnamed, connected Unix socket.
  const leaked = (await leakedSockets(before)).filter((fd) => !runtimeSocketpair(fd));
  console.log(`leaked=${JSON.stringify(leaked)}`);
};
/** An unnamed Unix stream socket whose peer is unnamed too: one end of a socketpair. */
function runtimeSocketpair(fd: number): boolean {
  try {
    const local = decode(sys.getsockname(fd)), peer = decode(sys.getpeername(fd));
    return local.transport === "unix" && local.path === "" && peer.transport === "unix" &&
      peer.path === "";
  } catch {
    return false;
  }
}

const handler = (req: Request) => {
  if (new URL(req.url).pathname === "/shutdown") setTimeout(quit, 10);
  return new Response("hello");
};
// `fetch` on both runtimes; Deno's onListen would print the address.
const server: Server = await serve(ours.fd, { mode, fetch: handler, onListen() {} });
console.log(`port=${ours.port} mode=${server.mode}`);
