// The smallest app on instar's public API, for bench/idle.ts: `idle_minimal.ts <port>` creates an
// Upgrader, serves a hello handler on <port> and declares itself ready, nothing else (no control
// socket, no pid file, no logging). Against bench/idle_bare.ts it measures what a generation costs
// an application that uses none of instar's optional features. Like idle_bare.ts it reads its
// arguments without node:process, so that every module loaded is instar's.
import { Upgrader } from "../mod.ts";

const G = globalThis as unknown as { Deno?: { args: string[] }; Bun?: { argv: string[] } };
const port = Number(G.Deno ? G.Deno.args[0] : G.Bun!.argv[2]);

const up = await Upgrader.create();
await up.serve({ port, fetch: () => new Response("Hello, World!") });
await up.ready();
