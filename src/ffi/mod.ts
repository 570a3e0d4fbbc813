/**
 * The runtime seam: picks the FFI backend for the running runtime (loaded
 * lazily, on first use) and wraps libc in thin typed functions that throw a
 * {@link SystemError} carrying the errno name when a call fails.
 *
 * Nothing outside `src/ffi/` asks which runtime it runs on, except where a
 * runtime API genuinely differs.
 *
 * @module
 */

import { InstarError, SystemError } from "../errors.ts";
import type { Backend } from "./backend.ts";
import { openBun, toBunSignature } from "./backend_bun.ts";
import { type Signature, SYMBOLS } from "./symbols.ts";
import { openDeno } from "./backend_deno.ts";
import { DARWIN_ERRNO, LINUX_ERRNO } from "./errno.ts";
import { C, osArch, platform } from "./layout.ts";

export type { Backend } from "./backend.ts";
export { C, osArch, platform, signalName, SIGNALS } from "./layout.ts";

let opened: Backend | undefined;

/** Which JavaScript runtime this is; `undefined` outside Deno and Bun. */
export function runtimeName(): "deno" | "bun" | undefined {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  if (g.Bun !== undefined) return "bun";
  if (g.Deno !== undefined) return "deno";
  return undefined;
}

/** The libc file names to try, in order, for this platform. */
export function libcCandidates(
  os: string = osArch().os,
  arch: string = osArch().arch,
): string[] {
  if (os === "darwin") return ["libSystem.B.dylib", "/usr/lib/libSystem.B.dylib"];
  const muslArch = arch === "x64" ? "x86_64" : arch === "arm64" ? "aarch64" : arch;
  return ["libc.so.6", `libc.musl-${muslArch}.so.1`, `/lib/ld-musl-${muslArch}.so.1`, "libc.so"];
}

/** The FFI backend of this runtime, opened on first use. */
export function backend(): Backend {
  if (opened) return opened;
  const rt = runtimeName();
  const darwin = osArch().os === "darwin";
  if (rt === "deno") opened = openDeno(libcCandidates(), darwin);
  else if (rt === "bun") opened = openBun(libcCandidates(), darwin);
  else {
    throw new InstarError(
      "UNSUPPORTED_RUNTIME",
      "instar runs on Deno and Bun (it needs their FFI); this runtime has neither",
    );
  }
  return opened;
}

/** The errno name of a number on this platform, or `E<n>` for an unknown one. */
export function errnoName(errno: number): string {
  const table = osArch().os === "darwin" ? DARWIN_ERRNO : LINUX_ERRNO;
  return table[errno] ?? `E${errno}`;
}

/** The errno number of a name on this platform, or `undefined`. */
export function errnoNumber(name: string): number | undefined {
  const table = osArch().os === "darwin" ? DARWIN_ERRNO : LINUX_ERRNO;
  for (const [n, v] of Object.entries(table)) if (v === name) return Number(n);
  return undefined;
}

/** Throws the SystemError for a call that just failed; read errno before anything else runs. */
export function fail(syscall: string, detail?: string): never {
  const errno = backend().errno();
  throw new SystemError(syscall, errno, errnoName(errno), detail);
}

function ok(result: number | bigint, syscall: string, detail?: () => string): number {
  const n = Number(result);
  if (n === -1) fail(syscall, detail?.());
  return n;
}

function libc() {
  return backend().libc;
}

// Looked up in this platform's errno table (EAGAIN is 11 on Linux, 35 on macOS).
const EINTR = errnoNumber("EINTR")!;
/** EAGAIN on this platform: a non-blocking call found nothing to do. */
export const EAGAIN: number = errnoNumber("EAGAIN")!;

// ---------------------------------------------------------------- sockets

/** `socket(2)`; returns the fd. */
export function socket(domain: number, type: number, protocol = 0): number {
  return ok(libc().socket(domain, type, protocol), "socket");
}

/** `setsockopt(2)` with an int value. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value, true);
  ok(libc().setsockopt(fd, level, name, v, 4), "setsockopt");
}

/** `getsockopt(2)` into a buffer of `size` bytes; returns the bytes the kernel wrote. */
export function getsockopt(fd: number, level: number, name: number, size: number): Uint8Array {
  const v = new Uint8Array(size);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, size, true);
  ok(libc().getsockopt(fd, level, name, v, len), "getsockopt", () => `fd ${fd}`);
  return v.subarray(0, new DataView(len.buffer).getUint32(0, true));
}

