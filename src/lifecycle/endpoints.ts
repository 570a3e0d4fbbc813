/**
 * A {@link Listener} and a {@link Server} seen as {@link Endpoint}s, so that
 * the registry passes them on and the drain treats them alike.
 *
 * @module
 */

import { close as closeFd } from "../ffi/mod.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import type { Listener } from "../net/listener.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../net/transplant.ts";
import { tcpConnections } from "../proc.ts";
import type { Server } from "../serve/serve.ts";
import type { Endpoint } from "../types.ts";

/** A listener from `listen()`: it owns its fd and counts its connections. */
export function listenerEndpoint(key: string, listener: Listener): Endpoint {
  const fd = listener.fd;
  let paused: PausedSocket | undefined;
  return {
    key,
    fd,
    addr: listener.addr,
    connections: () => listener.connections,
    // Every reactor of this process stops accepting on the socket, whatever fd number it holds.
    pauseAccepting: () => void (paused ??= pauseSocket(fd)),
    resumeAccepting: () => {
      if (paused) resumeSocket(paused);
      paused = undefined;
    },
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
export function serverEndpoint(key: string, fd: number, addr: Addr, server: Server): Endpoint {
  // The native servers keep no count: ask the kernel.
  const count = () => (addr.transport === "tcp" ? tcpConnections(addr.port) : null);
  let released = false;
  return {
    key,
    fd,
    addr,
    connections: count,
    pauseAccepting: () => void server.pauseAccepting(),
    resumeAccepting: () => void server.resumeAccepting(),
    finish: () => server.shutdown(),
    forceClose: async () => {
      const n = count() ?? 0;
      await server.stop(true).catch(() => {});
      return n;
    },
    release: () => {
      if (!released) closeFd(fd);
      released = true;
    },
  };
}
