/**
 * The PID file: written atomically when a generation is ready, removed when
 * the last one stops.
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
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";

/**
 * Writes `pid` to `path` through a new file with a random name in the same
 * directory (created exclusively, never through a symlink), synced, then
 * renamed over `path`.
 */
export function writePidFile(path: string, pid: number): void {
  const tmp = join(dirname(path), `.${randomBytes(8).toString("hex")}.pid.tmp`);
  const fd = openSync(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
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