/** `getsockopt(2)` of an int value. */
export function getsockoptInt(fd: number, level: number, name: number): number {
  const v = getsockopt(fd, level, name, 4);
  return new DataView(v.buffer, v.byteOffset).getInt32(0, true);
}

/** `bind(2)` to an encoded sockaddr. */
export function bind(fd: number, addr: Uint8Array, detail?: string): void {
  ok(libc().bind(fd, addr, addr.byteLength), "bind", () => detail ?? `fd ${fd}`);
}

/** `listen(2)`. */
export function listenFd(fd: number, backlog: number): void {
  ok(libc().listen(fd, backlog), "listen", () => `fd ${fd}`);
}

/** `connect(2)` to an encoded sockaddr (blocking sockets; Unix paths connect at once). */
export function connect(fd: number, addr: Uint8Array, detail?: string): void {
  for (;;) {
    if (libc().connect(fd, addr, addr.byteLength) === 0) return;
    if (backend().errno() !== EINTR) fail("connect", detail ?? `fd ${fd}`);
  }
}

/**
 * `shutdown(2)`. On a listening socket it stops the socket for every process
 * that shares it: new connections are refused. Never use it for a handover.
 */
export function shutdown(fd: number, how: number): void {
  ok(libc().shutdown(fd, how), "shutdown", () => `fd ${fd}`);
}

/** `accept4(2)`; returns the new fd, or -1 when nothing is queued on a non-blocking socket. */
export function accept4(fd: number, flags: number): number {
  const r = libc().accept4(fd, null, null, flags);
  if (r === -1) {
    const errno = backend().errno();
    if (errno === EAGAIN) return -1;
    throw new SystemError("accept4", errno, errnoName(errno), `fd ${fd}`);
  }
  return r;
}

function nameOf(
  f: (fd: number, buf: Uint8Array, len: Uint8Array) => number,
  syscall: string,
  fd: number,
): Uint8Array {
  const size = platform().layout.sockaddrStorage.size;
  const buf = new Uint8Array(size);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, size, true);
  ok(f(fd, buf, len), syscall, () => `fd ${fd}`);
  return buf.subarray(0, new DataView(len.buffer).getUint32(0, true));
}

/** `getsockname(2)`; returns the encoded sockaddr. */
export function getsockname(fd: number): Uint8Array {
  return nameOf(libc().getsockname, "getsockname", fd);
}

/** `getpeername(2)`; returns the encoded sockaddr. */
export function getpeername(fd: number): Uint8Array {
  return nameOf(libc().getpeername, "getpeername", fd);
}

/**
 * How many connections wait in a listening TCP socket's accept queue (TCP_INFO:
 * `tcpi_unacked` is the queue's length on a listening socket); `null` for a
 * socket that is not TCP.
 */
export function acceptQueueLength(fd: number): number | null {
  const l = platform().layout.tcpInfo;
  let v: Uint8Array;
  try {
    v = getsockopt(fd, C.IPPROTO_TCP, C.TCP_INFO, l.size);
  } catch {
    return null; // EOPNOTSUPP: a Unix socket
  }
  if (v.byteLength < l.unacked + 4) return null;
  return new DataView(v.buffer, v.byteOffset).getUint32(l.unacked, true);
}

/**
 * The TCP state of a connected socket (TCP_INFO's first byte, `tcpi_state`:
 * 1 is ESTABLISHED, 8 CLOSE_WAIT); `null` for a socket that is not TCP.
 */
export function tcpState(fd: number): number | null {
  try {
    return getsockopt(fd, C.IPPROTO_TCP, C.TCP_INFO, platform().layout.tcpInfo.size)[0] ?? null;
  } catch {
    return null; // EOPNOTSUPP: a Unix socket
  }
}

/** The peer's credentials of a Unix socket (`SO_PEERCRED`). */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  const l = platform().layout.ucred;
  const v = getsockopt(fd, C.SOL_SOCKET, C.SO_PEERCRED, l.size);
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  return {
    pid: dv.getInt32(l.pid, true),
    uid: dv.getUint32(l.uid, true),
    gid: dv.getUint32(l.gid, true),
  };
}

