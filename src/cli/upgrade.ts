/**
 * `instar upgrade`: asks a running server to start its new version and waits
 * for the result, through its control socket (progress, the reason of a
 * failure, the upgrade report) or its PID file (`pid_file.ts`).
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { formatReport, type UpgradeReport, validateReport } from "../observe/report.ts";
import type { ControlClient } from "../protocol/client.ts";
import { messages, type StatusReport } from "../protocol/messages.ts";
import { processRuns } from "../proc.ts";
import { sleep } from "../timeout.ts";
import { type UpgradeCommand, UsageError } from "./args.ts";
import { connectServer } from "./connect.ts";
import { upgradeByPidFile } from "./pid_file.ts";
import { statusByControl } from "./status.ts";

/**
 * Runs `instar upgrade`; returns the exit status (0) or throws. With `--json`
 * a failure is also printed on `out` as `{"pid": null, "error": …}`.
 */
export async function upgrade(
  cmd: UpgradeCommand,
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  const progress = (line: string) => err(line + "\n");
  try {
    const { pid, report } = cmd.control !== undefined
      ? await upgradeByControl(cmd.control, { ...cmd, progress })
      : {
        pid: await upgradeByPidFile(cmd.pidFile, cmd.signal, cmd.timeout, progress, cmd.window),
        report: null,
      };
    if (report && !cmd.json) err(formatReport(report));
    out(cmd.json ? JSON.stringify({ pid, report }) + "\n" : `${pid}\n`);
    return 0;
  } catch (e) {
    if (cmd.json && !(e instanceof UsageError)) {
      const reason = (e as InstarError).code ?? "error";
      out(JSON.stringify({ pid: null, error: { reason, message: (e as Error).message } }) + "\n");
    }
    throw e;
  }
}

/** How `instar upgrade --control` runs. */
interface ControlUpgrade {
  timeout: number;
  progress: (s: string) => void;
  trigger?: string;
  waitDrain: boolean;
}

async function upgradeByControl(
  path: string,
  o: ControlUpgrade,
): Promise<{ pid: number; report: UpgradeReport | null }> {
  const client = connectServer(path);
  const started = Date.now();
  let result: { pid: number; report: UpgradeReport | null };
  try {
    client.send(messages.upgrade(o.trigger));
    o.progress(`upgrade requested on ${path}`);
    result = await upgradeResult(client, started, o);
  } finally {
    client.close();
  }
  if (!o.waitDrain || !result.report) return result;
  o.progress(`waiting for generation ${result.report.old.generation} to drain…`);
  const report = await drainedReport(path, result.pid, result.report, started, o);
  return { pid: result.pid, report };
}

async function upgradeResult(
  client: ControlClient,
  started: number,
  o: ControlUpgrade,
): Promise<{ pid: number; report: UpgradeReport | null }> {
  for (;;) {
    const left = o.timeout - (Date.now() - started);
    if (left <= 0) {
      throw new InstarError("TIMEOUT", `no result within ${o.timeout} ms; the server keeps trying`);
    }
    for (const m of client.replies()) {
      if (m.type === "progress") {
        o.progress(`new generation started: pid ${m.pid}; waiting until it is ready…`);
      } else if (m.type === "upgraded") {
        o.progress(`ready after ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return { pid: m.pid, report: m.report === undefined ? null : validateReport(m.report) };
      } else if (m.type === "failed" && m.reason === "rolled-back") {
        throw new InstarError("ROLLED_BACK", `upgrade rolled back: ${m.message}`);
      } else if (m.type === "failed") {
        throw new InstarError("UPGRADE_FAILED", `upgrade failed: ${m.reason}: ${m.message}`);
      } else if (m.type === "refused") {
        throw new InstarError("UPGRADE_REFUSED", `upgrade refused: ${m.reason}: ${m.message}`);
      }
    }
    if (client.ended) {
      throw new InstarError(
        "PROTOCOL_ERROR",
        "the server closed the connection without a result",
      );
    }
    await sleep(50);
  }
}

/** How long the report may take to arrive once the old generation exited. */
const REPORT_GRACE_MS = 2000;

/**
 * The report with its drain part: the old generation sends it to the new
 * one when it has drained, and the new one shows it in its status. Asks
 * every 200 ms; without it in time, the report as it was (drain unknown).
 */
async function drainedReport(
  path: string,
  pid: number,
  report: UpgradeReport,
  started: number,
  o: ControlUpgrade,
): Promise<UpgradeReport> {
  let goneAt: number | null = null;
  while (Date.now() - started < o.timeout) {
    await sleep(200);
    let status: StatusReport;
    try {
      status = statusByControl(path);
    } catch {
      continue; // busy or rate-limited: ask again
    }
    const last = status.lastUpgrade ? validateReport(status.lastUpgrade) : null;
    if (last?.new.pid === pid && last.drain) return last;
    if (processRuns(report.old.pid)) continue;
    goneAt ??= Date.now();
    if (Date.now() - goneAt > REPORT_GRACE_MS) break;
  }
  o.progress(`no drain report from pid ${report.old.pid} (see its log); printing what is known`);
  return report;
}
