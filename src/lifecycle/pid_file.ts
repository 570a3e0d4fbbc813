/**
 * The PID file: written atomically when a generation is ready, removed when
 * the last one stops. Put it in a directory only the server's user can
 * write (e.g. `/run/app/app.pid`), never in a shared one like /tmp.
 *
 * @module
 */

import {
  closeSync,
  constants,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import type * as crypto from "node:crypto";
import process from "node:process";
import { dirname, join } from "node:path";

/** A fresh temp file name next to `path`: nobody can plant a file there in advance. */
function randomTempName(path: string): string {
  // node:crypto is loaded on first use: only generations with a pid file pay for it (memory).
  const { randomBytes } = process.getBuiltinModule("node:crypto") as typeof crypto;
  return join(dirname(path), `.${randomBytes(8).toString("hex")}.pid.tmp`);
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
      fd = openSync(
        tmp,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o644,
      );
    } catch (err) {
      if ((err as { code?: string }).code !== "EEXIST" || i + 1 >= ATTEMPTS) throw err;
    }
  }
  try {
    writeSync(fd, `${pid}\n`);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

/** Removes `path` if it still names this process (a later generation may own it now). */
export function removePidFileIfOurs(path: string, pid: number): void {
  try {
    if (readFileSync(path, "utf8").trim() === String(pid)) rmSync(path);
  } catch { /* already gone */ }
}
