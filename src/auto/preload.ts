/**
 * `instar/auto`: zero-downtime upgrades for an application that does not
 * import instar. Load it before the application:
 *
 * ```sh
 * bun --preload ./node_modules/instar/src/auto/preload.ts server.js
 * deno run -A --preload ./node_modules/instar/src/auto/preload.ts main.ts
 * ```
 *
 * (or let `instar run -- bun server.js` add the flag). It creates this
 * generation's Upgrader, then replaces `Bun.serve`, `Deno.serve` and the
 * `listen()` of node:http / node:https / node:net servers, so that the
 * application's own calls serve through `up.serve()` / `up.serveNode()` (a
 * raw node:net server: its own `listen({ fd })`): sockets inherited
 * across upgrades, held until ready, drained with `Connection: close`. It
 * calls `up.ready()` for the application (readiness.ts), and makes its
 * `process.exit()` wait for a drain (exit_guard.ts). SIGHUP upgrades; SIGTERM
 * stops gracefully. `Bun.listen`, `Deno.listen` and `Deno.listenTls` throw
 * (raw_listen.ts): their listeners would run where no upgrade reaches them.
 * Settings come from the environment (settings.ts).
 * docs/zero-code.md has the whole story and the limits.
 *
 * @module
 */

import { insideOf } from "../lifecycle/inside.ts";
import { logLifecycle } from "../lifecycle/log.ts";
import { Upgrader } from "../lifecycle/upgrader.ts";
import { keepNativeServe, native, nativeServe } from "../runtime/natives.ts";
import { installBunServe } from "./bun_serve.ts";
import { installDenoServe } from "./deno_serve.ts";
import { guardExit } from "./exit_guard.ts";
import { insideNodeListen, installNodeListen } from "./node_listen.ts";
import { installRawListenRefusal } from "./raw_listen.ts";
import { AutoReadiness } from "./readiness.ts";
import { autoSettings } from "./settings.ts";

const LOADED = Symbol.for("instar.auto");
const G = globalThis as unknown as Record<symbol, Upgrader | undefined> & { Bun?: unknown };

// The Upgrader instar/auto created for this process (loaded twice, it is the same one).
G[LOADED] ??= await start();

async function start(): Promise<Upgrader> {
  const settings = autoSettings();
  const upgrader = await Upgrader.create(settings.upgrader);
  G[LOADED] = upgrader;
  if (settings.log !== "off") logLifecycle(upgrader, { format: settings.log });
  const readiness = new AutoReadiness(upgrader, insideOf(upgrader), settings.readiness);
  keepNativeServe();
  if (G.Bun) installBunServe(upgrader, readiness, nativeServe("Bun"), insideNodeListen);
  else installDenoServe(upgrader, readiness, nativeServe("Deno"));
  installNodeListen(upgrader, readiness);
  installRawListenRefusal(G.Bun ? { bunListen: native("Bun", "listen") } : {}, insideNodeListen);
  guardExit(upgrader);
  return upgrader;
}
