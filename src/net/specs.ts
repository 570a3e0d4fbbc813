/**
 * Where the Upgrader's sockets are: the address of a listening or datagram
 * socket as a program asks for it, with the systemd name it may go by. The
 * lifecycle claims sockets by these specs (src/lifecycle/registry.ts);
 * `up.serve()` and `up.serveNode()` split them out of their options.
 *
 * @module
 */

import type { ListenOptions, TcpListenOptions, UnixListenOptions } from "./listener.ts";
import type { UdpDatagramOptions, UnixDatagramOptions } from "./datagram.ts";

/**
 * Where {@link Upgrader.listen} and {@link Upgrader.serve} listen: TCP or a
 * Unix socket, optionally with the `name` of a systemd socket
 * (`FileDescriptorName=`), or only a name.
 *
 * @example
 * ```ts
 * import { type SocketSpec, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const web: SocketSpec = { name: "web", port: 8080 }; // systemd's socket "web", else a fresh one
 * const listener = await up.listen(web);
 * ```
 */
export type SocketSpec =
  | (TcpListenOptions & { name?: string })
  | (UnixListenOptions & { name?: string })
  | { name: string };

/**
 * Where {@link Upgrader.listenDatagram} receives: UDP or a Unix datagram socket.
 *
 * @example
 * ```ts
 * import { type DatagramSpec, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const spec: DatagramSpec = { hostname: "127.0.0.1", port: 5353 };
 * const sock = await up.listenDatagram(spec);
 * ```
 */
export type DatagramSpec = UdpDatagramOptions | UnixDatagramOptions;

/** The address part of a spec (its systemd name only matters to the registry). */
export function addressOf(spec: SocketSpec): ListenOptions {
  const { name: _name, ...address } = spec as SocketSpec & { name?: string };
  return address as ListenOptions;
}
