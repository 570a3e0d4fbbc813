/**
 * Listening sockets instar owns: created (or adopted) through libc, served
 * through the runtime's native I/O.
 *
 * instar keeps its own close-on-exec fd of every listening socket
 * ({@link Listener.fd}) and gives the runtime a duplicate. That fd is what a
 * restart passes to the next generation; closing a listener closes both fds
 * but never calls `shutdown(2)`, which would stop the socket for every
 * process sharing it.
 *
 * Which runtime I/O carries the connections:
 * - Deno: `Deno.listen`, with the socket transplanted under it (native
 *   `Deno.Conn`s); `node:net` when the transplant is not possible.
 * - Bun: `Bun.listen({ fd })`.
 *
 * @module
 */

import { InstarError, invalid, SystemError } from "../errors.ts";
import {
  C,
  close as closeFd,
  errnoNumber,
  fcntl,
  getsockname,
  getsockoptInt,
  listenFd,
  setCloexec,
  setNonBlocking,
  setsockoptInt,
  socket,
} from "../ffi/mod.ts";
import { type Addr, decode, encodeInet, encodeUnix, formatAddr } from "../ffi/sockaddr.ts";
import { bindExplained, bindUnix, checkMode, checkPort, isV6Any } from "./bind.ts";
import { tcpListenerHolders } from "../proc.ts";
import type { Acceptor, BaseConn, Conn } from "../runtime/conn.ts";
import { type ListenerBackend, startAcceptor } from "../runtime/mod.ts";
import type { NetAddress } from "../runtime/listener_node.ts";

export type { Conn } from "../runtime/conn.ts";
export type { Addr } from "../ffi/sockaddr.ts";

/**
 * Listen on TCP.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const listener = await up.listen({ hostname: "::", port: 8080, backlog: 1024 });
 * ```
 */
export interface TcpListenOptions {
  /** A numeric IPv4/IPv6 address or a name to resolve; default `"0.0.0.0"`. `"::"` is dual-stack. */
  hostname?: string;
  /** 0–65535; 0 picks a free port (see {@link Listener.addr}). */
  port: number;
  /** The kernel's accept queue length; default `SOMAXCONN` (4096, capped by `net.core.somaxconn`). */
  backlog?: number;
}

/**
 * Listen on a Unix stream socket.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const listener = await up.listen({ path: "/run/app/app.sock", mode: 0o660 });
 * ```
 */
export interface UnixListenOptions {
  /**
   * The socket path, or `@name` for the Linux abstract namespace. A stale
   * socket file (one nobody listens on) is removed first; a live one or any
   * other file gives `EADDRINUSE`. Closing the listener leaves the file in
   * place, because the next generation may still be serving on it.
   */
  path: string;
  /** The kernel's accept queue length; default `SOMAXCONN` (4096, capped by `net.core.somaxconn`). */
  backlog?: number;
  /** File mode of the socket file, e.g. `0o660` (set before listening). */
  mode?: number;
}

/**
 * Adopt a socket that is already listening (inherited, or received over SCM_RIGHTS).
 *
 * @example
 * ```ts
 * import { listen } from "@instar/instar/unstable";
 *
 * const listener = await listen({ fd: 3 }); // e.g. passed by systemd or a parent
 * ```
 */
export interface FdListenOptions {
  /**
   * The listening socket. The listener takes ownership: it becomes
   * close-on-exec and non-blocking, and `close()` closes it.
   */
  fd: number;
}

/**
 * Where {@link listen} listens: TCP, a Unix socket, or an fd that already listens.
 *
 * @example
 * ```ts
 * import { listen, type ListenOptions } from "@instar/instar/unstable";
 *
 * const where: ListenOptions = process.env.SOCKET
 *   ? { path: process.env.SOCKET }
 *   : { hostname: "127.0.0.1", port: 8080 };
 * const listener = await listen(where);
 * ```
 */
