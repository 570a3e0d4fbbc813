// A server process for tests/serve_test.ts: serves on an instar socket in the
// mode given as argv[2] and prints its port; a request to /shutdown makes it
// shut down, close the socket and report leaked sockets. It must then exit by
// itself: nothing may keep the event loop alive.
import process from "node:process";
import { serve, type Server } from "../src/serve/serve.ts";
import * as sys from "../src/ffi/mod.ts";
import { leakedSockets, openFds, rawListen } from "./support/helpers.ts";

const before = openFds();
const mode = process.argv[2] as "transplant" | "fallback";
const ours = await rawListen();
const quit = async () => {
  await server.shutdown();
  sys.close(ours.fd);
  console.log(`leaked=${JSON.stringify(await leakedSockets(before))}`);
};
const handler = (req: Request) => {
  if (new URL(req.url).pathname === "/shutdown") setTimeout(quit, 10);
  return new Response("hello");
};
// `fetch` on both runtimes; Deno's onListen would print the address.
const server: Server = await serve(ours.fd, { mode, fetch: handler, onListen() {} });
console.log(`port=${ours.port} mode=${server.mode}`);
