/**
 * Whether a process descends from another, read from /proc (each step's
 * parent pid), bounded in depth: a notification is believed only from a
 * descendant of the supervisor.
 *
 * @module
 */

import { readdirSync } from "node:fs";
import { parentOf } from "../proc.ts";

/** The deepest process tree walked; deeper chains are not believed. */
export const MAX_DEPTH = 64;

/**
 * Whether `pid` is `ancestor` itself's descendant (a child, grandchild, …);
 * `false` for `ancestor` itself, for a process that is gone, and past
 * {@link MAX_DEPTH} steps.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { descendsFrom } from "./ancestry.ts";
 *
 * console.log(descendsFrom(process.pid, 1)); // true: everything descends from init
 * ```
 */
export function descendsFrom(pid: number, ancestor: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === ancestor) return false;
  let p: number | null = pid;
  for (let i = 0; i < MAX_DEPTH && p !== null && p > 0; i++) {
    p = parentOf(p);
    if (p === ancestor) return true;
  }
  return false;
}

/**
 * The pids whose parent is `pid` (a scan of /proc; for the supervisor's last
 * look at orphans it adopted, not for a hot path).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { childrenOf } from "./ancestry.ts";
 *
 * console.log(childrenOf(process.pid)); // [] when nothing was started
 * ```
 */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const e of entries) {
    if (/^[0-9]+$/.test(e) && parentOf(Number(e)) === pid) out.push(Number(e));
  }
  return out;
}
