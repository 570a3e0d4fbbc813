/**
 * `instar status`: what the server reports through its control socket, or,
 * with less detail, whether the process its PID file names runs.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { formatReport } from "../observe/report.ts";
import { type FdLimit, messages, type StatusReport } from "../protocol/messages.ts";
import { processRuns } from "../proc.ts";
import type { StatusCommand } from "./args.ts";
import { connectServer } from "./connect.ts";
import { readPid } from "./pid_file.ts";

/** What a PID file alone tells. */
interface PidStatus {
  pid: number;
  running: boolean;
}

/** Runs `instar status`; returns the exit status. */
export function status(cmd: StatusCommand, out: (s: string) => void): number {
  const report = cmd.control !== undefined
    ? statusByControl(cmd.control)
    : statusByPidFile(cmd.pidFile);
  out(cmd.json ? JSON.stringify(report) + "\n" : formatStatus(report));
  return 0;
}

/** Asks the server at `path` for its status. */
export function statusByControl(path: string): StatusReport {
  const client = connectServer(path);
  try {
    client.send(messages.status());
    const m = client.replySync(10_000);
    if (m.type === "failed") {
      throw new InstarError("REFUSED", `the server refused: ${m.reason}: ${m.message}`);
    }
    if (m.type !== "status-reply") {
      throw new InstarError("PROTOCOL_ERROR", `unexpected reply ${m.type}`);
    }
    return m.status;
  } finally {
    client.close();
  }
}

function statusByPidFile(pidFile: string): PidStatus {
  const pid = readPid(pidFile);
  return { pid, running: processRuns(pid) };
}

// e.g. "fd limit 65536 (hard 65536)"
function formatFdLimit(l: FdLimit): string {
  const n = (v: number | null) => (v === null ? "unlimited" : String(v));
  return `fd limit ${n(l.soft)} (hard ${n(l.hard)})`;
}

function formatStatus(r: StatusReport | PidStatus): string {
  if (!("generation" in r)) return `pid ${r.pid}: ${r.running ? "running" : "not running"}\n`;
  const count = (n: number | null) => (n === null ? "?" : String(n));
  const lines = [
    `pid ${r.pid}  generation ${r.generation}  state ${r.state}`,
    ...r.listeners.map((l) => `  ${l.addr}  ${count(l.connections)} open connection(s)`),
  ];
  if (r.fdLimit) lines.push(`  ${formatFdLimit(r.fdLimit)}`);
  if (r.previous) {
    lines.push(`pid ${r.previous.pid}  generation ${r.previous.generation}  state draining`);
    for (const l of r.previous.listeners) {
      lines.push(`  ${l.addr}  ${count(l.connections)} open connection(s)`);
    }
  }
  if (r.lastUpgrade) lines.push(`last ${formatReport(r.lastUpgrade).trimEnd()}`);
  return lines.join("\n") + "\n";
}
