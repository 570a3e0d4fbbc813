/**
 * The supervisor's own `NOTIFY_SOCKET`: a Unix datagram socket in a private
 * 0700 directory that the generations send `READY=1`, `MAINPID=`, `STATUS=`,
 * `STOPPING=1` … to. Every datagram is hostile input: read without blocking
 * (the kernel raises SIGIO when one arrives; O_ASYNC), at most
 * {@link NOTIFY_MAX_BYTES} (longer ones are dropped, as systemd drops them),
 * strictly `KEY=VALUE` lines, each tagged with the sender's pid and uid from
 * SCM_CREDENTIALS (filled in by the kernel, not by the sender). Fds attached to
 * a datagram are closed unread. Whether the sender may say what it says is the
 * supervisor's decision (`supervisor.ts`).
 *
 * @module
 */

import process from "node:process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../ffi/mod.ts";
import { encodeUnix } from "../ffi/sockaddr.ts";
import { NOTIFY_MAX_BYTES } from "../systemd/notify.ts";

/**
 * One validated datagram.
 *
 * @example
 * ```ts
 * import type { NotifyMessage } from "./notify_socket.ts";
 *
 * const m: NotifyMessage = { pid: 42, uid: 0, fields: new Map([["READY", "1"]]) };
 * console.log(m.fields.get("READY"));
 * ```
 */
export interface NotifyMessage {
  /** The sender's pid (SCM_CREDENTIALS). */
  pid: number;
  /** The sender's uid (SCM_CREDENTIALS). */
  uid: number;
  /** The fields in the order sent; a repeated key keeps its last value. */
  fields: Map<string, string>;
}

/** The most datagrams read per wake-up before yielding to the event loop. */
export const NOTIFY_BATCH = 64;
const MAX_FIELDS = 32;
const KEY = /^[A-Z][A-Z0-9_]{0,63}$/;
const MSG_TRUNC = 0x20;
const strict = new TextDecoder("utf-8", { fatal: true });

/**
 * Parses a datagram's text: `KEY=VALUE` lines (the last newline optional).
 * Returns why it is refused instead, as a string.
 *
 * @example
 * ```ts
 * import { parseNotify } from "./notify_socket.ts";
 *
 * const r = parseNotify(new TextEncoder().encode("READY=1\nSTATUS=ok\n"));
 * if (typeof r !== "string") console.log(r.get("STATUS")); // "ok"
 * ```
 */
export function parseNotify(bytes: Uint8Array): Map<string, string> | string {
  let text: string;
  try {
    text = strict.decode(bytes);
  } catch {
    return "not UTF-8";
  }
  if (text.includes("\0")) return "holds a NUL byte";
  const lines = text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
  if (lines.length > MAX_FIELDS) return `more than ${MAX_FIELDS} fields`;
  const fields = new Map<string, string>();
  for (const line of lines) {
    const eq = line.indexOf("=");
    const key = eq < 0 ? line : line.slice(0, eq);
    if (eq < 0 || !KEY.test(key)) {
      return `line ${JSON.stringify(line.slice(0, 40))} is not KEY=VALUE`;
    }
    fields.set(key, line.slice(eq + 1));
  }
  return fields;
}

/**
 * Why a datagram was ignored; each kind is rate-limited on its own.
 *
 * @example
 * ```ts
 * import type { RefusalKind } from "./notify_socket.ts";
 *
 * const kind: RefusalKind = "oversized";
 * ```
 */
export type RefusalKind = "oversized" | "malformed" | "credentials" | "stranger" | "mainpid";

/** Rate-limited warnings: a flood of bad datagrams costs a log line per kind per 10 s. */
class Warnings {
  #last = new Map<RefusalKind, { at: number; held: number }>();
  constructor(readonly warn: (m: string) => void) {}
  say(kind: RefusalKind, m: string): void {
    const now = performance.now();
    const last = this.#last.get(kind) ?? { at: -Infinity, held: 0 };
    this.#last.set(kind, last);
    if (now - last.at < 10_000) {
      last.held++;
      return;
    }
    const more = last.held ? ` (${last.held} more like it ignored since)` : "";
    last.at = now;
    last.held = 0;
    this.warn(`NOTIFY_SOCKET: ${m}${more}`);
  }
}

/**
 * The supervisor's notification socket. Create with {@link NotifySocket.open};
 * messages arrive through `onMessage`, refusals through `warn` (rate-limited).
 *
 * @example
 * ```ts
 * import { NotifySocket } from "./notify_socket.ts";
 *
 * const ns = NotifySocket.open((m) => console.log(m.pid, m.fields), console.warn);
 * console.log(`NOTIFY_SOCKET=${ns.path}`);
 * ns.close();
 * ```
 */
export class NotifySocket {
  /** The socket's path, for the children's `NOTIFY_SOCKET`. */
  readonly path: string;
  readonly #dir: string;
  readonly #fd: number;
  readonly #onMessage: (m: NotifyMessage) => void;
  readonly #warnings: Warnings;
  #onSignal = () => this.drain();
  #more: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  // Reused for every datagram: one byte more than the limit tells an oversized one.
  #data = new Uint8Array(NOTIFY_MAX_BYTES + 1);
  #control = new Uint8Array(256);
  #iov = new Uint8Array(sys.platform().layout.iovec.size);
  #msg = new Uint8Array(sys.platform().layout.msghdr.size);

  private constructor(
    dir: string,
    fd: number,
    onMessage: (m: NotifyMessage) => void,
    warn: (m: string) => void,
  ) {
    this.#dir = dir;
    this.path = join(dir, "notify");
    this.#fd = fd;
    this.#onMessage = onMessage;
    this.#warnings = new Warnings(warn);
  }

