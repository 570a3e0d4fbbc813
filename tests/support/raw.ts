/**
 * Raw control-socket clients and fd counting for the tests that play hostile
 * peers (tests/control_test.ts, tests/fuzz_test.ts): bytes and fds go out with
 * sendmsg(2) and come back with recvmsg(2), through instar's own FFI, so a
 * test can send what no well-behaved client would. Test support, not a test.
 *
 * @module
 */
import { readdirSync } from "node:fs";
import * as sys from "../../src/ffi/mod.ts";
import { C } from "../../src/ffi/mod.ts";
import { encodeUnix } from "../../src/ffi/sockaddr.ts";
import { sleep } from "./procs.ts";

/** A non-blocking connection to the control socket at `ctl`. */
export function rawConnect(ctl: string): number {
  const fd = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.connect(fd, encodeUnix(ctl));
  return fd;
}

/** sendmsg(2) without SIGPIPE: bytes sent, 0 when the buffer is full, -1 once the peer is gone. */
export function rawWrite(fd: number, bytes: Uint8Array, fds: number[] = []): number {
  try {
    return sys.sendFds(fd, bytes, fds);
  } catch (e) {
    return (e as { code?: string }).code === "EAGAIN" ? 0 : -1; // EPIPE / ECONNRESET: closed
  }
}

/** Sends `text` whole on `fd` (fds attached if given); false once the peer is gone. */
export function rawSend(fd: number, text: string, fds: number[] = []): boolean {
  const bytes = new TextEncoder().encode(text);
  return rawWrite(fd, bytes, fds) === bytes.byteLength;
}

/** Everything readable on `fd` now, with the fds that came with it; `eof`: the end came. */
export function rawRead(fd: number): { text: string; eof: boolean; fds: number[] } {
  let text = "";
  const fds: number[] = [];
  for (;;) {
    let got: sys.Received | null;
    try {
      got = sys.recvFds(fd, 65536, 16);
    } catch {
      return { text, eof: true, fds }; // ECONNRESET after the data: an end
    }
    if (got === null) return { text, eof: false, fds };
    fds.push(...got.fds);
    if (got.data.byteLength === 0) return { text, eof: true, fds };
    text += new TextDecoder().decode(got.data);
  }
}

/** How many fds process `pid` has open. */
export function fdCount(pid: number | "self"): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** `pid`'s fd count once it is steady (two equal readings 200 ms apart). */
export async function steadyFds(pid: number): Promise<number> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const now = fdCount(pid);
    if (now === last) return now;
    last = now;
    await sleep(200);
  }
  return last;
}