export type ListenOptions = TcpListenOptions | UnixListenOptions | FdListenOptions;

/**
 * A listening socket. Iterate it (or call `accept()`) for connections.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
 * console.log(listener.addr); // { transport: "tcp", hostname: "127.0.0.1", port: 41234 }
 * for await (const conn of listener) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
 */
export interface Listener extends AsyncIterable<Conn>, AsyncDisposable {
  /** The address the socket is bound to (the real port when 0 was asked for). */
  readonly addr: Addr;
  /** instar's own close-on-exec fd of the socket; valid until `close()`. */
  readonly fd: number;
  /** Which runtime I/O serves the connections: `Deno.listen`, `Bun.listen` or `node:net`. */
  readonly kind: string;
  /**
   * The next connection. Rejects with `LISTENER_CLOSED` once the listener is
   * closed and the connections accepted before that have been handed out.
   */
  accept(): Promise<Conn>;
  /**
   * Stops accepting and closes instar's fds of the socket (never `shutdown(2)`:
   * another process may share it). Accepted connections keep working; the
   * iterator hands out the ones already accepted, then ends. Idempotent.
   */
  close(): void;
  /**
   * Connections the runtime accepted (including ones still waiting for
   * `accept()`) that are not closed yet.
   */
  readonly connections: number;
  /** Connections the runtime accepted on this listener since it started (a counter; metrics). */
  readonly accepted: number;
  /** Resolves when {@link Listener.connections} is 0 (at once if it is). */
  drained(): Promise<void>;
  /** Closes every accepted connection still open (for a drain timeout). */
  closeConnections(): void;
}

/**
 * The accept queue a new socket gets: the most the kernel allows (listen(2)
 * caps it at `net.core.somaxconn`, 4096 since Linux 5.4), as Go does. A herd
 * of reconnecting clients lands on the next generation's queue at once;
 * with 511 (Node's and nginx's) 5,000 WebSockets overflowed it and dropped
 * SYNs were retried after 1 s (docs/benchmarks.md, "WebSocket herds"). A
 * queued connection costs nothing until it arrives.
 */
const DEFAULT_BACKLOG = C.SOMAXCONN;

function checkBacklog(backlog: unknown): number {
  if (backlog === undefined) return DEFAULT_BACKLOG;
  if (typeof backlog !== "number" || !Number.isInteger(backlog) || backlog < 0) {
    invalid("backlog", backlog, "a non-negative integer");
  }
  return backlog;
}

async function resolveHost(hostname: string): Promise<string> {
  // Loaded here: numeric hostnames, the usual case, never need the resolver (node:dns costs memory).
  const { lookup } = await import("node:dns/promises");
  try {
    return (await lookup(hostname)).address;
  } catch (err) {
    throw new InstarError(
      "ENOTFOUND",
      `hostname ${JSON.stringify(hostname)} did not resolve (${
        (err as { code?: string }).code ?? (err as Error).message
      }); use a numeric address or a name the resolver knows`,
      { cause: err },
    );
  }
}

