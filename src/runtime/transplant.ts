/**
 * Transplanting a listening socket under a native server.
 *
 * `Deno.serve`, `Deno.listen`, `Bun.serve`, `Bun.listen` and `node:http` cannot
 * be started on a listening fd instar owns (or only at half speed). Instead the
 * native server is started on a throwaway address (`127.0.0.1:0`), and
 * {@link transplant} moves our socket under the server's fd number: it finds
 * the server's listening fd and its epoll registration, removes the
 * registration, `dup3`s our socket onto that fd number and registers it again
 * with the same events and user data. The runtime's reactor never notices: it
 * keeps accepting from "its" fd, which now is our socket.
 *
 * This depends on undocumented reactor details, so every precondition is
 * checked first; a failed one throws an {@link InstarError} with code
 * `TRANSPLANT_UNSUPPORTED` and nothing has been changed.
 *
 * Linux only (it reads `/proc/self/fd` and `/proc/self/fdinfo`).
 *
 * @module
 */

import { InstarError, SystemError } from "../errors.ts";
import {
  C,
  close,
  dup3,
  epollCtl,
  fcntl,
  getsockname,
  getsockoptInt,
  pipe2,
  sameFile,
  setNonBlocking,
  setsockoptInt,
} from "../ffi/mod.ts";
import { type Addr, decode, formatAddr } from "../ffi/sockaddr.ts";
import { reactorMasks } from "./reactors.ts";
import {
  epollFds,
  type EpollRegistration,
  epollRegistrations as parseFdinfo,
  fdLink,
  openFds,
  socketInode,
} from "../proc.ts";

export type { EpollRegistration } from "../proc.ts";

export { KNOWN_EVENT_MASKS } from "./reactors.ts";

/**
 * How two epoll fds are compared to find whether they are one epoll instance.
 *
 * @example
 * ```ts
 * import { type DedupeMethod, transplant } from "@instar/instar/unstable";
 *
 * const dedupe: DedupeMethod = "probe"; // where seccomp refuses kcmp(2)
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * transplant({ throwaway: server.addr, fd: 3, dedupe });
 * ```
 */
export type DedupeMethod = "kcmp" | "probe";

/**
 * Options of {@link transplant}.
 *
 * @example
 * ```ts
 * import { transplant, type TransplantOptions } from "@instar/instar/unstable";
 *
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * const options: TransplantOptions = { throwaway: server.addr, fd: 3 };
 * transplant(options);
 * ```
 */
export interface TransplantOptions {
  /** The address the native server was started on (`127.0.0.1:<port>`, `[::1]:<port>` or a Unix path). */
  throwaway: Addr;
  /** Our listening socket. It stays ours: the server gets a duplicate of it. */
  fd: number;
  /**
   * How to tell whether two epoll fds are duplicates of one instance: `kcmp`
   * (the default) falls back to `probe` when the kernel refuses `kcmp(2)`
   * (EPERM/ENOSYS under seccomp); `probe` registers a pipe on one and looks for
   * it in the other's fdinfo.
   */
  dedupe?: DedupeMethod;
  /**
   * The epoll event masks (mask → reactor name) of the reactors to accept for
   * this runtime. Default: this runtime's entry of {@link KNOWN_EVENT_MASKS}.
   */
  knownMasks?: Readonly<Record<number, string>>;
}

/**
 * Where a transplanted socket sits; pass it to {@link pauseAccepting}.
 *
 * @example
 * ```ts
 * import { pauseAccepting, transplant, type TransplantInfo } from "@instar/instar/unstable";
 *
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * const info: TransplantInfo = transplant({ throwaway: server.addr, fd: 3 });
 * pauseAccepting(info);
 * ```
 */
export interface TransplantInfo {
  /** The native server's fd number, now a duplicate of our socket. */
  readonly serverFd: number;
  /** Our socket (unchanged; still ours to close). */
  readonly fd: number;
  /** An epoll fd of the reactor the server is registered with. */
  readonly epfd: number;
  /** The registration's event mask. */
  readonly events: number;
  /** The registration's 64-bit user data (the reactor's token). */
  readonly data: bigint;
  /** Which reactor the event mask belongs to. */
  readonly reactor: string;
  /** The address our socket listens on: what the server really serves. */
  readonly addr: Addr;
  /** The throwaway address the server had been started on (now closed). */
  readonly throwaway: Addr;
  /** The TCP_DEFER_ACCEPT seconds copied from the native socket (0 if none). */
  readonly deferAccept: number;
  /** The socket's inode, to recognise the fd later (`socket:[inode]`). */
  readonly inode: number;
  /** How epoll duplicates were told apart. */
  readonly dedupe: DedupeMethod;
}

