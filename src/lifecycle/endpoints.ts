/**
 * A {@link Listener} and a {@link Server} seen as {@link Endpoint}s, so that
 * the registry passes them on and the drain treats them alike.
 *
 * @module
 */

import { C, close as closeFd, shutdown } from "../ffi/mod.ts";
import type { Listener } from "../net/listener.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../net/transplant.ts";
import { tcpConnections } from "../proc.ts";
import { type Server, serverParts } from "../serve/serve.ts";
import type { Addr, Endpoint } from "../types.ts";

/** Pausing and refusing, shared by every endpoint on a listening socket instar owns. */
function accepting(fd: number, activated: boolean) {
  let paused: PausedSocket | undefined;
  return {
    // Every reactor of this process stops accepting on the socket, whatever fd number it holds.
    pauseAccepting: () => void (paused ??= pauseSocket(fd)),
    resumeAccepting: () => {
      if (paused) resumeSocket(paused);
      paused = undefined;
    },
    refuseNew: () => {
      if (!activated) shutdown(fd, C.SHUT_RD);
    },
  };
}

/** A listener from `listen()`: it owns its fd and counts its connections. */
export function listenerEndpoint(key: string, listener: Listener, activated: boolean): Endpoint {
  return {
    key,
    fd: listener.fd,
    addr: listener.addr,
    connections: () => Promise.resolve(listener.connections),
    ...accepting(listener.fd, activated),
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

/** An HTTP server from `serve()` on `fd`, which the lifecycle owns and closes. */
export function serverEndpoint(
  key: string,
  fd: number,
  addr: Addr,
  server: Server,
  activated: boolean,
): Endpoint {
  const p = serverParts(server);
  let released = false;
  return {
    key,
    fd,
    addr,
    // The native servers keep no count: ask the kernel.
    connections:
      () => (addr.transport === "tcp" ? tcpConnections(addr.port) : Promise.resolve(null)),
    // Paused, the server also answers with `Connection: close`: keep-alive clients move on.
    pauseAccepting: () => void p.pause(),
    resumeAccepting: () => void p.resume(),
    refuseNew: accepting(fd, activated).refuseNew,
    finish: p.finish,
    forceClose: p.forceClose,
    release: () => {
      if (!released) closeFd(fd);
      released = true;
    },
  };
}
