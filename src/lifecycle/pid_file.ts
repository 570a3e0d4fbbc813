/**
 * The PID file: written atomically when a generation is ready, removed when
 * the last one stops. Put it in a directory only the server's user can
 * write (e.g. `/run/app/app.pid`), never in a shared one like /tmp.
 *
 * @module
 */

import type * as Fs from "node:fs";
import * as host from "../host.ts";
import type * as Path from "node:path";

// node:path is loaded by the first call that needs it, not at start-up (memory: docs/benchmarks.md).
const nodePath = (): typeof Path => host.builtin("node:path");

// node:fs is loaded by the first call that needs it, not at start-up (memory: docs/benchmarks.md).
const fs = (): typeof Fs => host.builtin("node:fs");

/** A fresh temp file name next to `path`: nobody can plant a file there in advance. */
function randomTempName(path: string): string {
  // Web Crypto's global, not node:crypto: loading that cost each generation with a pid file
  // ~13 ms of CPU on Deno (and up to +7 MB resident where nothing else of node: was loaded).
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const { dirname, join } = nodePath();
  return join(dirname(path), `.${hex}.pid.tmp`);
}

// How many names are tried when one exists already (only a planted file, or a 2^-64 collision).
const ATTEMPTS = 8;

/**
 * Writes `pid` to `path` through a new file with a random name in the same
 * directory (created exclusively, never through a symlink), synced, then
 * renamed over `path`. A symlink at `path` is replaced by the file, never
 * written through: the file it pointed to is left as it was.
 * `tempName` is for tests.
 */
export function writePidFile(
  path: string,
  pid: number,
  tempName: (path: string) => string = randomTempName,
): void {
  let fd = -1, tmp = "";
  for (let i = 0; fd < 0; i++) {
    tmp = tempName(path);
    try {
      // O_EXCL: an existing file or symlink at the name fails; O_NOFOLLOW for good measure.
      const O = fs().constants;
      fd = fs().openSync(
        tmp,
        O.O_WRONLY | O.O_CREAT | O.O_EXCL | O.O_NOFOLLOW,
        0o644,
      );
    } catch (err) {
      if ((err as { code?: string }).code !== "EEXIST" || i + 1 >= ATTEMPTS) throw err;
    }
  }
  try {
    fs().writeSync(fd, `${pid}\n`);
    fs().fsyncSync(fd);
  } catch (err) {
    fs().closeSync(fd);
    fs().rmSync(tmp, { force: true });
    throw err;
  }
  fs().closeSync(fd);
  fs().renameSync(tmp, path);
}

/** Removes `path` if it still names this process (a later generation may own it now). */
export function removePidFileIfOurs(path: string, pid: number): void {
  try {
    if (fs().readFileSync(path, "utf8").trim() === String(pid)) fs().rmSync(path);
  } catch { /* already gone */ }
}