function unsupported(reason: string): never {
  throw new InstarError(
    "TRANSPLANT_UNSUPPORTED",
    `cannot transplant the listening socket under the native server: ${reason}`,
  );
}

/**
 * The listening sockets of this process bound to `addr`.
 *
 * @example
 * ```ts
 * import { listeningFdsAt } from "@instar/instar/unstable";
 *
 * const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * console.log(listeningFdsAt(server.addr)); // e.g. [21]
 * server.close();
 * ```
 */
export function listeningFdsAt(addr: Addr): number[] {
  const want = formatAddr(addr);
  const found: number[] = [];
  for (const fd of openFds()) {
    if (socketInode(fd) === null) continue;
    try {
      if (getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN) !== 1) continue;
      if (formatAddr(decode(getsockname(fd))) === want) found.push(fd);
    } catch {
      // closed meanwhile, or a family decode() does not know: not ours to move
    }
  }
  return found;
}

/**
 * Every epoll registration of `fd` (whose file has inode `inode`) in this
 * process, one per epoll fd; duplicated epoll fds list the same registration.
 */
export function epollRegistrationsOf(fd: number, inode: number): EpollRegistration[] {
  return epollFds().flatMap((ep) =>
    parseFdinfo(ep).filter((r) => r.tfd === fd && r.inode === inode)
  );
}

const KCMP_REFUSED = new Set(["EPERM", "ENOSYS", "EACCES", "EINVAL"]);

/** Whether `a` and `b` are one epoll instance, found by registering a pipe on `a` and reading `b`. */
function sameByProbe(a: number, b: number): boolean {
  const [r, w] = pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
  try {
    const inode = Number(/\[(\d+)\]/.exec(fdLink(r) ?? "")?.[1] ?? NaN);
    // Mask 0: an idle pipe with its write end open never reports an event.
    epollCtl(a, C.EPOLL_CTL_ADD, r, 0, 0n);
    try {
      return parseFdinfo(b).some((x) => x.tfd === r && x.inode === inode);
    } finally {
      epollCtl(a, C.EPOLL_CTL_DEL, r);
    }
  } finally {
    close(r);
    close(w);
  }
}

/** Whether two epoll fds are one instance; `method` may change from kcmp to probe. */
function sameEpoll(a: number, b: number, method: { use: DedupeMethod }): boolean {
  if (method.use === "kcmp") {
    try {
      return sameFile(a, b);
    } catch (err) {
      if (!(err instanceof SystemError) || !KCMP_REFUSED.has(err.code)) throw err;
      method.use = "probe";
    }
  }
  return sameByProbe(a, b);
}

/** The registrations of `regs` that are distinct epoll instances. */
function distinctInstances(regs: EpollRegistration[], method: { use: DedupeMethod }) {
  const instances: EpollRegistration[] = [];
  for (const r of regs) {
    if (!instances.some((i) => sameEpoll(i.epfd, r.epfd, method))) instances.push(r);
  }
  return instances;
}

function familyOf(fd: number): number {
  return getsockoptInt(fd, C.SOL_SOCKET, C.SO_DOMAIN);
}

interface Plan {
  serverFd: number;
  reg: EpollRegistration;
  reactor: string;
  addr: Addr;
  ourInode: number;
  deferAccept: number;
  method: { use: DedupeMethod };
}

