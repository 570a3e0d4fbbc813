/**
 * The connections this process accepted on a listening address, found
 * through /proc whichever runtime I/O holds them, and cut at the drain
 * timeout: `shutdown(2)` makes the runtime see the connection end, so a
 * response that never ends (a stream, a slow upload) cannot keep a draining
 * generation alive. Listening sockets are never touched.
 *
 * @module
 */

import { C, shutdown } from "../ffi/mod.ts";
import { socketInodes, tcpConnectionInodes, unixConnectionInodes } from "../proc.ts";
import type { Addr } from "../types.ts";

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
 * neither runtime's server tells when a connection closes).
 */
export async function noConnections(addr: Addr, everyMs = 100): Promise<void> {
  while (connectionFds(addr).length > 0) await new Promise((r) => setTimeout(r, everyMs));
}

/** Shuts down both directions of every connection accepted on `addr`; returns how many. */
export function cutConnections(addr: Addr): number {
  let n = 0;
  for (const fd of connectionFds(addr)) {
    try {
      shutdown(fd, C.SHUT_RDWR);
      n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}
