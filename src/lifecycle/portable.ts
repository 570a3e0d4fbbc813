/**
 * Portable mode's sockets (src/runtime/platform.ts decides the mode): the
 * runtime's own servers listen on the addresses themselves, so instar holds
 * no fd, and nothing is passed on. Their endpoints drain like the full
 * mode's (`Connection: close`, the quiet wait, WebSockets 1012 at the drain
 * timeout) but stop accepting by closing: there is never a next generation
 * to leave the socket's queue to, and no libc to pause a reactor with.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import type { Listener, TcpListenOptions, UnixListenOptions } from "../net/listener.ts";
import type { ServerDrain } from "../net/drain.ts";
import { addressOf, type SocketSpec } from "../net/specs.ts";
import type { DirectAddress } from "../serve/serve.ts";
import type { Addr, Endpoint } from "../types.ts";

/** Where a portable socket for `spec` listens (`name` alone needs systemd: refused). */
export function portableAddress(spec: SocketSpec): TcpListenOptions | UnixListenOptions {
  const address = addressOf(spec);
  if (!("path" in address) && !("port" in address)) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      "portable mode has no socket by name (systemd activation and inheritance need Linux): " +
        "give a port or a path",
    );
  }
  return address as TcpListenOptions | UnixListenOptions;
}

/** What the runtime's own HTTP server listens on for `spec` (`serve`, `serveNode`). */
export function directAddress(spec: SocketSpec): DirectAddress {
  const a = portableAddress(spec);
  return "path" in a ? { path: a.path } : { hostname: a.hostname ?? "0.0.0.0", port: a.port };
}

/**
 * A portable listener as an {@link Endpoint}: pausing closes it (nobody
 * resumes in portable mode), the connections it accepted finish or are cut.
 */
export function portableListenerEndpoint(key: string, listener: Listener): Endpoint {
  const close = () => listener.close();
  return {
    key,
    fd: -1,
    addr: listener.addr,
    connections: () => Promise.resolve(listener.connections),
    pauseAccepting: close,
    resumeAccepting: () => {},
    refuseNew: () => Promise.resolve(close()),
    finish: () => {
      close();
      return listener.drained();
    },
    forceClose: () => {
      const n = listener.connections;
      listener.closeConnections();
      return Promise.resolve(n);
    },
    release: close,
  };
}

/**
 * A runtime server listening on `addr` itself as an {@link Endpoint}: it
 * decides the drain; its connections are not counted (no kernel table to ask).
 */
export function directServerEndpoint(key: string, addr: Addr, server: ServerDrain): Endpoint {
  return {
    ...server,
    key,
    fd: -1,
    addr,
    connections: () => Promise.resolve(null),
    // A stop closes the listening socket where the runtime can (Bun); elsewhere (Deno) its
    // graceful end does, and until then it answers with Connection: close.
    refuseNew: server.refuseNew ?? (() => Promise.resolve()),
    release: () => {},
  };
}
