/**
 * How this process was started, captured when instar is loaded: the binary
 * may be replaced on disk later (Deno then reports "… (deleted)"), and
 * `process.env` may have been changed since (Bun loads `.env` into it). The
 * next generation gets the program as it was started.
 *
 * @module
 */

import { cwd, execPath, mayRead } from "../host.ts";
import { readNulList } from "../proc.ts";

/** The executable, argv, environment and working directory this process started with. */
export interface StartInfo {
  /** The executable path (without Deno's " (deleted)" suffix). */
  execPath: string;
  /** argv, runtime flags included; `null` when it could not be read. */
  argv: string[] | null;
  /** The environment as `KEY=value` strings; `null` when it could not be read. */
  env: string[] | null;
  /** The working directory. */
  cwd: string;
  /** Why argv/env could not be read, if they could not. */
  problem: string | null;
}

function capture(): StartInfo {
  const info: StartInfo = {
    execPath: execPath().replace(/ \(deleted\)$/, ""),
    argv: null,
    env: null,
    cwd: cwd(),
    problem: null,
  };
  // Deno without --allow-read (portable mode) would prompt on a terminal: nothing to restart anyway.
  if (!mayRead("/proc/self")) {
    info.problem = "no permission to read /proc/self";
    return info;
  }
  try {
    info.argv = readNulList("/proc/self/cmdline");
    info.env = readNulList("/proc/self/environ");
  } catch (err) {
    info.problem = (err as Error).message;
  }
  return info;
}

/** This process's start, captured once. */
export const START: Readonly<StartInfo> = Object.freeze(capture());
