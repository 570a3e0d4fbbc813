/**
 * Deno: native UDP through `node:dgram` (Deno's own tokio socket; the
 * `Deno.listenDatagram` API needs `--unstable-net`, and `node:dgram`'s
 * `bind({ fd })` refuses the fd as "UNKNOWN"). The `node:dgram` socket is
 * bound to a throwaway loopback port and instar's socket is transplanted
 * under its fd, as `src/runtime/transplant.ts` does for listeners: the epoll
 * registration is removed, instar's socket is `dup3`ed onto the fd number,
 * and registered again with the same events and token. Measured: the mio
 * registration is edge-triggered (mask 0x8000201d, as for TCP) and echoing
 * works unchanged. A failed precondition throws `TRANSPLANT_UNSUPPORTED`
 * with nothing changed, and the caller takes the portable reader.
 *
 * @module
 */

import dgram from "node:dgram";
import { InstarError } from "../errors.ts";
import {
  C,
  close as closeFd,
  dup3,
  epollCtl,
  getsockname,
  getsockoptInt,
  socket,
} from "../ffi/mod.ts";
import { decode } from "../ffi/sockaddr.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "./transplant.ts";
import { openFds, socketInode } from "../proc.ts";
import type { DatagramReader, OnDatagram } from "./datagram_reader.ts";
import { reactorMasks } from "./reactors.ts";

function unsupported(reason: string, cause?: unknown): never {
  throw new InstarError(
    "TRANSPLANT_UNSUPPORTED",
    `cannot transplant the datagram socket under node:dgram: ${reason}`,
    { cause },
  );
}

/** The datagram socket of this process bound to loopback `port` of `family`. */
function throwawayFd(family: number, port: number): number {
  const found: number[] = [];
  for (const fd of openFds()) {
    if (socketInode(fd) === null) continue;
    try {
      if (getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE) !== C.SOCK_DGRAM) continue;
      if (getsockoptInt(fd, C.SOL_SOCKET, C.SO_DOMAIN) !== family) continue;
      const a = decode(getsockname(fd));
      if (a.transport === "tcp" && a.port === port) found.push(fd);
    } catch { /* closed meanwhile */ }
  }
  if (found.length !== 1) unsupported(`found ${found.length} sockets on throwaway port ${port}`);
  return found[0];
}

/** Moves `fd` under `serverFd`, keeping the reactor's registration (events and token). */
function moveUnder(fd: number, serverFd: number): void {
  const { registrations } = pauseSocket(serverFd);
  const known = reactorMasks().masks;
  const bad = registrations.length !== 1 || known[registrations[0].events] === undefined;
  if (bad) {
    for (const r of registrations) epollCtl(r.epfd, C.EPOLL_CTL_ADD, r.tfd, r.events, r.data);
    unsupported(
      `expected one known epoll registration of fd ${serverFd}, found ` +
        (registrations.map((r) => "0x" + r.events.toString(16)).join(", ") || "none"),
    );
  }
  const r = registrations[0];
  dup3(fd, serverFd, C.O_CLOEXEC);
  try {
    epollCtl(r.epfd, C.EPOLL_CTL_ADD, serverFd, r.events, r.data);
  } catch (err) {
    throw new InstarError(
      "TRANSPLANT_FAILED",
      `fd ${fd} was moved onto node:dgram's fd ${serverFd} but registering it with epoll ` +
        `failed; the socket will not be read: restart the process`,
      { cause: err },
    );
  }
}

/**
 * Reads the UDP socket `fd` with `node:dgram`, transplanted; `fd` stays the
 * caller's. Started `paused`, nothing is read until `resume()`.
 */
export async function denoDatagramReader(
  fd: number,
  onDatagram: OnDatagram,
  paused: boolean,
): Promise<DatagramReader> {
  const family = getsockoptInt(fd, C.SOL_SOCKET, C.SO_DOMAIN);
  const v6 = family === C.AF_INET6;
  const sock = dgram.createSocket({ type: v6 ? "udp6" : "udp4" });
  sock.on("error", () => {/* a send error is the sender's; reading goes on */});
  sock.on("message", (m: Uint8Array, r: { address: string; port: number }) => {
    onDatagram(m, { transport: "udp", hostname: r.address, port: r.port });
  });
  let throwawayServerFd = -1;
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind({ port: 0, address: v6 ? "::1" : "127.0.0.1" }, () => resolve());
    });
    throwawayServerFd = throwawayFd(family, sock.address().port);
    moveUnder(fd, throwawayServerFd);
  } catch (err) {
    sock.close();
    if (err instanceof InstarError) throw err;
    unsupported(`the throwaway socket failed: ${(err as Error).message}`, err);
  }
  const serverFd = throwawayServerFd;
  // Paused, node:dgram's fd number holds an empty socket of the same family: tokio's
  // edge-triggered readiness is cleared only by EAGAIN, so a socket that never runs
  // empty would go on being read after the epoll registration is gone. (Not seen in
  // bursts of 20 datagrams every event-loop turn; the swap makes it impossible.)
  const empty = socket(family, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  let held: PausedSocket | undefined;
  let closed = false;
  const pause = () => {
    if (held || closed) return;
    held = pauseSocket(fd);
    dup3(empty, serverFd, C.O_CLOEXEC);
  };
  if (paused) pause();
  return {
    kind: "node:dgram (transplanted)",
    pause,
    resume: () => {
      if (!held || closed) return;
      dup3(fd, serverFd, C.O_CLOEXEC);
      resumeSocket(held); // the same socket again: its registrations go back as they were
      held = undefined;
    },
    close: () => {
      if (closed) return;
      closed = true;
      sock.close(); // closes node:dgram's fd: a duplicate of instar's socket (or the empty one)
      closeFd(empty);
    },
  };
}
