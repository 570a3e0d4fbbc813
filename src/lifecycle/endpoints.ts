/**
 * A {@link Listener} and an HTTP server seen as {@link Endpoint}s, so that
 * the registry passes them on and the drain treats them alike. Each endpoint
 * is built here once, by the socket's owner: a server contributes only what
 * it decides in a drain ({@link ServerDrain}).
 *
 * @module
 */

import { acceptQueueLength, C, close as closeFd, shutdown } from "../ffi/mod.ts";
import { sleep } from "../timeout.ts";
import type { Listener } from "../net/listener.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../runtime/transplant.ts";
import { openConnections } from "../net/sock_diag.ts";
import type { ServerDrain } from "../net/drain.ts";
import type { Addr, Endpoint } from "../types.ts";

/** Pausing, shared by every endpoint on a listening socket instar owns. */
export function accepting(
  fd: number,
): Pick<Endpoint, "pauseAccepting" | "resumeAccepting"> {
  let paused: PausedSocket | undefined;
  return {
    // Every reactor of this process stops accepting on the socket, whatever fd number it holds.
    pauseAccepting: () => void (paused ??= pauseSocket(fd)),
    resumeAccepting: () => {
      if (paused) resumeSocket(paused);
      paused = undefined;
    },
  };
}

/** How long a stop keeps accepting for the connections already queued. */
const QUEUE_GRACE_MS = 100;

/**
 * A stop's refusal on `fd`: the runtime takes what is queued (a queued
 * connection would be reset by the shutdown), then `pause` removes every
 * reactor's registration, then shutdown(2) makes the kernel refuse new ones.
 */
async function refuse(fd: number, activated: boolean, pause: () => void): Promise<void> {
  if (activated) return; // systemd's socket: it keeps queueing for the next start
  const deadline = performance.now() + QUEUE_GRACE_MS;
  while ((acceptQueueLength(fd) ?? 0) > 0 && performance.now() < deadline) await sleep(2);
  pause();
  shutdown(fd, C.SHUT_RD);
}

/** A listener from `listen()`: it owns its fd and counts its connections. */
export function listenerEndpoint(key: string, listener: Listener, activated: boolean): Endpoint {
  const fd = listener.fd, pausing = accepting(fd);
  return {
    key,
    fd,
    addr: listener.addr,
    connections: () => Promise.resolve(listener.connections),
    ...pausing,
    refuseNew: () => refuse(fd, activated, pausing.pauseAccepting),
    finish: () => {
      listener.close();
      return listener.drained();
    },
    forceClose: () => {
      const n = listener.connections;
      listener.closeConnections();
      return Promise.resolve(n);
    },
    release: () => listener.close(),
  };
}

/**
 * An HTTP server (`serve()`'s or `serveNode()`'s, as `server`) on `fd`, which
 * the lifecycle owns and closes. Paused, the server also answers with
 * `Connection: close`: keep-alive clients move on.
 */
export function serverEndpoint(
  key: string,
  fd: number,
  addr: Addr,
  server: ServerDrain,
  activated: boolean,
): Endpoint {
  let released = false;
  return {
    ...server,
    key,
    fd,
    addr,
    // The native servers keep no count: ask the kernel.
    connections: server.connections ??
      (() => (addr.transport === "tcp" ? openConnections(addr.port) : Promise.resolve(null))),
    refuseNew: () => refuse(fd, activated, server.pauseAccepting),
    release: () => {
      if (!released) closeFd(fd);
      released = true;
    },
  };
}
