/**
 * Bun: `Bun.udpSocket({ fd })` reads a duplicate of instar's UDP socket with
 * Bun's own event loop (uSockets, `recvmmsg`). Measured: it adopts an
 * AF_INET/AF_INET6 datagram socket and refuses an AF_UNIX one (`EINVAL`), so
 * Unix datagram sockets take the portable reader.
 *
 * @module
 */

import { close as closeFd, dupCloexec } from "../ffi/mod.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "./transplant.ts";
import type { DatagramReader, OnDatagram } from "./datagram_reader.ts";

/** The parts of Bun's UDP socket instar uses. */
interface BunUdpSocket {
  close(): void;
}

interface BunNs {
  udpSocket(options: Record<string, unknown>): Promise<BunUdpSocket>;
}

/**
 * Reads the UDP socket `fd` with `Bun.udpSocket`; `fd` stays the caller's.
 * Started paused (`paused`), nothing is read until `resume()`: the pause is
 * taken before the event loop polls the new registration.
 */
export async function bunDatagramReader(
  fd: number,
  onDatagram: OnDatagram,
  paused: boolean,
): Promise<DatagramReader> {
  const B = (globalThis as unknown as { Bun: BunNs }).Bun;
  const dup = dupCloexec(fd);
  let sock: BunUdpSocket;
  try {
    sock = await B.udpSocket({
      fd: dup,
      socket: {
        data(_s: unknown, buf: Uint8Array, port: number, hostname: string) {
          onDatagram(buf, { transport: "udp", hostname, port });
        },
      },
    });
  } catch (err) {
    try {
      closeFd(dup);
    } catch { /* Bun closed it */ }
    throw err;
  }
  // The pause removes every epoll registration of the socket, whatever fd number Bun holds.
  let held: PausedSocket | undefined = paused ? pauseSocket(fd) : undefined;
  let closed = false;
  return {
    kind: "Bun.udpSocket",
    pause: () => void (held ??= closed ? undefined : pauseSocket(fd)),
    resume: () => {
      if (held && !closed) resumeSocket(held);
      held = undefined;
    },
    close: () => {
      if (closed) return;
      closed = true;
      sock.close(); // closes Bun's duplicate only
    },
  };
}
