/**
 * The synchronous end of a control channel, used where nothing is served
 * yet (start-up, the CLI) and by the old generation's report to the new one.
 *
 * @module
 */

import * as sys from "../ffi/mod.ts";
import { C } from "../ffi/mod.ts";
import { protocolError, shown } from "./fault.ts";
import type { Message } from "./messages.ts";

/**
 * One end of a control channel: a non-blocking Unix stream socket carrying
 * newline-delimited JSON, read and written through FFI so that both runtimes
 * behave the same. Reads never block; the caller polls.
 */
export class Channel {
  /** The socket fd; -1 once closed. */
  fd: number;
  #buf = "";
  #fds: number[] = [];
  #eof = false;
  #decoder = new TextDecoder();

  /** Wraps `fd` and makes it non-blocking. */
  constructor(fd: number) {
    this.fd = fd;
    sys.setNonBlocking(fd, true);
  }

  /** True once the peer closed its end and every message was read. */
  get eof(): boolean {
    return this.#eof && !this.#buf.includes("\n");
  }

  /**
   * Sends one message, with `fds` attached as SCM_RIGHTS. Waits up to
   * `timeoutMs` for room in the socket buffer (messages are small), blocking
   * the thread: only where nothing is served yet (start-up, the CLI). With
   * `timeoutMs` 0 it never waits: no room is a `PROTOCOL_ERROR` at once.
   */
  send(msg: Message, fds: readonly number[] = [], timeoutMs = 5000): void {
    const bytes = new TextEncoder().encode(JSON.stringify(msg) + "\n");
    let off = 0;
    let first = true;
    const deadline = Date.now() + timeoutMs;
    while (off < bytes.byteLength) {
      const chunk = bytes.subarray(off);
      const n = first && fds.length ? sys.sendFds(this.fd, chunk, fds) : sys.write(this.fd, chunk);
      if (n === null || n === 0) {
        if (timeoutMs <= 0 || Date.now() > deadline) {
          protocolError("the peer does not read the control channel");
        }
        sys.poll([{ fd: this.fd, events: C.POLLOUT }], 50);
        continue;
      }
      off += n;
      first = false;
    }
  }

  /** Reads what has arrived; returns complete messages with the fds that came with them. */
  receive(): { msg: unknown; fds: number[] }[] {
    if (this.fd < 0) return [];
    for (;;) {
      let got: sys.Received | null;
      try {
        got = sys.recvFds(this.fd, 65536, 16);
      } catch (err) {
        // A peer that exits with unread data resets the connection: that is an end, not a fault.
        if ((err as { code?: string }).code !== "ECONNRESET") throw err;
        this.#eof = true;
        break;
      }
      if (got === null) break;
      this.#fds.push(...got.fds);
      if (got.data.byteLength === 0) {
        this.#eof = true;
        break;
      }
      this.#buf += this.#decoder.decode(got.data, { stream: true });
      if (this.#buf.length > 1 << 20) protocolError("message longer than 1 MiB");
    }
    const out: { msg: unknown; fds: number[] }[] = [];
    let nl: number;
    while ((nl = this.#buf.indexOf("\n")) >= 0) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch {
        // Nobody gets the fds that came with this or an earlier line of this read.
        for (const o of out) for (const fd of o.fds) sys.close(fd);
        this.#closeFds();
        protocolError(`malformed message ${shown(line)}`);
      }
      out.push({ msg, fds: this.#fds });
      this.#fds = [];
    }
    return out;
  }

  /**
   * Waits (blocking the thread, up to `timeoutMs`) for the next complete
   * message. Used only at start-up, before the program serves anything.
   */
  receiveSync(timeoutMs: number): { msg: unknown; fds: number[] } {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.receive();
      if (got.length) return got[0];
      if (this.#eof) protocolError("the control channel closed before a message arrived");
      const left = deadline - Date.now();
      if (left <= 0) protocolError(`no message within ${timeoutMs} ms`);
      sys.poll([{ fd: this.fd, events: C.POLLIN }], Math.min(left, 1000));
    }
  }

  #closeFds(): void {
    for (const fd of this.#fds) sys.close(fd);
    this.#fds = [];
  }

  /** Closes the socket and any received fds nobody took. */
  close(): void {
    this.#closeFds();
    if (this.fd >= 0) sys.close(this.fd);
    this.fd = -1;
  }
}