/** `socketpair(2)`; returns both fds. */
export function socketpair(domain: number, type: number): [number, number] {
  const sv = new Int32Array(2);
  ok(libc().socketpair(domain, type, 0, new Uint8Array(sv.buffer)), "socketpair");
  return [sv[0], sv[1]];
}

// ---------------------------------------------------------------- fds

/** `fcntl(2)` with an int argument. */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return ok(libc().fcntl(fd, cmd, arg), "fcntl", () => `fd ${fd}`);
}

/** Sets or clears `FD_CLOEXEC`. */
export function setCloexec(fd: number, on: boolean): void {
  const flags = fcntl(fd, C.F_GETFD);
  fcntl(fd, C.F_SETFD, on ? flags | C.FD_CLOEXEC : flags & ~C.FD_CLOEXEC);
}

/** Sets or clears `O_NONBLOCK` (on the open file description, shared by every dup). */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = fcntl(fd, C.F_GETFL);
  fcntl(fd, C.F_SETFL, on ? flags | C.O_NONBLOCK : flags & ~C.O_NONBLOCK);
}

/** `dup3(2)`. */
export function dup3(oldfd: number, newfd: number, flags: number): number {
  return ok(libc().dup3(oldfd, newfd, flags), "dup3", () => `${oldfd} onto ${newfd}`);
}

/** A close-on-exec duplicate of `fd` (`F_DUPFD_CLOEXEC`) numbered at least `min`. */
export function dupCloexec(fd: number, min = 3): number {
  return fcntl(fd, C.F_DUPFD_CLOEXEC, min);
}

/** `close(2)`; EINTR is not retried (Linux closes the fd regardless). */
export function close(fd: number): void {
  const r = libc().close(fd);
  if (r === -1 && backend().errno() !== EINTR) fail("close", `fd ${fd}`);
}

/** `pipe2(2)`; returns [read end, write end]. */
export function pipe2(flags: number): [number, number] {
  const fds = new Int32Array(2);
  ok(libc().pipe2(new Uint8Array(fds.buffer), flags), "pipe2");
  return [fds[0], fds[1]];
}

/** `read(2)`; returns the bytes read (0 at end of file), or `null` on EAGAIN. */
export function read(fd: number, buf: Uint8Array): number | null {
  for (;;) {
    const n = Number(libc().read(fd, buf, buf.byteLength));
    if (n >= 0) return n;
    const errno = backend().errno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new SystemError("read", errno, errnoName(errno), `fd ${fd}`);
  }
}

/** `write(2)`; returns the bytes written, or `null` on EAGAIN. */
export function write(fd: number, buf: Uint8Array): number | null {
  for (;;) {
    const n = Number(libc().write(fd, buf, buf.byteLength));
    if (n >= 0) return n;
    const errno = backend().errno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new SystemError("write", errno, errnoName(errno), `fd ${fd}`);
  }
}

/** One entry of {@link poll}. */
export interface PollFd {
  /** The fd to watch. */
  fd: number;
  /** `POLLIN`, `POLLOUT`, … */
  events: number;
  /** Filled in by {@link poll}. */
  revents?: number;
}

/** `poll(2)`, blocking the calling thread up to `timeoutMs`; fills `revents`, returns how many are ready. */
export function poll(fds: PollFd[], timeoutMs: number): number {
  const l = platform().layout.pollfd;
  const buf = new Uint8Array(l.size * fds.length);
  const dv = new DataView(buf.buffer);
  fds.forEach((p, i) => {
    dv.setInt32(i * l.size + l.fd, p.fd, true);
    dv.setInt16(i * l.size + l.events, p.events, true);
  });
  let n: number;
  for (;;) {
    n = libc().poll(buf, fds.length, timeoutMs);
    if (n !== -1) break;
    if (backend().errno() !== EINTR) fail("poll");
  }
  fds.forEach((p, i) => (p.revents = dv.getInt16(i * l.size + l.revents, true)));
  return n;
}

// ---------------------------------------------------------------- worker threads

/**
 * What a worker thread needs to load one symbol of the table itself (a
 * worker has its own FFI): the library file this thread loaded, and the
 * symbol's signature in Deno's and in Bun's notation.
 */
export function symbolForWorker(name: keyof typeof SYMBOLS): {
  lib: string;
  deno: Signature;
  bun: { args: string[]; returns: string };
} {
  const sig = SYMBOLS[name] as Signature;
  return { lib: backend().path, deno: sig, bun: toBunSignature(sig) };
}

