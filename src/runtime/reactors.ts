/**
 * The reactors instar knows how to transplant a socket under, per runtime:
 * the epoll event mask each registers its listening socket with. The
 * transplant re-registers whatever mask it finds; knowing the mask is how it
 * checks that the reactor is the one it was measured against.
 *
 * @module
 */

import { runtimeName } from "../ffi/mod.ts";

/**
 * The epoll event masks of the reactors instar knows how to transplant under,
 * per runtime. The transplant re-registers whatever mask it finds; knowing the
 * mask is how instar checks the reactor is the one it was measured against.
 * Frozen at both levels: to transplant against other masks (e.g. in a test),
 * pass {@link TransplantOptions.knownMasks}.
 */
export const KNOWN_EVENT_MASKS: Readonly<Record<string, Readonly<Record<number, string>>>> = Object
  .freeze({
    // EPOLLET | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLOUT | EPOLLIN: mio (tokio).
    deno: Object.freeze({ 0x8000201d: "mio (edge-triggered)" }),
    // EPOLLHUP | EPOLLERR | EPOLLIN: uSockets.
    bun: Object.freeze({ 0x19: "uSockets (level-triggered)" }),
  });

/** This runtime's name and the masks known for it (none outside Deno and Bun). */
export function reactorMasks(): { runtime: string; masks: Readonly<Record<number, string>> } {
  const runtime = runtimeName() ?? "unknown";
  return { runtime, masks: KNOWN_EVENT_MASKS[runtime] ?? {} };
}