/** Checks every precondition and prepares our socket; changes nothing of the server's. */
function prepare(options: TransplantOptions): Plan {
  const { throwaway, fd } = options;
  const method = { use: options.dedupe ?? "kcmp" };
  if (!Number.isInteger(fd) || fd < 0) unsupported(`fd ${fd} is not a file descriptor`);
  const ourInode = socketInode(fd);
  if (ourInode === null) unsupported(`fd ${fd} is not an open socket`);
  if (getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE) !== C.SOCK_STREAM) {
    unsupported(`fd ${fd} is not a stream socket`);
  }
  if (getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN) !== 1) {
    unsupported(`fd ${fd} is not listening (call listen() on it first)`);
  }
  const addr = decode(getsockname(fd));

  const servers = listeningFdsAt(throwaway);
  if (servers.length !== 1) {
    unsupported(
      `expected one listening socket at ${formatAddr(throwaway)}, found ${servers.length}`,
    );
  }
  const serverFd = servers[0];
  const serverInode = socketInode(serverFd)!;
  if (serverInode === ourInode) unsupported(`fd ${fd} already is the server's socket`);
  if (serverFd === fd) unsupported(`fd ${fd} is the server's fd`);
  const ourFamily = familyOf(fd), serverFamily = familyOf(serverFd);
  if (ourFamily !== serverFamily) {
    unsupported(
      `fd ${fd} (${formatAddr(addr)}) is address family ${ourFamily}, the server's ` +
        `socket (${formatAddr(throwaway)}) family ${serverFamily}: start the server on a ` +
        "throwaway address of the same family",
    );
  }

  const regs = epollRegistrationsOf(serverFd, serverInode);
  if (regs.length === 0) unsupported(`the server's fd ${serverFd} is not registered with epoll`);
  const instances = distinctInstances(regs, method);
  if (instances.length !== 1) {
    unsupported(
      `the server's fd ${serverFd} is registered with ${instances.length} epoll instances`,
    );
  }
  const reg = instances[0];
  const { runtime, masks } = reactorMasks();
  const known = options.knownMasks ?? masks;
  const reactor = known[reg.events];
  if (reactor === undefined) {
    const list = Object.keys(known).map((k) => "0x" + Number(k).toString(16)).join(", ");
    unsupported(
      `the server's epoll event mask 0x${reg.events.toString(16)} is not one instar knows ` +
        `for ${runtime} (${list || "none"})`,
    );
  }

  // A blocking socket would make the reactor block in accept4 forever. O_NONBLOCK
  // lives on the open file description, shared with every duplicate.
  setNonBlocking(fd, true);
  if ((fcntl(fd, C.F_GETFL) & C.O_NONBLOCK) === 0) unsupported(`cannot make fd ${fd} non-blocking`);

  let deferAccept = 0;
  if (ourFamily === C.AF_INET || ourFamily === C.AF_INET6) {
    deferAccept = getsockoptInt(serverFd, C.IPPROTO_TCP, C.TCP_DEFER_ACCEPT);
    if (deferAccept > 0) setsockoptInt(fd, C.IPPROTO_TCP, C.TCP_DEFER_ACCEPT, deferAccept);
  }

  return { serverFd, reg, reactor, addr, ourInode: ourInode!, deferAccept, method };
}

/**
 * Moves our listening socket `fd` under the native server started on
 * `throwaway`: the server then accepts from our socket, at its own speed, and
 * the throwaway socket is closed. Connections already queued on our socket are
 * served. TCP_DEFER_ACCEPT is copied from the native socket; our backlog is
 * kept. Our `fd` stays open and ours (e.g. to pass on to the next generation).
 *
 * Throws `TRANSPLANT_UNSUPPORTED` (and changes nothing) when a precondition
 * fails: no single listening fd at `throwaway`, not exactly one epoll instance
 * registering it, an unknown event mask, `fd` not a listening stream socket of
 * the same address family.
 *
 * @example
 * ```ts
 * import { transplant } from "@instar/instar/unstable";
 *
 * const fd = 3; // a listening socket inherited from the previous generation
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * const info = transplant({ throwaway: server.addr, fd });
 * console.log(info.addr); // the address fd 3 listens on
 * ```
 */
export function transplant(options: TransplantOptions): TransplantInfo {
  const { throwaway, fd } = options;
  let plan: Plan;
  try {
    plan = prepare(options);
  } catch (err) {
    if (err instanceof InstarError && err.code === "TRANSPLANT_UNSUPPORTED") throw err;
    // /proc missing, a socket closed under us, …: nothing has been changed yet.
    throw new InstarError(
      "TRANSPLANT_UNSUPPORTED",
      `cannot transplant the listening socket under the native server: checking the ` +
        `preconditions failed: ${(err as Error)?.message ?? err}`,
      { cause: err },
    );
  }
  const { serverFd, reg, reactor, addr, ourInode, deferAccept, method } = plan;

  // The event loop runs on this thread, so nothing polls between these three calls.
  try {
    epollCtl(reg.epfd, C.EPOLL_CTL_DEL, serverFd);
  } catch (err) {
    throw new InstarError(
      "TRANSPLANT_UNSUPPORTED",
      `cannot transplant the listening socket under the native server: removing its epoll ` +
        `registration failed: ${(err as Error).message}`,
      { cause: err },
    );
  }
  try {
    dup3(fd, serverFd, C.O_CLOEXEC);
  } catch (err) {
    epollCtl(reg.epfd, C.EPOLL_CTL_ADD, serverFd, reg.events, reg.data);
    throw err;
  }
  try {
    epollCtl(reg.epfd, C.EPOLL_CTL_ADD, serverFd, reg.events, reg.data);
  } catch (err) {
    throw new InstarError(
      "TRANSPLANT_FAILED",
      `fd ${fd} was moved onto the server's fd ${serverFd} but registering it with epoll fd ` +
        `${reg.epfd} failed; the server will not accept: restart the process`,
      { cause: err },
    );
  }
  return {
    serverFd,
    fd,
    epfd: reg.epfd,
    events: reg.events,
    data: reg.data,
    reactor,
    addr,
    throwaway,
    deferAccept,
    inode: ourInode,
    dedupe: method.use,
  };
}

