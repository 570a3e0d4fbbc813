/**
 * A datagram socket seen as an {@link Endpoint}: passed on like a listener,
 * drained the datagram way. At a handover the old generation stops taking
 * datagrams (they wait in the kernel's socket buffer, which both generations
 * share, for the new one, which is reading already: it resumed at its
 * `ready()`, before the old one was told), hands the ones it took to the
 * program, and keeps its fd for sending answers until it releases it.
 *
 * @module
 */

import type { DatagramSocketControl } from "../net/datagram.ts";
import type { Addr, Endpoint } from "../types.ts";
import { decode } from "../ffi/sockaddr.ts";
import { getsockname } from "../ffi/mod.ts";

/** The endpoint of a datagram socket from `up.listenDatagram()` under registry key `key`. */
export function datagramEndpoint(key: string, sock: DatagramSocketControl): Endpoint {
  const fd = sock.fd;
  // The protocol carries socket addresses (tcp/unix shaped); the key says it is a datagram socket.
  // Portable mode's socket has no fd of instar's (-1): its own address, reshaped.
  const a = sock.addr;
  const addr: Addr = fd >= 0
    ? decode(getsockname(fd))
    : a.transport === "udp"
    ? { transport: "tcp", hostname: a.hostname, port: a.port }
    : { transport: "unix", path: a.path };
  return {
    key,
    fd,
    addr,
    // Datagram sockets have no connections.
    connections: () => Promise.resolve(null),
    pauseAccepting: () => sock.pauseReceiving(),
    resumeAccepting: () => sock.resumeReceiving(),
    // Nothing to refuse: datagrams sent after the close get the kernel's ICMP answer.
    refuseNew: () => Promise.resolve(),
    finish: () => sock.endReceiving(),
    forceClose: () => {
      sock.close();
      return Promise.resolve(0);
    },
    release: () => sock.close(),
  };
}