  /**
   * Binds the socket in a fresh 0700 directory (under `$TMPDIR` or /tmp), asks
   * the kernel for senders' credentials and a SIGIO per datagram.
   */
  static open(
    onMessage: (m: NotifyMessage) => void,
    warn: (m: string) => void,
    parent: string = tmpdir(),
  ): NotifySocket {
    const C = sys.C;
    const dir = mkdtempSync(join(parent, "instar-run-")); // mode 0700
    const fd = sys.socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
    try {
      sys.bind(fd, encodeUnix(join(dir, "notify")), `NOTIFY_SOCKET in ${dir}`);
      sys.setsockoptInt(fd, C.SOL_SOCKET, C.SO_PASSCRED, 1);
      const ns = new NotifySocket(dir, fd, onMessage, warn);
      // The listener first: SIGIO's default action ends the process. It stays installed
      // for good (a late SIGIO after close() must not find the default action).
      process.on("SIGIO", ns.#onSignal);
      sys.fcntl(fd, C.F_SETOWN, sys.getpid());
      sys.fcntl(fd, C.F_SETFL, sys.fcntl(fd, C.F_GETFL) | C.O_ASYNC);
      ns.drain(); // anything that came before O_ASYNC
      return ns;
    } catch (err) {
      sys.close(fd);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Reads what is queued: up to `limit` datagrams now ({@link NOTIFY_BATCH} by
   * default), the rest on the next turn of the event loop.
   */
  drain(limit: number = NOTIFY_BATCH): void {
    if (this.#closed) return;
    for (let i = 0; i < limit; i++) {
      if (!this.#receiveOne()) return;
    }
    this.#more ??= setTimeout(() => {
      this.#more = undefined;
      this.drain();
    }, 0);
  }

  // One datagram; false when none is queued.
  #receiveOne(): boolean {
    const b = sys.backend();
    const L = sys.platform().layout;
    const iov = new DataView(this.#iov.buffer);
    iov.setBigUint64(L.iovec.base, b.addressOf(this.#data), true);
    iov.setBigUint64(L.iovec.len, BigInt(this.#data.byteLength), true);
    const msg = new DataView(this.#msg.buffer);
    this.#msg.fill(0);
    msg.setBigUint64(L.msghdr.iov, b.addressOf(this.#iov), true);
    msg.setBigUint64(L.msghdr.iovlen, 1n, true);
    msg.setBigUint64(L.msghdr.control, b.addressOf(this.#control), true);
    msg.setBigUint64(L.msghdr.controllen, BigInt(this.#control.byteLength), true);
    const flags = MSG_TRUNC | sys.C.MSG_DONTWAIT | sys.C.MSG_CMSG_CLOEXEC;
    const n = Number(b.libc.recvmsg(this.#fd, this.#msg, flags));
    if (n < 0) {
      const errno = b.errno();
      if (errno === sys.EAGAIN) return false;
      this.#warnings.say("credentials", `recvmsg failed: ${sys.errnoName(errno)}`);
      return errno === sys.errnoNumber("EINTR");
    }
    const cred = this.#controlMessages(Number(msg.getBigUint64(L.msghdr.controllen, true)));
    this.#judge(n, cred);
    return true;
  }

  // The sender's credentials; fds someone attached are closed.
  #controlMessages(len: number): { pid: number; uid: number } | null {
    const L = sys.platform().layout;
    const cdv = new DataView(this.#control.buffer);
    const align = (x: number) => (x + L.cmsghdr.align - 1) & ~(L.cmsghdr.align - 1);
    let cred: { pid: number; uid: number } | null = null;
    for (let off = 0; off + L.cmsghdr.size <= len;) {
      const clen = Number(cdv.getBigUint64(off + L.cmsghdr.len, true));
      if (clen < L.cmsghdr.size || off + clen > len) break;
      const level = cdv.getInt32(off + L.cmsghdr.level, true);
      const type = cdv.getInt32(off + L.cmsghdr.type, true);
      const data = off + align(L.cmsghdr.size);
      if (level === sys.C.SOL_SOCKET && type === sys.C.SCM_CREDENTIALS) {
        cred = { pid: cdv.getInt32(data + L.ucred.pid, true), uid: cdv.getUint32(data + 4, true) };
      } else if (level === sys.C.SOL_SOCKET && type === sys.C.SCM_RIGHTS) {
        for (let p = data; p + 4 <= off + clen; p += 4) {
          try {
            sys.close(cdv.getInt32(p, true));
          } catch { /* nothing to do */ }
        }
      }
      off += align(clen);
    }
    return cred;
  }

  #judge(n: number, cred: { pid: number; uid: number } | null): void {
    const who = cred ? `pid ${cred.pid}` : "an unknown sender";
    if (n > NOTIFY_MAX_BYTES) {
      return this.#warnings.say(
        "oversized",
        `ignored a ${n}-byte datagram from ${who} (at most ${NOTIFY_MAX_BYTES})`,
      );
    }
    if (!cred) return this.#warnings.say("credentials", "ignored a datagram without credentials");
    const fields = parseNotify(this.#data.subarray(0, n));
    if (typeof fields === "string") {
      return this.#warnings.say("malformed", `ignored a datagram from ${who}: ${fields}`);
    }
    this.#onMessage({ pid: cred.pid, uid: cred.uid, fields });
  }

  /** Reports a refused message through the rate-limited warnings. */
  refuse(kind: RefusalKind, message: string): void {
    this.#warnings.say(kind, message);
  }

  /** Stops listening, closes the socket and removes its directory. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#more);
    sys.close(this.#fd);
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
