/**
 * Datagram sockets instar owns (UDP and Unix datagram), created or adopted
 * through libc and read through the runtime's own I/O (see
 * `src/runtime/mod.ts`): an async iterable of received datagrams with their
 * senders, `send()`, `close()`.
 *
 * Sending always goes through `sendto(2)` on instar's own fd, never through
 * the runtime's reader: a generation that stopped reading at a handover
 * still answers the datagrams it already took.
 *
 * @module
 */

import { InstarError, invalid, SystemError } from "../errors.ts";
import {
  C,
  close as closeFd,
  EAGAIN,
  fcntl,
  getsockname,
  getsockoptInt,
  sendTo,
  setCloexec,
  setNonBlocking,
  setsockoptInt,
  socket,
} from "../ffi/mod.ts";
import { encodeInet, encodeUnix, formatAddr } from "../ffi/sockaddr.ts";
import { bindExplained, bindUnix, checkMode, checkPort, isV6Any } from "./bind.ts";
import { type DatagramBackend, startDatagramReader } from "../runtime/mod.ts";
import {
  type DatagramAddr,
  datagramAddrOf,
  type DatagramReader,
} from "../runtime/datagram_reader.ts";
import { sleep } from "../timeout.ts";

export type { DatagramAddr } from "../runtime/datagram_reader.ts";

/**
 * A UDP socket: numeric `hostname` (default `"0.0.0.0"`; `"::"` is
 * dual-stack) and `port` (0 picks a free one).
 *
 * @example
 * ```ts
 * import { type UdpDatagramOptions, Upgrader } from "@instar/instar";
 *
 * const o: UdpDatagramOptions = { hostname: "127.0.0.1", port: 5353 };
 * const up = await Upgrader.create();
 * const sock = await up.listenDatagram(o);
 * ```
 */
export interface UdpDatagramOptions {
  /** A numeric IPv4 or IPv6 address; default `"0.0.0.0"`. */
  hostname?: string;
  /** 0–65535; 0 picks a free port (see {@link DatagramSocket.addr}). */
  port: number;
}

/**
 * A Unix datagram socket at `path` (`@name`: abstract namespace). A stale
 * socket file is replaced; closing leaves the file for the next generation.
 *
 * @example
 * ```ts
 * import { type UnixDatagramOptions, Upgrader } from "@instar/instar";
 *
 * const o: UnixDatagramOptions = { path: "/run/app/log.sock", mode: 0o660 };
 * const up = await Upgrader.create();
 * const sock = await up.listenDatagram(o);
 * ```
 */
export interface UnixDatagramOptions {
  /** The socket path, or `@name` for the Linux abstract namespace. */
  path: string;
  /** File mode of the socket file, e.g. `0o660`. */
  mode?: number;
}

/**
 * Adopt a bound datagram socket (inherited, or received over SCM_RIGHTS).
 *
 * @example
 * ```ts
 * import { listenDatagram } from "@instar/instar/unstable";
 *
 * const sock = await listenDatagram({ fd: 3 });
 * ```
 */
export interface FdDatagramOptions {
  /** The socket; it becomes close-on-exec and non-blocking, and `close()` closes it. */
  fd: number;
}

/**
 * Where {@link listenDatagram} receives.
 *
 * @example
 * ```ts
 * import { type DatagramOptions, listenDatagram } from "@instar/instar/unstable";
 *
 * const where: DatagramOptions = { hostname: "::", port: 514 };
 * const sock = await listenDatagram(where);
 * ```
 */
export type DatagramOptions = UdpDatagramOptions | UnixDatagramOptions | FdDatagramOptions;

/**
 * One received datagram and who sent it.
 *
 * @example
 * ```ts
 * import { type ReceivedDatagram, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const sock = await up.listenDatagram({ hostname: "127.0.0.1", port: 0 });
 * const d: ReceivedDatagram = await sock.receive();
 * await sock.send(d.data, d.addr);
 * ```
 */
