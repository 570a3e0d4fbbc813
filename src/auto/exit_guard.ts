/**
 * The application's own `process.exit()` under instar/auto. Servers often
 * end themselves on SIGTERM (Next.js's standalone server calls
 * `process.exit(0)`), which would cut the requests in flight. instar's stop
 * signal handlers are installed before the application's (the preload runs
 * first), so by the time the application's handler calls `process.exit()`
 * this generation already drains. An exit called then waits for the drain
 * (within the drain timeout) and ends with the application's status. An exit
 * called while serving (`ready`, `upgrading`) becomes a graceful stop first,
 * whoever's handler ran first. Before `ready()` (nothing served) and after
 * the drain it exits at once.
 *
 * At an upgrade the old generation is never told to stop by a signal (the
 * new one tells it over instar's channel), so an application's SIGTERM
 * handler plays no part there.
 *
 * @module
 */

import * as host from "../host.ts";
import type { Upgrader } from "../lifecycle/upgrader.ts";

/** Replaces `process.exit` so that an exit during a drain waits for it. */
export function guardExit(up: Upgrader): void {
  const native = host.keepNativeExit();
  const proc = (globalThis as unknown as { process: { exit: unknown; exitCode?: unknown } })
    .process;
  proc.exit = function exit(code?: number | string | null): never {
    const status = Number(code ?? proc.exitCode ?? 0) || 0;
    const state = up.state;
    if (state === "starting" || state === "stopped") return native(status);
    if (state === "ready" || state === "upgrading") up.stop();
    up.drained.then(() => native(status));
    // The caller expected never to return; what it runs next is its own business.
    return undefined as never;
  };
}
