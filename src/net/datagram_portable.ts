/**
 * Portable mode's datagram sockets (src/runtime/platform.ts): UDP through
 * `node:dgram` bound to the address itself, in both runtimes, with the same
 * {@link DatagramSocket} as the full mode's (the queue, the iterator, the
 * end of receiving in a drain). No fd of instar's (`fd` is -1), and no Unix
 * datagram sockets: `node:dgram` has none.
 *
 * @module
 */

import type * as Dgram from "node:dgram";
import * as host from "../host.ts";
import { InstarError, invalid } from "../errors.ts";
import { checkPort } from "./bind.ts";
import { netError } from "./listener.ts";
import {
  type DatagramAddr,
  type DatagramSocketControl,
  DatagramSocketImpl,
  type UdpDatagramOptions,
  type UnixDatagramOptions,
} from "./datagram.ts";
import type { DatagramReader } from "../runtime/datagram_reader.ts";

class PortableDatagramSocket extends DatagramSocketImpl {
  #sock: Dgram.Socket;
  #v6: boolean;

  constructor(sock: Dgram.Socket, addr: DatagramAddr, v6: boolean) {
    super(-1, addr);
    this.#sock = sock;
    this.#v6 = v6;
  }

  // node:dgram cannot stop reading: a paused reader drops what arrives (in portable mode it
  // pauses only when the drain ends receiving, and nobody else would read the socket).
  protected override openReader(
    push: (data: Uint8Array, addr: DatagramAddr) => void,
    _backend: unknown,
    paused: boolean,
  ): Promise<DatagramReader> {
    let on = !paused;
    this.#sock.on("message", (m: Uint8Array, r: { address: string; port: number }) => {
      if (on) push(m, { transport: "udp", hostname: r.address, port: r.port });
    });
    return Promise.resolve({
      kind: "node:dgram",
      pause: () => void (on = false),
      resume: () => void (on = true),
      close: () => void (on = false),
    });
  }

  protected override sendBytes(bytes: Uint8Array, to: DatagramAddr): Promise<number> {
    if (to === null || typeof to !== "object" || to.transport !== "udp") {
      invalid("send address", JSON.stringify(to), '{ transport: "udp", hostname, port }');
    }
    if (!Number.isInteger(to.port) || to.port < 1 || to.port > 65535) {
      invalid("send port", to.port, "an integer from 1 to 65535");
    }
    if (typeof to.hostname !== "string") invalid("send hostname", to.hostname, "an IP address");
    // A dual-stack socket reaches IPv4 peers through their IPv4-mapped address.
    const v4 = /^\d+\.\d+\.\d+\.\d+$/.test(to.hostname);
    const hostname = this.#v6 && v4 ? `::ffff:${to.hostname}` : to.hostname;
    return new Promise((resolve, reject) => {
      this.#sock.send(bytes, to.port, hostname, (err, n) => {
        if (err) reject(netError(err, `sending to udp:${to.hostname}:${to.port}`));
        else resolve(n);
      });
    });
  }

  protected override closeTransport(): void {
    try {
      this.#sock.close();
    } catch {
      // closed already (an error closed it)
    }
  }
}

/**
 * A UDP socket bound to `options`' address through `node:dgram`, started
 * reading. A Unix datagram path is `UNSUPPORTED_PLATFORM`.
 */
export async function openDatagramAt(
  options: UdpDatagramOptions | UnixDatagramOptions,
): Promise<DatagramSocketControl> {
  if ("path" in options) {
    throw new InstarError(
      "UNSUPPORTED_PLATFORM",
      `portable mode has no Unix datagram sockets (node:dgram has none): ${options.path}`,
    );
  }
  const hostname = options.hostname ?? "0.0.0.0";
  if (typeof hostname !== "string") invalid("hostname", hostname, "a numeric IPv4 or IPv6 address");
  const port = checkPort(options.port);
  const v6 = hostname.includes(":");
  const dgram = host.builtin<typeof Dgram>("node:dgram");
  const sock = dgram.createSocket({ type: v6 ? "udp6" : "udp4", ipv6Only: false });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind({ address: hostname, port }, () => {
        sock.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    sock.close();
    throw netError(err, `cannot bind udp:${hostname}:${port}`);
  }
  sock.on("error", () => {/* a send error is the sender's; reading goes on */});
  const bound = sock.address();
  const addr: DatagramAddr = { transport: "udp", hostname: bound.address, port: bound.port };
  const socket = new PortableDatagramSocket(sock, addr, v6);
  await socket.start("auto", false);
  return socket;
}