export interface ReceivedDatagram {
  /** The payload (at most 65,536 bytes; a longer Unix datagram is cut). */
  data: Uint8Array;
  /** The sender. */
  addr: DatagramAddr;
}

/**
 * A bound datagram socket: iterate it (or call `receive()`) for datagrams,
 * answer with `send()`.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const sock = await up.listenDatagram({ hostname: "127.0.0.1", port: 0 });
 * for await (const { data, addr } of sock) await sock.send(data, addr);
 * ```
 */
export interface DatagramSocket extends AsyncIterable<ReceivedDatagram>, AsyncDisposable {
  /** The address the socket is bound to (the real port when 0 was asked for). */
  readonly addr: DatagramAddr;
  /** instar's own close-on-exec fd of the socket; -1 after `close()`. */
  readonly fd: number;
  /** Which runtime I/O reads: `Bun.udpSocket`, `node:dgram (transplanted)`, `recvfrom + poll worker`. */
  readonly kind: string;
  /** Datagrams dropped because more than 4,096 were waiting for `receive()`. */
  readonly dropped: number;
  /**
   * The next datagram. Rejects with `SOCKET_CLOSED` once the socket is
   * closed (or handed over) and the datagrams taken before have been handed out.
   */
  receive(): Promise<ReceivedDatagram>;
  /**
   * Sends one datagram to `to` (e.g. the `addr` of a received one); resolves
   * with the bytes sent. Works until `close()`, also after a handover.
   * A full socket buffer is retried for up to a second, then `EAGAIN`.
   */
  send(data: Uint8Array | string, to: DatagramAddr): Promise<number>;
  /** Stops receiving and closes instar's fds (never the next generation's). Idempotent. */
  close(): void;
}

/** How many received datagrams may wait for `receive()` before new ones are dropped. */
const MAX_QUEUED = 4096;
/** How long `send()` retries a full socket buffer. */
const SEND_RETRY_MS = 1000;

function closedError(addr: DatagramAddr): InstarError {
  return new InstarError("SOCKET_CLOSED", `the datagram socket ${showAddr(addr)} is closed`);
}

/** `udp:127.0.0.1:53`, `udp:[::1]:53`, `unixgram:/run/x.sock`. */
export function showAddr(a: DatagramAddr): string {
  if (a.transport === "unixgram") return `unixgram:${a.path}`;
  return `udp:${formatAddr({ transport: "tcp", hostname: a.hostname, port: a.port })}`;
}

/** The internals the lifecycle drives (see `src/lifecycle/datagram_endpoint.ts`). */
export interface DatagramSocketControl extends DatagramSocket {
  /** Stops taking datagrams from the kernel; they wait there for whoever else reads the socket. */
  pauseReceiving(): void;
  /** Takes datagrams again. */
  resumeReceiving(): void;
  /**
   * Ends receiving for good (a handover): the datagrams already taken are
   * handed out, then the iteration ends. Resolves once the program has
   * come back for the next one (it handled every datagram it took), or at
   * once when nobody receives. Sending still works.
   */
  endReceiving(): Promise<void>;
}

/**
 * A datagram socket on instar's fd, read by the runtime's reader, sent to
 * through `sendto(2)`. Portable mode's (net/datagram_portable.ts) replaces
 * the three hooks that reach the kernel: {@link DatagramSocketImpl.openReader},
 * {@link DatagramSocketImpl.sendBytes}, {@link DatagramSocketImpl.closeTransport}.
 */
export class DatagramSocketImpl implements DatagramSocketControl {
  readonly addr: DatagramAddr;
  dropped = 0;
  #fd: number;
  #family: number;
  #reader: DatagramReader | undefined;
  #queue: ReceivedDatagram[] = [];
  #waiters: { resolve: (d: ReceivedDatagram | null) => void }[] = [];
  #ended = false;
  #closed = false;
  // Who takes datagrams: running `for await` loops, and whether receive() was ever called.
  #iterators = 0;
  #usedReceive = false;
  #back: (() => void) | undefined;

