/**
 * The connections this process accepted on a listening address, found
 * through /proc whichever runtime I/O holds them, and cut at the drain
 * timeout: `shutdown(2)` makes the runtime see the connection end, so a
 * response that never ends (a stream, a slow upload) cannot keep a draining
 * generation alive. Listening sockets are never touched.
 *
 * @module
 */

import { C, getsockname, getsockoptInt, shutdown, tcpState } from "../ffi/mod.ts";
import { decode } from "../ffi/sockaddr.ts";
import { socketInodes, tcpConnectionInodes, unixConnectionInodes } from "../proc.ts";
import type { Addr } from "../types.ts";
import { sleep } from "../timeout.ts";

const TCP_ESTABLISHED = 1;

/** The fds of this process's connections accepted on `addr`. */
export function connectionFds(addr: Addr): number[] {
  const ours = socketInodes();
  const inodes = addr.transport === "tcp"
    ? tcpConnectionInodes(addr.port)
    : unixConnectionInodes(addr.path);
  const fds: number[] = [];
  for (const inode of inodes) {
    const fd = ours.get(inode);
    if (fd !== undefined) fds.push(fd);
  }
  return fds;
}

/**
 * Resolves once this process holds no connection accepted on `addr`, checked
 * every `everyMs` (only while a generation drains with idle connections kept:
 * neither runtime's server tells when a connection closes). Asked of this
 * process's own sockets, never of the system-wide tables: on a host whose TCP
 * table holds tens of thousands of entries, reading /proc/net/tcp every 100 ms
 * would stall the event loop. At the fd limit, where /proc cannot be read, it
 * keeps waiting ({@link mayHoldConnection}).
 */
export async function noConnections(addr: Addr, everyMs = 100): Promise<void> {
  // Unref'd: at the fd limit this may poll past the drain's timeout, which must not keep a
  // process alive that would otherwise end (the drain's own timer keeps it alive meanwhile).
  while (mayHoldConnection(addr, false)) await sleep(everyMs, true);
}

/**
 * Whether this process holds a connection accepted on `addr`: a socket that
 * is not listening and whose local address (getsockname(2): for an accepted
 * Unix socket, the listener's path) is `addr`'s port or path. For TCP only an
 * ESTABLISHED one, as {@link connectionFds} counts (a connection its client
 * closed is over, whenever the runtime gets to close its fd), unless
 * `anyState`: a client that sent its request and closed its side may not have
 * been read yet.
 */
export function holdsConnection(addr: Addr, anyState: boolean): boolean {
  for (const fd of socketInodes().values()) {
    try {
      if (getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN)) continue;
      const local = decode(getsockname(fd));
      const ours = addr.transport === "tcp"
        ? local.transport === "tcp" && local.port === addr.port &&
          (anyState || tcpState(fd) === TCP_ESTABLISHED)
        : local.transport === "unix" && local.path === addr.path;
      if (ours) return true;
    } catch {
      // closed meanwhile, or not a socket of a kind getsockname describes
    }
  }
  return false;
}

/**
 * {@link holdsConnection}, where what cannot be told (no fd left to read
 * /proc/self/fd with, at the fd limit) counts as held: a draining server then
 * waits (the drain timeout bounds it) rather than end connections it cannot see.
 */
export function mayHoldConnection(addr: Addr, anyState: boolean): boolean {
  try {
    return holdsConnection(addr, anyState);
  } catch {
    return true;
  }
}

/**
 * Shuts down both directions of every connection accepted on `addr`; returns
 * how many. At the fd limit, where /proc cannot be read, none (0): Bun's forced
 * stop, the proxy and node:http's server still end them, and so does the exit
 * after a generation's drain; a standalone Deno server on the transplant path
 * does not (its graceful shutdown waits for a response that never ends).
 */
export function cutConnections(addr: Addr): number {
  let fds: number[];
  try {
    fds = connectionFds(addr);
  } catch {
    return 0;
  }
  let n = 0;
  for (const fd of fds) {
    try {
      shutdown(fd, C.SHUT_RDWR);
      n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}