async function openTcp(o: TcpListenOptions): Promise<number> {
  const hostname = o.hostname ?? "0.0.0.0";
  if (typeof hostname !== "string" || hostname === "") {
    invalid("hostname", hostname, "a numeric address or a host name");
  }
  checkPort(o.port);
  const backlog = checkBacklog(o.backlog);
  const numeric = encodeInet(hostname, o.port);
  const sa = numeric ?? encodeInet(await resolveHost(hostname), o.port);
  if (!sa) throw new InstarError("ENOTFOUND", `hostname ${hostname} resolved to no address`);
  const family = new DataView(sa.buffer).getUint16(0, true);
  const shown = formatAddr(decode(sa));
  const fd = socket(family, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  try {
    setsockoptInt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1);
    // "::" means every address, IPv4 included, whatever net.ipv6.bindv6only says.
    if (family === C.AF_INET6 && isV6Any(sa)) {
      setsockoptInt(fd, C.IPPROTO_IPV6, C.IPV6_V6ONLY, 0);
    }
    bindTcp(fd, sa, shown, o.port);
    listenFd(fd, backlog);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return fd;
}

/**
 * `bind(2)` of a TCP listener; an EADDRINUSE names the processes that listen
 * on the port, when /proc shows them (another `instar run`, another copy of
 * the app): what the operator needs to act on it.
 */
function bindTcp(fd: number, sa: Uint8Array, shown: string, port: number): void {
  try {
    bindExplained(fd, sa, shown, "listen on");
  } catch (err) {
    if (!(err instanceof SystemError) || err.code !== "EADDRINUSE" || port === 0) throw err;
    const holders = tcpListenerHolders(port);
    if (holders.length === 0) throw err;
    const who = holders.map((h) => `pid ${h.pid} (${h.command ?? "?"})`).join(", ");
    const detail = err.message.replace(/^bind failed: EADDRINUSE \(errno \d+\): /, "");
    throw new SystemError("bind", err.errno, "EADDRINUSE", `${detail}: held by ${who}`);
  }
}

function openUnix(o: UnixListenOptions): number {
  if (typeof o.path !== "string") invalid("path", o.path, "a Unix socket path");
  const backlog = checkBacklog(o.backlog);
  checkMode(o.mode);
  const sa = encodeUnix(o.path);
  const fd = socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  try {
    const where = `unix:${o.path}`;
    bindUnix(fd, sa, {
      path: o.path,
      mode: o.mode,
      type: C.SOCK_STREAM,
      where,
      verb: "listen on",
      busy: `cannot listen on ${where}: a server listens there, or the path is not a socket`,
    });
    listenFd(fd, backlog);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return fd;
}

function adopt(fd: unknown): number {
  if (typeof fd !== "number" || !Number.isInteger(fd) || fd < 0) {
    invalid("fd", fd, "the non-negative integer fd of a listening socket");
  }
  const rethrow = (err: unknown, what: string): never => {
    if (!(err instanceof SystemError)) throw err;
    throw new SystemError(err.syscall, err.errno, err.code, `fd ${fd} ${what}`);
  };
  try {
    fcntl(fd, C.F_GETFD);
  } catch (err) {
    rethrow(err, "is not an open file descriptor; pass the fd of a listening socket");
  }
  let type = 0, domain = 0, accepting = 0;
  try {
    type = getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE);
    domain = getsockoptInt(fd, C.SOL_SOCKET, C.SO_DOMAIN);
    accepting = getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN);
  } catch (err) {
    rethrow(err, "is not a socket; pass the fd of a listening socket");
  }
  if (type !== C.SOCK_STREAM) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `fd ${fd} is a socket of type ${type}, not SOCK_STREAM; pass a listening TCP or Unix stream socket`,
    );
  }
  if (domain !== C.AF_INET && domain !== C.AF_INET6 && domain !== C.AF_UNIX) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `fd ${fd} is a socket of address family ${domain}; pass an AF_INET, AF_INET6 or AF_UNIX socket`,
    );
  }
  if (accepting !== 1) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `fd ${fd} is a stream socket that is not listening; call listen(2) on it first`,
    );
  }
  setCloexec(fd, true);
  // A blocking socket would make the runtime block in accept4.
  setNonBlocking(fd, true);
  return fd;
}

/**
 * The connections the runtime accepted and nobody closed yet, counted from
 * the moment the runtime accepts them (also while queued for `accept()`).
 */
class Tracker {
  readonly conns: Set<BaseConn> = new Set();
  /** Every connection ever added: one increment per accept. */
  accepted = 0;
  #waiters: (() => void)[] = [];

