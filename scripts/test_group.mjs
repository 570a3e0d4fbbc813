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
    const stat = readStat(pid);
    // After the name in parentheses (which may hold spaces): state, ppid, pgrp.
    const fields = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields && Number(fields[2]) === pgid && fields[0] !== "Z") {
      members.push({
        pid: Number(pid),
        name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
      });
    }
  }
  return members;
}

function readStat(pid) {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null; // gone meanwhile
  }
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
