/**
 * `instar upgrade --pid-file`: the way without a control socket. The PID file
 * is read (refused when stale), the upgrade signal sent, and the file watched
 * until it names a new, live process (and, with a promotion window, for a
 * rollback to the old pid).
 *
 * @module
 */

import { readFileSync, statSync } from "node:fs";
import * as sys from "../ffi/mod.ts";
import { InstarError } from "../errors.ts";
import { processRuns, processStartedAt } from "../proc.ts";
import { sleep } from "../timeout.ts";

/** The pid `pidFile` holds; throws `ENOENT` or `INVALID_PID_FILE`. */
export function readPid(pidFile: string): number {
  let text: string;
  try {
    text = readFileSync(pidFile, "utf8").trim();
  } catch (e) {
    throw new InstarError("ENOENT", `cannot read PID file ${pidFile}: ${(e as Error).message}`);
  }
  if (!/^\d+$/.test(text)) {
    throw new InstarError(
      "INVALID_PID_FILE",
      `PID file ${pidFile} holds ${JSON.stringify(text)}, not a pid`,
    );
  }
  return Number(text);
}

/**
 * The pid a PID file names, refused when that process started after the file
 * was written: the server that wrote it is gone and the pid now belongs to
 * some other process, which must not be signalled.
 */
function livePid(pidFile: string): number {
  const pid = readPid(pidFile);
  if (!processRuns(pid)) {
    throw new InstarError("ESRCH", `PID file ${pidFile} names ${pid}, which is not running`);
  }
  const started = processStartedAt(pid);
  const written = statSync(pidFile).mtimeMs;
  if (started !== null && started > written + 1000) {
    throw new InstarError(
      "STALE_PID_FILE",
      `PID file ${pidFile} names ${pid}, but that process started ${
        new Date(started).toISOString()
      }, after the file was written (${new Date(written).toISOString()}): the file is stale and ` +
        `${pid} is another program; not signalling it`,
    );
  }
  return pid;
}

/** Sends `signal` to the live pid of `pidFile` and waits for a new generation to write the file; its pid. */
export async function upgradeByPidFile(
  pidFile: string,
  signal: string,
  timeout: number,
  progress: (s: string) => void,
  window = 0,
): Promise<number> {
  const old = livePid(pidFile);
  sys.kill(old, sys.SIGNALS[signal]);
  progress(`sent ${signal} to ${old}; waiting for a new generation to write ${pidFile}…`);
  const started = Date.now();
  while (Date.now() - started < timeout) {
    await sleep(100);
    let now: number;
    try {
      now = readPid(pidFile);
    } catch {
      continue; // being replaced
    }
    if (now !== old && processRuns(now)) {
      progress(`ready after ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return window > 0 ? await watchWindow(pidFile, old, now, window, progress) : now;
    }
    if (!processRuns(old) && now === old) {
      throw new InstarError(
        "UPGRADE_FAILED",
        `server ${old} exited and no new generation wrote ${pidFile}`,
      );
    }
  }
  throw new InstarError(
    "TIMEOUT",
    `no new generation within ${timeout} ms; ${old} ${
      processRuns(old) ? "still serves" : "is gone"
    } — see the server's log for the reason, or use --control for it`,
  );
}

// Within the promotion window a rollback rewrites the PID file to the old pid.
async function watchWindow(
  pidFile: string,
  old: number,
  now: number,
  window: number,
  progress: (s: string) => void,
): Promise<number> {
  progress(`watching ${pidFile} for the ${window} ms promotion window…`);
  // A second more: the old generation rewrites the file only after it has seen the failure.
  const end = Date.now() + window + 1000;
  while (Date.now() < end) {
    await sleep(100);
    let pid: number;
    try {
      pid = readPid(pidFile);
    } catch {
      continue;
    }
    if (pid === old && processRuns(old)) {
      throw new InstarError(
        "ROLLED_BACK",
        `upgrade rolled back: ${pidFile} names ${old} again (the new generation ${now} failed ` +
          "within its promotion window; see the server's log for the reason)",
      );
    }
  }
  if (!processRuns(now)) {
    throw new InstarError("UPGRADE_FAILED", `the new generation ${now} is gone after its window`);
  }
  progress("promotion window passed");
  return now;
}