  /** The socket `fd` (-1: none of instar's, portable mode) bound to `addr`. */
  constructor(fd: number, addr: DatagramAddr) {
    this.#fd = fd;
    this.addr = addr;
    this.#family = fd < 0 ? -1 : getsockoptInt(fd, C.SOL_SOCKET, C.SO_DOMAIN);
  }

  get fd(): number {
    return this.#fd;
  }

  get kind(): string {
    return this.#reader?.kind ?? "";
  }

  /** Starts reading (`paused`: nothing until `resumeReceiving()`). */
  async start(backend: DatagramBackend, paused: boolean): Promise<void> {
    const push = (data: Uint8Array, addr: DatagramAddr) => this.#push({ data, addr });
    this.#reader = await this.openReader(push, backend, paused);
  }

  /** The reader that takes datagrams from the kernel and hands them to `push`. */
  protected openReader(
    push: (data: Uint8Array, addr: DatagramAddr) => void,
    backend: DatagramBackend,
    paused: boolean,
  ): Promise<DatagramReader> {
    return startDatagramReader(this.#fd, push, { paused, backend });
  }

  #push(d: ReceivedDatagram): void {
    if (this.#ended) return; // a reader's last batch after the end: the next generation's
    // Deno's node:dgram and the portable reader hand out views of a 64 KiB buffer per
    // datagram: 4,096 queued tiny ones would keep 256 MiB alive. A copy of its own size
    // (a plain Uint8Array: Buffer.slice() would be another view).
    if (d.data.byteLength < d.data.buffer.byteLength) d.data = new Uint8Array(d.data);
    const w = this.#waiters.shift();
    if (w) return w.resolve(d);
    if (this.#queue.length >= MAX_QUEUED) return void this.dropped++;
    this.#queue.push(d);
  }

  /** The next datagram, or `null` at the end. */
  #next(): Promise<ReceivedDatagram | null> {
    const d = this.#queue.shift();
    if (d) return Promise.resolve(d);
    if (this.#ended) {
      this.#back?.();
      return Promise.resolve(null);
    }
    return new Promise((resolve) => this.#waiters.push({ resolve }));
  }

  async receive(): Promise<ReceivedDatagram> {
    this.#usedReceive = true;
    const d = await this.#next();
    if (d) return d;
    throw closedError(this.addr);
  }

  // A hand-written iterator: an async generator costs a few promises more per datagram.
  [Symbol.asyncIterator](): AsyncIterator<ReceivedDatagram> {
    this.#iterators++;
    let done = false;
    const end = (): IteratorResult<ReceivedDatagram> => {
      // A loop that ends (or breaks out) takes nothing more: a drain need not wait for it.
      if (!done && --this.#iterators === 0 && this.#ended) this.#back?.();
      done = true;
      return { done: true, value: undefined };
    };
    return {
      next: () => {
        if (done) return Promise.resolve(end());
        return this.#next().then((d) => (d ? { done: false, value: d } : end()));
      },
      return: () => Promise.resolve(end()),
    };
  }

  send(data: Uint8Array | string, to: DatagramAddr): Promise<number> {
    try {
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      if (!(bytes instanceof Uint8Array)) invalid("data", typeof data, "a Uint8Array or a string");
      if (this.#closed) throw closedError(this.addr);
      return this.sendBytes(bytes, to);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Sends `bytes` to `to` on an open socket; throws what is wrong with `to`. */
  protected sendBytes(bytes: Uint8Array, to: DatagramAddr): Promise<number> {
    const sa = this.#encode(to);
    // The common case, at once: the socket buffer has room.
    const n = sendTo(this.#fd, bytes, sa);
    return n !== null ? Promise.resolve(n) : this.#sendLater(bytes, sa);
  }

  /** Closes instar's fd (the reader closed its own already). */
  protected closeTransport(): void {
    closeFd(this.#fd);
  }

  // The last address sent to, encoded: an answer usually goes to the sender just heard from.
  #lastTo: { to: DatagramAddr; sa: Uint8Array } | undefined;

  #encode(to: DatagramAddr): Uint8Array {
    const last = this.#lastTo;
    if (last && sameAddr(last.to, to)) return last.sa;
    const sa = encodeTo(to, this.#family);
    this.#lastTo = { to: { ...to }, sa };
    return sa;
  }

  async #sendLater(bytes: Uint8Array, sa: Uint8Array): Promise<number> {
    const deadline = performance.now() + SEND_RETRY_MS;
    for (let wait = 1;; wait = Math.min(wait * 2, 50)) {
      if (performance.now() > deadline) {
        throw new SystemError(
          "sendto",
          EAGAIN,
          "EAGAIN",
          `the socket buffer stayed full for ${SEND_RETRY_MS} ms`,
        );
      }
      await sleep(wait);
      if (this.#closed) throw closedError(this.addr);
      const n = sendTo(this.#fd, bytes, sa);
      if (n !== null) return n;
    }
  }

  pauseReceiving(): void {
    if (!this.#closed) this.#reader?.pause();
  }

  resumeReceiving(): void {
    if (!this.#closed && !this.#ended) this.#reader?.resume();
  }

  endReceiving(): Promise<void> {
    this.#reader?.pause();
    this.#ended = true;
    const nobody = this.#iterators === 0 && !this.#usedReceive;
    const idle = this.#waiters.length > 0 || nobody || this.#closed;
    for (const w of this.#waiters.splice(0)) w.resolve(null);
    if (idle && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#back = resolve));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w.resolve(null);
    this.#back?.();
    try {
      this.#reader?.close();
    } finally {
      this.closeTransport();
      this.#fd = -1;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

function sameAddr(a: DatagramAddr, b: DatagramAddr): boolean {
  if (a.transport === "udp") {
    return b.transport === "udp" && a.port === b.port && a.hostname === b.hostname;
  }
  return b.transport === "unixgram" && a.path === b.path;
}

/** The sockaddr to send to, for a socket of address family `family`. */
function encodeTo(to: DatagramAddr, family: number): Uint8Array {
  if (to === null || typeof to !== "object") invalid("send address", to, "a DatagramAddr");
  if (to.transport === "unixgram") {
    if (family !== C.AF_UNIX) invalid("send address", showAddr(to), "a UDP address");
    if (typeof to.path !== "string" || to.path === "") {
      invalid(
        "send address",
        to.path,
        "the path of a bound Unix datagram socket (an unnamed sender cannot be answered)",
      );
    }
    return encodeUnix(to.path);
  }
  if (to.transport !== "udp") {
    invalid(
      "send address",
      JSON.stringify(to),
      '{ transport: "udp", hostname, port } or { transport: "unixgram", path }',
    );
  }
  if (family === C.AF_UNIX) invalid("send address", showAddr(to), "a Unix datagram path");
  if (!Number.isInteger(to.port) || to.port < 1 || to.port > 65535) {
    invalid("send port", to.port, "an integer from 1 to 65535");
  }
  // A dual-stack socket reaches IPv4 peers through their IPv4-mapped address.
  const host = family === C.AF_INET6 && /^\d+\.\d+\.\d+\.\d+$/.test(to.hostname)
    ? `::ffff:${to.hostname}`
    : to.hostname;
  const sa = typeof host === "string" ? encodeInet(host, to.port) : null;
  if (!sa) invalid("send hostname", to.hostname, "a numeric IPv4 or IPv6 address");
  return sa;
}

function openUdp(o: UdpDatagramOptions): number {
  const hostname = o.hostname ?? "0.0.0.0";
  if (typeof hostname !== "string") invalid("hostname", hostname, "a numeric IPv4 or IPv6 address");
  const sa = encodeInet(hostname, checkPort(o.port));
  if (!sa) {
    invalid(
      "hostname",
      hostname,
      "a numeric IPv4 or IPv6 address (names are not resolved for UDP)",
    );
  }
  const family = new DataView(sa.buffer).getUint16(0, true);
  const fd = socket(family, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  try {
    if (family === C.AF_INET6 && isV6Any(sa)) {
      setsockoptInt(fd, C.IPPROTO_IPV6, C.IPV6_V6ONLY, 0); // "::" takes IPv4 too
    }
    bindExplained(fd, sa, `udp:${hostname}:${o.port}`, "bind");
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return fd;
}

function openUnixgram(o: UnixDatagramOptions): number {
  if (typeof o.path !== "string") invalid("path", o.path, "a Unix socket path");
  checkMode(o.mode);
  const sa = encodeUnix(o.path);
  const fd = socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  try {
    const where = `unixgram:${o.path}`;
    bindUnix(fd, sa, { path: o.path, mode: o.mode, type: C.SOCK_DGRAM, where, verb: "bind" });
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return fd;
}

function adoptDatagram(fd: unknown): number {
  if (typeof fd !== "number" || !Number.isInteger(fd) || fd < 0) {
    invalid("fd", fd, "the non-negative integer fd of a bound datagram socket");
  }
  let type: number;
  try {
    fcntl(fd, C.F_GETFD);
    type = getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE);
  } catch (err) {
    if (!(err instanceof SystemError)) throw err;
    throw new SystemError(err.syscall, err.errno, err.code, `fd ${fd} is not an open socket`);
  }
  if (type !== C.SOCK_DGRAM) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `fd ${fd} is a socket of type ${type}, not SOCK_DGRAM; pass a UDP or Unix datagram socket`,
    );
  }
  setCloexec(fd, true);
  setNonBlocking(fd, true);
  return fd;
}

/** How {@link openDatagram} starts the socket. */
export interface OpenDatagramOptions {
  /** Read nothing until `resumeReceiving()` (a new generation before `ready()`). */
  paused?: boolean;
  /** `"poll"` forces the portable reader (tests). */
  backend?: DatagramBackend;
}

/**
 * {@link listenDatagram} with the lifecycle's controls: start paused, force
 * the portable reader.
 */
export async function openDatagram(
  options: DatagramOptions,
  o: OpenDatagramOptions = {},
): Promise<DatagramSocketControl> {
  if (options === null || typeof options !== "object") {
    invalid("options", options, "{ hostname?, port }, { path } or { fd }");
  }
  let fd: number;
  if ("fd" in options) fd = adoptDatagram(options.fd);
  else if ("path" in options) fd = openUnixgram(options);
  else if ("port" in options) fd = openUdp(options);
  else invalid("options", JSON.stringify(options), "{ hostname?, port }, { path } or { fd }");
  try {
    const addr = datagramAddrOf(getsockname(fd));
    const sock = new DatagramSocketImpl(fd, addr);
    await sock.start(o.backend ?? "auto", o.paused ?? false);
    return sock;
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/**
 * Opens a datagram socket and reads it with the runtime's own I/O.
 *
 * Standalone, from `@instar/instar/unstable`: the socket belongs to this
 * process alone and does not survive an upgrade. An application uses
 * `up.listenDatagram()` instead, whose socket the next generation inherits.
 *
 * - `{ hostname?, port }`: UDP; `hostname` is numeric (default `"0.0.0.0"`,
 *   `"::"` is dual-stack); port 0 picks a free port.
 * - `{ path, mode? }`: a Unix datagram socket (`@name` is abstract).
 * - `{ fd }`: adopts a bound datagram socket and takes ownership of it.
 *
 * Errors: `INVALID_ARGUMENT` naming the bad option, a {@link SystemError}
 * such as `EADDRINUSE` naming the address.
 *
 * @example
 * ```ts
 * import { listenDatagram } from "@instar/instar/unstable";
 *
 * const sock = await listenDatagram({ hostname: "127.0.0.1", port: 5353 });
 * for await (const { data, addr } of sock) await sock.send(data, addr);
 * ```
 */
export function listenDatagram(options: DatagramOptions): Promise<DatagramSocket> {
  return openDatagram(options);
}