  add(c: BaseConn): void {
    this.accepted++;
    this.conns.add(c);
    c.onClose(() => {
      this.conns.delete(c);
      if (this.conns.size === 0) { for (const w of this.#waiters.splice(0)) w(); }
    });
  }

  drained(): Promise<void> {
    if (this.conns.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

class ListenerImpl implements Listener {
  readonly addr: Addr;
  readonly kind: string;
  #fd: number;
  #acceptor: Acceptor;
  #closed = false;
  #tracker: Tracker;
  #acceptChain: Promise<unknown> = Promise.resolve();

  constructor(fd: number, addr: Addr, acceptor: Acceptor, tracker: Tracker) {
    this.#tracker = tracker;
    this.#fd = fd;
    this.addr = addr;
    this.#acceptor = acceptor;
    this.kind = acceptor.kind;
  }

  get fd(): number {
    return this.#fd;
  }

  get connections(): number {
    return this.#tracker.conns.size;
  }

  get accepted(): number {
    return this.#tracker.accepted;
  }

  #next(): Promise<BaseConn | null> {
    // One accept at a time: Deno.listen refuses concurrent accepts.
    const p = this.#acceptChain.then(() => this.#acceptor.accept());
    this.#acceptChain = p.catch(() => {});
    return p;
  }

  async accept(): Promise<Conn> {
    const c = await this.#next();
    if (c) return c;
    throw new InstarError("LISTENER_CLOSED", `the listener on ${formatAddr(this.addr)} is closed`);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Conn> {
    for (;;) {
      const c = await this.#next();
      if (!c) return;
      yield c;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#acceptor.close();
    } finally {
      // Portable mode's listener has no fd of instar's (-1): the runtime's server is all.
      if (this.#fd >= 0) closeFd(this.#fd);
      this.#fd = -1;
    }
  }

  drained(): Promise<void> {
    return this.#tracker.drained();
  }

  closeConnections(): void {
    for (const c of [...this.#tracker.conns]) c.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * A listening socket {@link openSocket} opened or adopted: the fd is the caller's to close.
 *
 * @example
 * ```ts
 * import { type OpenSocket, openSocket } from "@instar/instar/unstable";
 *
 * const socket: OpenSocket = await openSocket({ hostname: "127.0.0.1", port: 0 });
 * console.log(socket.fd, socket.addr);
 * ```
 */
export interface OpenSocket {
  /** The close-on-exec, non-blocking listening fd. */
  fd: number;
  /** The address it is bound to (the real port when 0 was asked for). */
  addr: Addr;
}

/**
 * Opens (or adopts) the listening socket for `options` exactly as
 * {@link listen} does, without serving it: for servers that take an fd
 * (`serve()`). The caller owns the fd and closes it.
 *
 * @example
 * ```ts
 * import { openSocket } from "@instar/instar/unstable";
 *
 * const { fd, addr } = await openSocket({ hostname: "127.0.0.1", port: 0 });
 * console.log(fd, addr);
 * ```
 */
export async function openSocket(options: ListenOptions): Promise<OpenSocket> {
  if (options === null || typeof options !== "object") {
    invalid("options", options, "{ hostname?, port }, { path } or { fd }");
  }
  let fd: number;
  if ("fd" in options) fd = adopt(options.fd);
  else if ("path" in options) fd = openUnix(options);
  else if ("port" in options) fd = await openTcp(options);
  else invalid("options", JSON.stringify(options), "{ hostname?, port }, { path } or { fd }");
  try {
    return { fd, addr: decode(getsockname(fd)) };
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/**
 * Like {@link listen}, choosing how the socket is served: `"node"` forces the
 * `node:net` path (for tests of the fallback). `warn` hears what the accept
 * loop recovered from (EMFILE: it backs off and retries); default the console.
 */
export async function openListener(
  options: ListenOptions,
  backend: ListenerBackend = "auto",
  warn?: (message: string) => void,
): Promise<Listener> {
  const { fd, addr } = await openSocket(options);
  try {
    const tracker = new Tracker();
    const acceptor = await startAcceptor(fd, addr, backend, (c) => tracker.add(c), warn);
    return new ListenerImpl(fd, addr, acceptor, tracker);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/**
 * Portable mode (src/runtime/platform.ts): a {@link Listener} whose socket
 * `node:net` opens and serves itself, checked like {@link openListener}'s
 * options; its `fd` is -1 (nothing can pass it on). Listen errors are
 * {@link SystemError}s naming the address, as in the full mode.
 */
export async function openListenerAt(
  options: TcpListenOptions | UnixListenOptions,
): Promise<Listener> {
  const backlog = checkBacklog(options.backlog);
  let where: NetAddress, shown: string;
  if ("path" in options) {
    if (typeof options.path !== "string") invalid("path", options.path, "a Unix socket path");
    checkMode(options.mode);
    where = { path: options.path, backlog };
    shown = `unix:${options.path}`;
  } else {
    const host = options.hostname ?? "0.0.0.0";
    if (typeof host !== "string" || host === "") {
      invalid("hostname", host, "a numeric address or a host name");
    }
    where = { host, port: checkPort(options.port), backlog };
    shown = formatAddr({ transport: "tcp", hostname: host, port: options.port });
  }
  // node:net is loaded only in portable mode (memory, as for the fallback acceptor).
  const { nodeAcceptorAt } = await import("../runtime/listener_node.ts");
  const tracker = new Tracker();
  let opened;
  try {
    opened = await nodeAcceptorAt(where, (c) => tracker.add(c));
  } catch (err) {
    throw netError(err, `cannot listen on ${shown}`);
  }
  if ("path" in options && options.mode !== undefined) {
    await chmodSocket(options.path, options.mode);
  }
  return new ListenerImpl(-1, opened.addr, opened.acceptor, tracker);
}

/** A `node:net` / `node:dgram` error (`code: "EADDRINUSE"`) as a {@link SystemError} saying `what`. */
export function netError(err: unknown, what: string): Error {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== "string") return err as Error;
  const syscall = String((err as { syscall?: unknown }).syscall ?? "listen");
  return new SystemError(syscall, errnoNumber(code) ?? 0, code, what);
}

/** Sets a Unix socket file's mode (portable mode: the runtime created the file). */
export async function chmodSocket(path: string, mode: number): Promise<void> {
  if (path.startsWith("@")) return;
  const { chmod } = await import("node:fs/promises");
  await chmod(path, mode);
}

/**
 * Opens a listening socket and serves it with the runtime's native I/O.
 *
 * Standalone, from `@instar/instar/unstable`: the socket belongs to this
 * process alone and does not survive an upgrade. An application uses
 * `up.listen()` instead, whose socket the next generation inherits.
 *
 * - `{ hostname?, port, backlog? }`: TCP. `hostname` defaults to `"0.0.0.0"`;
 *   `"::"` listens on IPv6 and IPv4; names are resolved with `node:dns`
 *   (`ENOTFOUND` when they do not resolve). Port 0 picks a free port.
 * - `{ path, backlog?, mode? }`: a Unix stream socket (`@name` is abstract).
 * - `{ fd }`: adopts a socket that already listens (inherited, systemd,
 *   SCM_RIGHTS) and takes ownership of it.
 *
 * Errors: `INVALID_ARGUMENT` for bad options (naming the value), a
 * {@link SystemError} such as `EADDRINUSE` or `EBADF`/`ENOTSOCK` naming the
 * address or fd, `ENOTFOUND` for a name that does not resolve.
 *
 * @example
 * ```ts
 * import { listen } from "@instar/instar/unstable";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 8080 });
 * for await (const conn of listener) {
 *   conn.readable.pipeTo(conn.writable).catch(() => {});
 * }
 * ```
 */
export function listen(options: ListenOptions): Promise<Listener> {
  return openListener(options, "auto");
}