// ---------------------------------------------------------------- datagrams

/**
 * `sendto(2)` of one datagram to an encoded sockaddr, never blocking
 * (MSG_DONTWAIT); returns the bytes sent, or `null` when the socket buffer is
 * full (EAGAIN).
 */
export function sendTo(fd: number, data: Uint8Array, to: Uint8Array): number | null {
  const b = backend();
  for (;;) {
    const n = Number(
      b.libc.sendto(fd, data, data.byteLength, C.MSG_DONTWAIT | C.MSG_NOSIGNAL, to, to.byteLength),
    );
    if (n >= 0) return n;
    const errno = b.errno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new SystemError("sendto", errno, errnoName(errno), `fd ${fd}`);
  }
}

/** What {@link recvFrom} received. */
export interface Datagram {
  /** The datagram's bytes (cut to the buffer's size when `truncated`). */
  data: Uint8Array;
  /** The sender's encoded sockaddr (empty for an unnamed Unix sender). */
  from: Uint8Array;
  /** The datagram was longer than the buffer; the rest is lost. */
  truncated: boolean;
}

/**
 * `recvfrom(2)` of one datagram of up to `maxBytes`, never blocking
 * (MSG_DONTWAIT); `null` when none is queued (EAGAIN).
 */
export function recvFrom(fd: number, maxBytes: number): Datagram | null {
  const b = backend();
  const size = platform().layout.sockaddrStorage.size;
  const data = new Uint8Array(maxBytes);
  const from = new Uint8Array(size);
  const len = new Uint8Array(4);
  const lenDv = new DataView(len.buffer);
  for (;;) {
    lenDv.setUint32(0, size, true);
    // MSG_TRUNC: the result is the datagram's real length, so truncation shows.
    const n = Number(b.libc.recvfrom(fd, data, maxBytes, C.MSG_DONTWAIT | C.MSG_TRUNC, from, len));
    if (n >= 0) {
      const fromLen = Math.min(lenDv.getUint32(0, true), size);
      return {
        data: data.subarray(0, Math.min(n, maxBytes)),
        from: from.subarray(0, fromLen),
        truncated: n > maxBytes,
      };
    }
    const errno = b.errno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new SystemError("recvfrom", errno, errnoName(errno), `fd ${fd}`);
  }
}

// ---------------------------------------------------------------- SCM_RIGHTS

/** The most fds {@link sendFds} and {@link recvFds} move in one message. */
export const MAX_FDS_PER_MESSAGE = 253; // SCM_MAX_FD on Linux

// sendmsg/recvmsg get only the msghdr as an argument; the iovec, the data and the control
// buffer are reached through addresses written into it. The runtime's GC sees no use of
// those buffers after addressOf() and may free them (Bun: their memory then reused) before
// the kernel reads or writes them. Storing them here after the call keeps them alive
// through it. (A Bun test process once crashed at address 0x0 under the fuzz tests.)
const keptAlive: { buffers: unknown[] } = { buffers: [] };
function keepAlive(...buffers: unknown[]): void {
  keptAlive.buffers = buffers;
}

function cmsgAlign(n: number): number {
  const a = platform().layout.cmsghdr.align;
  return (n + a - 1) & ~(a - 1);
}

/**
 * `sendmsg(2)` of `data` with `fds` attached as SCM_RIGHTS. Blocks the thread if
 * the socket is blocking and full; returns the bytes sent.
 */
