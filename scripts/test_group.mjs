// The process group of one test runner (scripts/test.mjs starts each runner as the leader of a
// group of its own): what is still in it, and ending it. A runner that has exited leaves its
// group to whatever its tests started and did not stop; those are named and killed, so that
// they neither hold the runner's output open (the run would wait forever) nor run on.
import { readdirSync, readFileSync } from "node:fs";

/**
 * The processes of group `pgid` (`{ pid, name }`, the leader included while it lives), read from
 * /proc; an empty list where there is no /proc.
 */
export function groupMembers(pgid) {
  let pids;
  try {
    pids = readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    return [];
  }
  const members = [];
  for (const pid of pids) {
    const s = stat(pid);
    if (s && s.group === pgid && s.state !== "Z") members.push({ pid: Number(pid), name: s.name });
  }
  return members;
}

/** The process group of process `pid` (or "self"), or null when it is gone or there is no /proc. */
export function groupOf(pid) {
  return stat(pid)?.group ?? null;
}

// /proc/<pid>/stat: the name in parentheses (which may hold spaces), then state, ppid, pgrp.
function stat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null; // gone meanwhile
  }
  const close = text.lastIndexOf(")");
  const [state, , group] = text.slice(close + 2).split(" ");
  return { name: text.slice(text.indexOf("(") + 1, close), state, group: Number(group) };
}

/** SIGKILL to every process of group `pgid`; false when the group was already empty. */
export function killGroup(pgid) {
  try {
    process.kill(-pgid, "SIGKILL");
    return true;
  } catch {
    return false; // ESRCH: nothing left
  }
}