/** Whether the transplanted registration is still in place (and the fd still ours). */
function registered(info: TransplantInfo): boolean {
  if (socketInode(info.serverFd) !== info.inode) return false;
  if (fdLink(info.epfd) !== "anon_inode:[eventpoll]") return false;
  return parseFdinfo(info.epfd).some((r) => r.tfd === info.serverFd && r.inode === info.inode);
}

/**
 * Stops the native server accepting new connections from the transplanted
 * socket (EPOLL_CTL_DEL of its registration) without closing anything: queued
 * connections stay queued for whoever else listens on the socket. Returns
 * false when there was nothing to remove (already paused, or the server has
 * closed its fd).
 *
 * @example
 * ```ts
 * import { pauseAccepting, transplant } from "@instar/instar/unstable";
 *
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * const info = transplant({ throwaway: server.addr, fd: 3 });
 * pauseAccepting(info); // the next generation accepts from fd 3 now
 * await new Promise((r) => setTimeout(r, 100));
 * await server.shutdown();
 * ```
 */
export function pauseAccepting(info: TransplantInfo): boolean {
  if (!registered(info)) return false;
  epollCtl(info.epfd, C.EPOLL_CTL_DEL, info.serverFd);
  return true;
}

/**
 * Undoes {@link pauseAccepting}: registers the server's fd again with its
 * original events and data. Returns false when the server has closed its fd or
 * the registration is already there.
 *
 * @example
 * ```ts
 * import { pauseAccepting, resumeAccepting, transplant } from "@instar/instar/unstable";
 *
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * const info = transplant({ throwaway: server.addr, fd: 3 });
 * pauseAccepting(info);
 * resumeAccepting(info); // the upgrade failed: keep serving
 * ```
 */
export function resumeAccepting(info: TransplantInfo): boolean {
  if (socketInode(info.serverFd) !== info.inode) return false;
  if (fdLink(info.epfd) !== "anon_inode:[eventpoll]") return false;
  if (registered(info)) return false;
  epollCtl(info.epfd, C.EPOLL_CTL_ADD, info.serverFd, info.events, info.data);
  return true;
}

/**
 * The epoll registrations {@link pauseSocket} removed, to put back with {@link resumeSocket}.
 *
 * @example
 * ```ts
 * import { type PausedSocket, pauseSocket, resumeSocket } from "@instar/instar/unstable";
 *
 * const paused: PausedSocket = pauseSocket(3);
 * resumeSocket(paused);
 * ```
 */
export interface PausedSocket {
  /** The registrations removed, one per epoll instance. */
  readonly registrations: readonly EpollRegistration[];
}

/**
 * Stops every reactor of this process from accepting on the socket `fd`
 * refers to, whatever fd number the reactor holds it under (a `Deno.listen`,
 * `Bun.listen`, `node:net` or transplanted HTTP server): each epoll
 * registration of the socket is removed. Connections stay queued in the
 * kernel for whoever else listens on the socket. A new generation uses it so
 * that it accepts nothing before it is ready.
 *
 * @example
 * ```ts
 * import { listen, pauseSocket, resumeSocket } from "@instar/instar/unstable";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * const paused = pauseSocket(listener.fd); // connections wait in the kernel
 * resumeSocket(paused);                    // accepted from now on
 * ```
 */
export function pauseSocket(fd: number): PausedSocket {
  const inode = socketInode(fd);
  if (inode === null) unsupported(`fd ${fd} is not an open socket`);
  const removed: EpollRegistration[] = [];
  for (const ep of epollFds()) {
    for (const r of parseFdinfo(ep)) {
      if (r.inode !== inode) continue;
      try {
        epollCtl(r.epfd, C.EPOLL_CTL_DEL, r.tfd);
        removed.push(r);
      } catch (err) {
        // ENOENT: a duplicate of an epoll instance whose registration is already removed.
        if (!(err instanceof SystemError) || err.code !== "ENOENT") throw err;
      }
    }
  }
  return { registrations: removed };
}

/**
 * Puts back what {@link pauseSocket} removed. A registration whose fd the
 * reactor closed meanwhile is skipped.
 *
 * @example
 * ```ts
 * import { listen, pauseSocket, resumeSocket } from "@instar/instar/unstable";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * resumeSocket(pauseSocket(listener.fd));
 * ```
 */
export function resumeSocket(paused: PausedSocket): void {
  for (const r of paused.registrations) {
    if (socketInode(r.tfd) !== r.inode || fdLink(r.epfd) !== "anon_inode:[eventpoll]") continue;
    try {
      epollCtl(r.epfd, C.EPOLL_CTL_ADD, r.tfd, r.events, r.data);
    } catch (err) {
      if (!(err instanceof SystemError) || err.code !== "EEXIST") throw err;
    }
  }
}