export function sendFds(fd: number, data: Uint8Array, fds: readonly number[]): number {
  if (data.byteLength === 0) {
    throw new InstarError("INVALID_ARGUMENT", "sendFds needs at least one byte of data");
  }
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `cannot pass ${fds.length} fds in one message (max ${MAX_FDS_PER_MESSAGE})`,
    );
  }
  const b = backend();
  const L = platform().layout;
  const iov = new Uint8Array(L.iovec.size);
  const iovDv = new DataView(iov.buffer);
  iovDv.setBigUint64(L.iovec.base, b.addressOf(data), true);
  iovDv.setBigUint64(L.iovec.len, BigInt(data.byteLength), true);
  const dataLen = 4 * fds.length;
  const control = fds.length
    ? new Uint8Array(cmsgAlign(L.cmsghdr.size) + cmsgAlign(dataLen))
    : null;
  if (control) {
    const cdv = new DataView(control.buffer);
    cdv.setBigUint64(L.cmsghdr.len, BigInt(cmsgAlign(L.cmsghdr.size) + dataLen), true);
    cdv.setInt32(L.cmsghdr.level, C.SOL_SOCKET, true);
    cdv.setInt32(L.cmsghdr.type, C.SCM_RIGHTS, true);
    fds.forEach((f, i) => cdv.setInt32(cmsgAlign(L.cmsghdr.size) + 4 * i, f, true));
  }
  const msg = new Uint8Array(L.msghdr.size);
  const mdv = new DataView(msg.buffer);
  mdv.setBigUint64(L.msghdr.iov, b.addressOf(iov), true);
  mdv.setBigUint64(L.msghdr.iovlen, 1n, true);
  if (control) {
    mdv.setBigUint64(L.msghdr.control, b.addressOf(control), true);
    mdv.setBigUint64(L.msghdr.controllen, BigInt(control.byteLength), true);
  }
  for (;;) {
    const n = Number(b.libc.sendmsg(fd, msg, C.MSG_NOSIGNAL));
    if (n >= 0) {
      keepAlive(data, iov, control, msg);
      return n;
    }
    if (b.errno() !== EINTR) fail("sendmsg", `fd ${fd}`);
  }
}

/** What {@link recvFds} received. */
export interface Received {
  /** The bytes received; empty at end of stream. */
  data: Uint8Array;
  /** The fds that came with them, close-on-exec. */
  fds: number[];
  /** True when the kernel dropped fds because the control buffer was too small. */
  truncated: boolean;
}

/**
 * `recvmsg(2)` of up to `maxBytes` and `maxFds` fds (received with
 * MSG_CMSG_CLOEXEC). Returns `null` on EAGAIN for a non-blocking socket.
 */
export function recvFds(
  fd: number,
  maxBytes: number,
  maxFds = MAX_FDS_PER_MESSAGE,
): Received | null {
  const b = backend();
  const L = platform().layout;
  const data = new Uint8Array(maxBytes);
  const iov = new Uint8Array(L.iovec.size);
  const iovDv = new DataView(iov.buffer);
  iovDv.setBigUint64(L.iovec.base, b.addressOf(data), true);
  iovDv.setBigUint64(L.iovec.len, BigInt(maxBytes), true);
  const control = new Uint8Array(cmsgAlign(L.cmsghdr.size) + cmsgAlign(4 * maxFds));
  const msg = new Uint8Array(L.msghdr.size);
  const mdv = new DataView(msg.buffer);
  mdv.setBigUint64(L.msghdr.iov, b.addressOf(iov), true);
  mdv.setBigUint64(L.msghdr.iovlen, 1n, true);
  mdv.setBigUint64(L.msghdr.control, b.addressOf(control), true);
  mdv.setBigUint64(L.msghdr.controllen, BigInt(control.byteLength), true);
  let n: number;
  for (;;) {
    n = Number(b.libc.recvmsg(fd, msg, C.MSG_CMSG_CLOEXEC));
    if (n >= 0) break;
    const errno = b.errno();
    keepAlive(data, iov, control, msg);
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new SystemError("recvmsg", errno, errnoName(errno), `fd ${fd}`);
  }
  keepAlive(data, iov, control, msg);
  const fds: number[] = [];
  const controllen = Number(mdv.getBigUint64(L.msghdr.controllen, true));
  const cdv = new DataView(control.buffer);
  for (let off = 0; off + L.cmsghdr.size <= controllen;) {
    const len = Number(cdv.getBigUint64(off + L.cmsghdr.len, true));
    if (len < L.cmsghdr.size) break;
    if (
      cdv.getInt32(off + L.cmsghdr.level, true) === C.SOL_SOCKET &&
      cdv.getInt32(off + L.cmsghdr.type, true) === C.SCM_RIGHTS
    ) {
      const start = off + cmsgAlign(L.cmsghdr.size);
      for (let p = start; p + 4 <= off + len; p += 4) fds.push(cdv.getInt32(p, true));
    }
    off += cmsgAlign(len);
  }
  const flags = mdv.getInt32(L.msghdr.flags, true);
  return { data: data.subarray(0, n), fds, truncated: (flags & C.MSG_CTRUNC) !== 0 };
}

// ---------------------------------------------------------------- processes

/** `getpid(2)`. */
export function getpid(): number {
  return libc().getpid();
}

