/**
 * The application's own `process.exit()` under instar/auto. Servers often
 * end themselves on SIGTERM (Next.js's standalone server calls
 * `process.exit(0)` in 15, `process.exit(143)` in 16), which would cut the
 * requests in flight. instar's stop signal handlers are installed before the
 * application's (the preload runs first), so by the time the application's
 * handler calls `process.exit()` this generation already drains. An exit
 * called then waits for the drain (within the drain timeout) and ends with
 * the application's status. An exit called while serving (`ready`,
 * `upgrading`) becomes a graceful stop first, whoever's handler ran first.
 * Before `ready()` (nothing served) and after the drain it exits at once.
 *
 * The same for Deno's `Deno.exit()` (Deno's `process.exit` calls it: instar's own
 * exits are marked so that they pass).
 *
 * At an upgrade the old generation is never told to stop by a signal (the
 * new one tells it over instar's channel), so an application's SIGTERM
 * handler plays no part there.
 *
 * @module
 */

import * as host from "../host.ts";
import type { Upgrader } from "../lifecycle/upgrader.ts";

/** Replaces `process.exit` (and `Deno.exit`) so that an exit during a drain waits for it. */
export function guardExit(up: Upgrader): void {
  let ours = false;
  const native = host.keepNativeExit((exit) => (code) => {
    ours = true;
    return exit(code);
  });
  const G = globalThis as unknown as {
    process: { exit: unknown; exitCode?: unknown };
    Deno?: { exit: unknown };
  };
  const proc = G.process;
  const guarded = (code: number): never => {
    const state = up.state;
    if (state === "starting" || state === "stopped") return native(code);
    if (state === "ready" || state === "upgrading") up.stop();
    up.drained.then(() => native(code));
    // The caller expected never to return; what it runs next is its own business.
    return undefined as never;
  };
  proc.exit = function exit(code?: number | string | null): never {
    return guarded(Number(code ?? proc.exitCode ?? 0) || 0);
  };
  const deno = G.Deno;
  if (deno) {
    const denoExit = (deno.exit as (code?: number) => never).bind(deno);
    deno.exit = function exit(code?: number): never {
      return ours ? denoExit(code) : guarded(code ?? 0);
    };
  }
}
