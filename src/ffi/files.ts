/**
 * Reading a file, a symbolic link and a directory through libc: Bun's
 * synchronous `/proc` reads (src/host.ts), where `node:fs` would cost every
 * generation 3 MB resident at start-up (docs/benchmarks.md "A minimal app's
 * memory"). Linux only: `openat(2)`, `readlinkat(2)` and `getdents64(2)` by
 * number through `syscall(3)`, and `read(2)`, `close(2)`.
 *
 * @module
 */

import { SystemError } from "../errors.ts";
import { backend, close, errnoName, platform, read } from "./mod.ts";

const AT_FDCWD = -100;
const O_RDONLY_CLOEXEC = 0o2000000;
const EINTR = 4;

/** A NUL-terminated copy of `path`, for the kernel. */
function cPath(path: string): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Calls syscall `nr`, retried on EINTR; throws a `SystemError` naming `what` and `path`. */
function sys(name: string, path: string, nr: number, ...args: (number | bigint)[]): number {
  const b = backend();
  for (;;) {
    const a = [...args, 0, 0, 0, 0, 0].slice(0, 5);
    const r = Number(b.libc.syscall(nr, a[0], a[1], a[2], a[3], a[4]));
    if (r >= 0) return r;
    const errno = b.errno();
    if (errno !== EINTR) throw new SystemError(name, errno, errnoName(errno), path);
  }
}

/** Opens `path` read-only and close-on-exec. */
function openRead(path: string): number {
  const p = cPath(path);
  return sys(
    "open",
    path,
    platform().sysFiles.openat,
    AT_FDCWD,
    backend().addressOf(p),
    O_RDONLY_CLOEXEC,
  );
}

/** The bytes of file `path` (a `/proc` file reports size 0: it is read until end of file). */
export function readFileBytes(path: string): Uint8Array {
  const fd = openRead(path);
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const buf = new Uint8Array(total < 65536 ? 4096 : 65536);
      const n = read(fd, buf) ?? 0;
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) out.set(c, at), at += c.length;
    return out;
  } finally {
    close(fd);
  }
}

/** Where symbolic link `path` points. */
export function readLinkText(path: string): string {
  const p = cPath(path);
  for (let size = 256;; size *= 4) {
    const buf = new Uint8Array(size);
    const b = backend();
    const n = sys(
      "readlink",
      path,
      platform().sysFiles.readlinkat,
      AT_FDCWD,
      b.addressOf(p),
      b.addressOf(buf),
      size,
    );
    if (n < size) return new TextDecoder().decode(buf.subarray(0, n));
  }
}

/** The names in directory `path`, without `.` and `..`. */
export function readDirNames(path: string): string[] {
  const fd = openRead(path);
  const names: string[] = [];
  try {
    const buf = new Uint8Array(32768);
    const view = new DataView(buf.buffer);
    const decoder = new TextDecoder();
    for (;;) {
      const n = sys(
        "getdents64",
        path,
        platform().sysFiles.getdents64,
        fd,
        backend().addressOf(buf),
        buf.length,
      );
      if (n === 0) break;
      // struct linux_dirent64: ino u64, off s64, reclen u16 @16, type u8 @18, name @19 (NUL-terminated)
      for (let at = 0; at < n;) {
        const reclen = view.getUint16(at + 16, true);
        const end = buf.indexOf(0, at + 19);
        const name = decoder.decode(
          buf.subarray(at + 19, end < 0 || end > at + reclen ? at + reclen : end),
        );
        if (name !== "." && name !== "..") names.push(name);
        at += reclen;
      }
    }
  } finally {
    close(fd);
  }
  return names;
}