/** `getppid(2)`. */
export function getppid(): number {
  return libc().getppid();
}

/** `getuid(2)`. */
export function getuid(): number {
  return libc().getuid();
}

/** `kill(2)`. */
export function kill(pid: number, signo: number): void {
  ok(libc().kill(pid, signo), "kill", () => `pid ${pid}, signal ${signo}`);
}

/** How a reaped child ended. */
export type WaitStatus =
  | { pid: number; exited: true; code: number }
  | { pid: number; exited: false; signal: number };

/** `waitpid(pid, WNOHANG)`: the child's end if it has ended (and is now reaped), else `null`. */
export function waitpidNoHang(pid: number): WaitStatus | null {
  const status = new Int32Array(1);
  for (;;) {
    const r = libc().waitpid(pid, new Uint8Array(status.buffer), C.WNOHANG);
    if (r === 0) return null;
    if (r > 0) {
      const s = status[0];
      if ((s & 0x7f) === 0) return { pid: r, exited: true, code: (s >> 8) & 0xff };
      return { pid: r, exited: false, signal: s & 0x7f };
    }
    if (backend().errno() !== EINTR) fail("waitpid", `pid ${pid}`);
  }
}

/** `waitpid(pid, 0)`: waits for the child to end and reaps it. Only for a child known to be ending. */
export function waitpidBlocking(pid: number): WaitStatus {
  const status = new Int32Array(1);
  for (;;) {
    const n = libc().waitpid(pid, new Uint8Array(status.buffer), 0);
    if (n > 0) {
      const s = status[0];
      if ((s & 0x7f) === 0) return { pid: n, exited: true, code: (s >> 8) & 0xff };
      return { pid: n, exited: false, signal: s & 0x7f };
    }
    if (backend().errno() !== EINTR) fail("waitpid", `pid ${pid}`);
  }
}

/** `pidfd_open(2)`; returns a close-on-exec fd that becomes readable when the process ends. */
export function pidfdOpen(pid: number): number {
  return ok(libc().syscall(C.SYS_pidfd_open, pid, 0, 0, 0, 0), "pidfd_open", () => `pid ${pid}`);
}

/** `kcmp(KCMP_FILE)`: whether two of this process's fds refer to the same open file description. */
export function sameFile(fd1: number, fd2: number): boolean {
  const pid = getpid();
  const r = ok(
    libc().syscall(platform().sysKcmp, pid, pid, C.KCMP_FILE, fd1, fd2),
    "kcmp",
    () => `fds ${fd1} and ${fd2}`,
  );
  return r === 0;
}

/** CLOCK_MONOTONIC in microseconds (what systemd's MONOTONIC_USEC expects). */
export function monotonicUsec(): bigint {
  const l = platform().layout.timespec;
  const ts = new Uint8Array(l.size);
  ok(libc().clock_gettime(C.CLOCK_MONOTONIC, ts), "clock_gettime");
  const dv = new DataView(ts.buffer);
  return dv.getBigInt64(l.sec, true) * 1_000_000n + dv.getBigInt64(l.nsec, true) / 1000n;
}

/** A resource limit: the soft one (enforced) and the hard one (the ceiling the soft one may be raised to). */
export interface ResourceLimit {
  /** The soft limit; `Infinity` for RLIM_INFINITY. */
  soft: number;
  /** The hard limit; `Infinity` for RLIM_INFINITY. */
  hard: number;
}

const RLIM_INFINITY = 0xffffffffffffffffn;

const rlimValue = (v: bigint): number => v === RLIM_INFINITY ? Infinity : Number(v);
const rlimRaw = (v: number): bigint => v === Infinity ? RLIM_INFINITY : BigInt(v);

/** `getrlimit(RLIMIT_NOFILE)`: how many fds this process may hold. */
export function getNofileLimit(): ResourceLimit {
  const l = platform().layout.rlimit;
  const buf = new Uint8Array(l.size);
  ok(libc().getrlimit(C.RLIMIT_NOFILE, buf), "getrlimit", () => "RLIMIT_NOFILE");
  const dv = new DataView(buf.buffer);
  return {
    soft: rlimValue(dv.getBigUint64(l.cur, true)),
    hard: rlimValue(dv.getBigUint64(l.max, true)),
  };
}

