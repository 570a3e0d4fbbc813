/**
 * The runtime seam outside FFI: where instar needs a runtime's own I/O and
 * the two runtimes differ, the choice is made here and nowhere else.
 *
 * - accepting connections on a listening fd: `Deno.listen` (transplanted),
 *   `Bun.listen({ fd })`, or `node:net` when neither can;
 * - reading a connected Unix socket fd through the event loop (the channel
 *   to a starting generation): Deno `new net.Socket({ fd })`, Bun
 *   `net.connect({ fd })` (Bun's `new net.Socket({ fd })` never reads);
 * - the native HTTP server `serve()` starts: `Deno.serve` or `Bun.serve`;
 * - reading a datagram socket: `Bun.udpSocket({ fd })`, `node:dgram`
 *   transplanted (Deno), or `recvfrom` woken by a poll worker (Unix datagram
 *   sockets, and the fallback);
 * - how `serveNode()` puts a `node:http` server on a socket: transplanted
 *   (Bun) or its own `listen({ fd })` (Deno);
 * - the fd under an accepted `node:net` socket (`_handle.fd` in both), for
 *   SO_PEERCRED and SCM_RIGHTS on control connections.
 *
 * @module
 */

import type * as net from "node:net";
import * as host from "../host.ts";
import { InstarError } from "../errors.ts";
import { C, close as closeFd, dupCloexec, getsockoptInt, runtimeName } from "../ffi/mod.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import type { Acceptor, BaseConn } from "./conn.ts";
import type { DatagramReader, OnDatagram } from "./datagram_reader.ts";
import { bunAdapter } from "./serve_bun.ts";
import { denoAdapter } from "./serve_deno.ts";
import type { NodeServeAdapter, ServeAdapter } from "./serve_types.ts";

// The acceptors, the datagram readers and the node:http adapters are imported by the first
// up.listen(), up.listenDatagram() or up.serveNode() that needs them, and only this runtime's:
// an application opens its sockets at start-up, and a generation that serves HTTP only never
// loads them (memory: docs/benchmarks.md, "A minimal app's memory"). Never on an upgrade's path,
// where the files on disk may already be the next version's.

/** How a listener serves its socket (tests force the portable path). */
export type ListenerBackend = "auto" | "node";

/**
 * Starts accepting on `fd` with the runtime's fastest I/O. `fd` stays the
 * caller's: the runtime gets a duplicate (or, on Deno, a transplanted copy).
 */
export async function startAcceptor(
  fd: number,
  addr: Addr,
  backend: ListenerBackend,
  track: (c: BaseConn) => void,
  warn?: (message: string) => void,
): Promise<Acceptor> {
  const rt = runtimeName();
  if (backend === "auto" && rt === "deno") {
    const { denoAcceptor } = await import("./listener_deno.ts");
    try {
      return denoAcceptor(fd, addr, track, warn);
    } catch (err) {
      if (!(err instanceof InstarError) || err.code !== "TRANSPLANT_UNSUPPORTED") throw err;
    }
  }
  const dup = dupCloexec(fd);
  try {
    if (backend === "auto" && rt === "bun") {
      return (await import("./listener_bun.ts")).bunAcceptor(dup, addr, track);
    }
    // The fallback and its node:net are loaded only when a listener needs them (memory).
    const { nodeAcceptor } = await import("./listener_node.ts");
    return await nodeAcceptor(dup, addr, track);
  } catch (err) {
    try {
      closeFd(dup);
    } catch {
      // the runtime took it and closed it already
    }
    throw err;
  }
}

/**
 * A `node:net` socket reading and writing the connected stream socket `fd`
 * through the event loop. The socket owns `fd` from now on and closes it.
 */
export function socketOnFd(fd: number): net.Socket {
  // Loaded on first use, not at start-up: a first generation without a control socket needs no
  // node:net (a few MB resident; docs/benchmarks.md, Idle cost).
  const { connect, Socket } = host.builtin("node:net") as typeof net;
  if (runtimeName() === "bun") return connect({ fd } as unknown as net.NetConnectOpts);
  return new Socket({ fd, readable: true, writable: true } as net.SocketConstructorOpts);
}

/**
 * The fd under a socket a `node:net` server accepted, checked to be an open
 * stream socket; `-1` when the runtime does not expose it.
 */
export function fdOfSocket(s: net.Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== "number" || !Number.isInteger(fd) || fd < 0) return -1;
  try {
    return getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE) === C.SOCK_STREAM ? fd : -1;
  } catch {
    return -1;
  }
}

/** The adapter that starts this runtime's own HTTP server for `serve()`. */
export function serveAdapter(): ServeAdapter {
  const rt = runtimeName();
  if (rt === "deno") return denoAdapter;
  if (rt === "bun") return bunAdapter;
  throw new InstarError("UNSUPPORTED_RUNTIME", "serve() runs on Deno and Bun");
}

/** How this runtime's `node:http` gets onto a socket, for `serveNode()`. */
export async function serveNodeAdapter(): Promise<NodeServeAdapter> {
  const rt = runtimeName();
  if (rt === "deno") return (await import("./serve_node_deno.ts")).denoNodeAdapter;
  if (rt === "bun") return (await import("./serve_node_bun.ts")).bunNodeAdapter;
  throw new InstarError("UNSUPPORTED_RUNTIME", "serveNode() runs on Deno and Bun");
}

/**
 * Whether this runtime's own server serves Bun's `routes` without a request
 * handler (Bun's does): `serve()` then needs no `fetch`, and says so.
 */
export function servesRoutesAlone(): boolean {
  return runtimeName() === "bun";
}

/** How a datagram socket is read (tests force the portable path). */
export type DatagramBackend = "auto" | "poll";

/**
 * Starts reading the datagram socket `fd` with the runtime's own UDP socket
 * when it can carry it (UDP; Deno through a transplant), else with the
 * portable reader. `fd` stays the caller's. `paused`: nothing is read until
 * `resume()`.
 */
export async function startDatagramReader(
  fd: number,
  onDatagram: OnDatagram,
  options: { paused: boolean; backend: DatagramBackend },
): Promise<DatagramReader> {
  const rt = runtimeName();
  const inet = getsockoptInt(fd, C.SOL_SOCKET, C.SO_DOMAIN) !== C.AF_UNIX;
  if (options.backend === "auto" && inet && rt === "bun") {
    const { bunDatagramReader } = await import("./datagram_bun.ts");
    return await bunDatagramReader(fd, onDatagram, options.paused);
  }
  if (options.backend === "auto" && inet && rt === "deno") {
    try {
      // node:dgram is loaded only for a datagram socket on Deno (memory).
      const { denoDatagramReader } = await import("./datagram_deno.ts");
      return await denoDatagramReader(fd, onDatagram, options.paused);
    } catch (err) {
      if (!(err instanceof InstarError) || err.code !== "TRANSPLANT_UNSUPPORTED") throw err;
    }
  }
  const { pollReader } = await import("./datagram_reader.ts");
  return await pollReader(fd, onDatagram, options.paused);
}
