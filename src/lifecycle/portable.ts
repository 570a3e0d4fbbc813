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
import {
  chmodSocket,
  type Listener,
  netError,
  type TcpListenOptions,
  type UnixListenOptions,
} from "../net/listener.ts";
import type { ServerDrain } from "../net/drain.ts";
import { addressOf, type SocketSpec } from "../net/specs.ts";
import type { DirectAddress, Serving } from "../serve/serve.ts";
import type { Addr, Endpoint } from "../types.ts";
import type { Registry } from "./registry.ts";

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

/**
 * `up.serve()` / `up.serveNode()` in portable mode: claims `spec`'s key and
 * has `start` listen on its address itself (no fd to hold until `ready()`:
 * nothing is shared with a previous generation). A failure after the server
 * started stops it again and releases the claim.
 */
export async function serveDirect<T extends { addr: Addr }>(
  registry: Registry,
  spec: SocketSpec,
  start: (key: string, at: DirectAddress, addr: Addr) => Promise<Serving<T>>,
): Promise<T> {
  const { key } = registry.claim(spec);
  let started: Serving<T> | undefined;
  try {
    const where = directAddress(spec);
    const asked: Addr = "path" in where
      ? { transport: "unix", path: where.path }
      : { transport: "tcp", ...where };
    started = await start(key, where, asked);
    // The runtime's server does not set a Unix socket's mode: set once it exists.
    const mode = (spec as { mode?: number }).mode;
    if ("path" in where && mode !== undefined) await chmodSocket(where.path, mode);
    registry.add(directServerEndpoint(key, started.server.addr, started.drain));
    return started.server;
  } catch (err) {
    await started?.drain.forceClose().catch(() => 0);
    registry.unclaim(key);
    // The runtime's own error (Deno's AddrInUse, Bun's and node's EADDRINUSE) as the full
    // mode's SystemError, naming the address.
    throw netError(err, `cannot listen on ${shownAddress(spec)}: is another server there?`);
  }
}

function shownAddress(spec: SocketSpec): string {
  const a = addressOf(spec) as { path?: string; hostname?: string; port?: number };
  return a.path ?? `${a.hostname ?? "0.0.0.0"}:${a.port}`;
}