/** `setrlimit(RLIMIT_NOFILE)`; throws a SystemError (EPERM, EINVAL) naming the values. */
export function setNofileLimit(limit: ResourceLimit): void {
  const l = platform().layout.rlimit;
  const buf = new Uint8Array(l.size);
  const dv = new DataView(buf.buffer);
  dv.setBigUint64(l.cur, rlimRaw(limit.soft), true);
  dv.setBigUint64(l.max, rlimRaw(limit.hard), true);
  ok(
    libc().setrlimit(C.RLIMIT_NOFILE, buf),
    "setrlimit",
    () => `RLIMIT_NOFILE soft ${limit.soft}, hard ${limit.hard}`,
  );
}

// ---------------------------------------------------------------- memory and epoll

/** `mmap(2)` of anonymous private memory; returns its address. */
export function mmapAnonymous(length: number, prot: number): bigint {
  const r = BigInt(libc().mmap(0, length, prot, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0));
  if (r === 0xffffffffffffffffn || r === -1n) fail("mmap", `${length} bytes`);
  return r;
}

/** `memfd_create(2)`: an anonymous file in memory; returns its fd (pass `C.MFD_CLOEXEC`, …). */
export function memfdCreate(name: string, flags: number): number {
  const cName = new TextEncoder().encode(`${name}\0`);
  return ok(libc().memfd_create(cName, flags), "memfd_create", () => name);
}

/** `ftruncate(2)`: sets the size of the file on `fd`. */
export function ftruncate(fd: number, length: number): void {
  ok(libc().ftruncate(fd, length), "ftruncate", () => `fd ${fd}, ${length} bytes`);
}

/** The size of the file on `fd` (`lseek(fd, 0, SEEK_END)`: moves its offset to the end). */
export function fileSize(fd: number): number {
  return ok(libc().lseek(fd, 0, C.SEEK_END), "lseek", () => `fd ${fd}`);
}

/** `mmap(2)` of `length` bytes of the file on `fd`, shared with every process that maps it, read and write. */
export function mmapShared(fd: number, length: number): bigint {
  const prot = C.PROT_READ | C.PROT_WRITE;
  const r = BigInt(libc().mmap(0, length, prot, C.MAP_SHARED, fd, 0));
  if (r === 0xffffffffffffffffn || r === -1n) fail("mmap", `fd ${fd}, ${length} bytes`);
  return r;
}

/** The native memory at `addr` as an ArrayBuffer (no copy): keep it mapped while the buffer lives. */
export function arrayBufferAt(addr: bigint, length: number): ArrayBuffer {
  return backend().arrayBufferAt(addr, length);
}

/** `mprotect(2)`. */
export function mprotect(addr: bigint, length: number, prot: number): void {
  ok(libc().mprotect(addr, length, prot), "mprotect");
}

/** `munmap(2)`. */
export function munmap(addr: bigint, length: number): void {
  ok(libc().munmap(addr, length), "munmap");
}

/** `epoll_create1(2)`; returns the epoll fd (pass `C.O_CLOEXEC`). */
export function epollCreate(flags: number): number {
  return ok(libc().epoll_create1(flags), "epoll_create1");
}

/** `close_range(2)` (Linux 5.9+; `C.CLOSE_RANGE_CLOEXEC` needs 5.11+). */
export function closeRange(first: number, last: number, flags: number): void {
  ok(libc().syscall(C.SYS_close_range, first, last, flags, 0, 0), "close_range");
}

/** Copies `bytes` to the native memory at `addr` (e.g. a mapping from {@link mmapAnonymous}). */
export function copyToAddress(addr: bigint, bytes: Uint8Array): void {
  libc().memcpy(addr, bytes, bytes.byteLength);
}

/** `epoll_ctl(2)`; `data` is the 64-bit user data. */
export function epollCtl(epfd: number, op: number, fd: number, events = 0, data = 0n): void {
  const l = platform().layout.epollEvent;
  const ev = new Uint8Array(l.size);
  const dv = new DataView(ev.buffer);
  dv.setUint32(l.events, events, true);
  dv.setBigUint64(l.data, data, true);
  ok(libc().epoll_ctl(epfd, op, fd, ev), "epoll_ctl", () => `epfd ${epfd}, op ${op}, fd ${fd}`);
}

/** The C library's description of an errno number. */
export function strerror(errno: number): string {
  return backend().readCString(BigInt(libc().strerror(errno)));
}
