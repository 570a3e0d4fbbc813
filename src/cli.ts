#!/usr/bin/env bun
/**
 * The `instar` command: asks a running server to upgrade, or reports its
 * status, through its control socket (or, with less detail, its PID file).
 *
 *   instar upgrade --control /run/app/instar.sock
 *   instar upgrade --pid-file /run/app.pid
 *   instar status  --control /run/app/instar.sock [--json]
 *
 * Runs under Bun (`bunx instar …` after `bun add instar`) and Deno
 * (`deno run -A jsr:@instar/instar/cli …`).
 *
 * @module
 */

import process from "node:process";
import { readFileSync, statSync } from "node:fs";
import { parseArgs } from "node:util";
import * as sys from "./ffi/mod.ts";
import { InstarError } from "./errors.ts";
import { PROTOCOL_VERSION, type StatusReport } from "./protocol/messages.ts";
import { messageOf } from "./protocol/validate.ts";
import type { Channel } from "./protocol/channel.ts";
import { connectControl, nobodyThere } from "./protocol/client.ts";
import { processRuns, processStartedAt } from "./proc.ts";
import { checkSignal } from "./lifecycle/signals.ts";
import { sleep } from "./timeout.ts";
import { formatReport, TRIGGER, type UpgradeReport, validateReport } from "./observe/report.ts";
import { runSupervisor } from "./supervisor/run.ts";

const HELP: Record<string, string> = {
  main: `instar — zero-downtime upgrades for Deno and Bun servers

Usage:
  instar upgrade (--control <path> | --pid-file <path>) [--timeout <ms>] [--json] [--wait-drain]
  instar status  (--control <path> | --pid-file <path>) [--json]
  instar run [options] -- <command> [args...]
  instar <command> --help

Commands:
  upgrade   start the new version of a running server and wait until it is ready
  status    print pid, generation, state, listeners and open connections
  run       supervise a server: upgrades as PID 1, crash restarts (docs/supervisor.md)
`,
  upgrade: `instar upgrade — start the new version of a running server

Usage:
  instar upgrade --control <path> [--timeout <ms>] [--json] [--wait-drain] [--trigger <word>]
  instar upgrade --pid-file <path> [--signal SIGHUP] [--promotion-window <ms>] [--timeout <ms>] [--json]

With --control the server reports progress and the reason of a failure
(exited, killed, ready-timeout, exec-failed, protocol-error, in-progress,
promotion-window, rolled-back). A server with a promotion window answers when
the window has passed (or the new generation was rolled back).
With --pid-file instar sends the upgrade signal and waits until the PID file
names a new, live process; the reason of a failure is in the server's log.
With --promotion-window (the server's promotionWindow) it then watches the
PID file for that long: back to the old pid is a rollback.

With --control the upgrade report (trigger, pids, time to spawn and to ready)
is printed on stderr when the new generation is ready; the old generation
drains after that, so the drain part (duration, connections at the handover,
finished vs cut) is printed only with --wait-drain, which waits for it.

Exit status: 0 and the new pid on stdout when the new generation is ready
(and promoted); 3 when it was rolled back within the promotion window (the
old generation serves on; the reason on stderr); 1 with the reason on stderr
for any other failure; 2 for bad usage. With --json stdout is one JSON object
instead: {"pid": <new pid>, "report": <report or null>}, or
{"pid": null, "error": {"reason", "message"}} on failure.

Options:
  --control <path>   the server's control socket (Upgrader option controlSocket)
  --pid-file <path>  the server's PID file (Upgrader option pidFile)
  --signal <name>    upgrade signal for --pid-file (default SIGHUP)
  --promotion-window <ms>  with --pid-file: watch for a rollback this long
  --timeout <ms>     give up waiting after this long (default 120000; with a
                     promotion window it must cover ready time plus the window)
  --json             print one JSON object on stdout (see above)
  --wait-drain       with --control: also wait until the old generation drained
  --trigger <word>   with --control: what the report names as the trigger
                     (default cli; e.g. watch, for a supervisor)
  -h, --help         this text
`,
  status: `instar status — report on a running server

Usage:
  instar status --control <path> [--json]
  instar status --pid-file <path> [--json]

Options:
  --control <path>   the server's control socket
  --pid-file <path>  the server's PID file (reports only the pid and whether it runs)
  --json             print JSON
  -h, --help         this text
`,
};

class UsageError extends Error {}

/** The exit status of `instar upgrade` when the new generation was rolled back. */
export const EXIT_ROLLED_BACK = 3;

// The lifecycle's own check, and SIGTERM/SIGINT, which stop the server instead.
function checkUpgradeSignal(signal: string): void {
  let ok = !["SIGTERM", "SIGINT"].includes(signal);
  try {
    checkSignal("--signal", signal);
  } catch {
    ok = false;
  }
  if (!ok) throw new UsageError(`--signal ${signal} is not an upgrade signal (default SIGHUP)`);
}

/** Runs the command line `args`; returns the exit status. Output goes to `out` and `err`. */
export async function main(
  args: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  try {
    const [command, ...rest] = args;
    if (command === undefined || command === "-h" || command === "--help" || command === "help") {
      out(HELP.main);
      return command === undefined ? 2 : 0;
    }
    if (command === "run") return await run(rest, out, err);
    if (command !== "upgrade" && command !== "status") {
      throw new UsageError(
        `unknown command ${JSON.stringify(command)}; expected upgrade, status or run`,
      );
    }
    let values: Record<string, string | boolean | undefined>;
    try {
      ({ values } = parseArgs({
        args: rest,
        options: {
          control: { type: "string" },
          "pid-file": { type: "string" },
          signal: { type: "string" },
          timeout: { type: "string" },
          "promotion-window": { type: "string" },
          json: { type: "boolean" },
          "wait-drain": { type: "boolean" },
          trigger: { type: "string" },
          help: { type: "boolean", short: "h" },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (e) {
      // parseArgs explains over several lines; the usage error is one.
      throw new UsageError((e as Error).message.replace(/\s*\n\s*/g, " "));
    }
    if (values.help) {
      out(HELP[command]);
      return 0;
    }
    const control = values.control as string | undefined;
    const pidFile = values["pid-file"] as string | undefined;
    if (!control === !pidFile) {
      throw new UsageError("give exactly one of --control <path> or --pid-file <path>");
    }
    const timeout = values.timeout === undefined ? 120_000 : Number(values.timeout);
    if (!Number.isFinite(timeout) || timeout <= 0) {
      throw new UsageError(`--timeout ${values.timeout} is not a positive number of milliseconds`);
    }
    const signal = (values.signal as string | undefined) ?? "SIGHUP";
    if (values.signal !== undefined && (command !== "upgrade" || !pidFile)) {
      throw new UsageError("--signal applies only to upgrade --pid-file");
    }
    checkUpgradeSignal(signal);
    const trigger = values.trigger as string | undefined;
    if ((trigger !== undefined || values["wait-drain"]) && (command !== "upgrade" || !control)) {
      throw new UsageError("--trigger and --wait-drain apply only to upgrade --control");
    }
    if (trigger !== undefined && !TRIGGER.test(trigger)) {
      throw new UsageError(
        `--trigger ${trigger} is not a lower-case word of at most 32 characters`,
      );
    }
    const window = values["promotion-window"] === undefined
      ? 0
      : Number(values["promotion-window"]);
    if (!Number.isSafeInteger(window) || window < 0) {
      throw new UsageError(
        `--promotion-window ${values["promotion-window"]} is not a whole number of milliseconds`,
      );
    }
    if (window > 0 && (command !== "upgrade" || !pidFile)) {
      throw new UsageError(
        "--promotion-window applies only to upgrade --pid-file (with --control the server reports a rollback)",
      );
    }
    if (command === "status") {
      const report = control ? statusByControl(control) : statusByPidFile(pidFile!);
      out(values.json ? JSON.stringify(report) + "\n" : formatStatus(report));
      return 0;
    }
    const progress = (line: string) => err(line + "\n");
    const json = values.json === true;
    try {
      const { pid, report } = control
        ? await upgradeByControl(control, {
          timeout,
          progress,
          trigger,
          waitDrain: values["wait-drain"] === true,
        })
        : {
          pid: await upgradeByPidFile(pidFile!, signal, timeout, progress, window),
          report: null,
        };
      if (report && !json) err(formatReport(report));
      out(json ? JSON.stringify({ pid, report }) + "\n" : `${pid}\n`);
      return 0;
    } catch (e) {
      if (json && !(e instanceof UsageError)) {
        const reason = (e as InstarError).code ?? "error";
        out(JSON.stringify({ pid: null, error: { reason, message: (e as Error).message } }) + "\n");
      }
      throw e;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`instar: ${e.message} (see instar --help)\n`);
      return 2;
    }
    if ((e as InstarError).code === "ROLLED_BACK") {
      err(`instar: ${(e as Error).message}\n`);
      return EXIT_ROLLED_BACK;
    }
    err(`instar: ${(e as Error).message}\n`);
    return 1;
  }
}

// `instar run`: bad usage (INVALID_ARGUMENT from its option parser) is a usage error.
async function run(
  args: string[],
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  try {
    return await runSupervisor(args, out, err);
  } catch (e) {
    if ((e as InstarError).code === "INVALID_ARGUMENT") throw new UsageError((e as Error).message);
    throw e;
  }
}

function connect(path: string): Channel {
  let ch: Channel;
  try {
    ch = connectControl(path);
  } catch (e) {
    if (!nobodyThere(e)) throw e;
    const code = (e as InstarError).code;
    throw new InstarError(
      code,
      `no server answers on ${path} (${code}): is it running with controlSocket set to this path?`,
    );
  }
  // Whoever bound the path first answers: only a server of our own user is believed.
  const { uid } = sys.peerCred(ch.fd);
  if (uid !== sys.getuid()) {
    ch.close();
    throw new InstarError(
      "PERMISSION_DENIED",
      `the process answering on ${path} runs as uid ${uid}, not ${sys.getuid()}: not trusting it ` +
        "(run instar as the server's user)",
    );
  }
  return ch;
}

function statusByControl(path: string): StatusReport {
  const ch = connect(path);
  try {
    ch.send({ type: "status", v: PROTOCOL_VERSION });
    const m = messageOf(ch.receiveSync(10_000).msg);
    if (m.type === "failed") {
      throw new InstarError("REFUSED", `the server refused: ${m.reason}: ${m.message}`);
    }
    if (m.type !== "status-reply") {
      throw new InstarError("PROTOCOL_ERROR", `unexpected reply ${m.type}`);
    }
    return m.status;
  } finally {
    ch.close();
  }
}

function readPid(pidFile: string): number {
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

function statusByPidFile(pidFile: string): { pid: number; running: boolean } {
  const pid = readPid(pidFile);
  return { pid, running: processRuns(pid) };
}

function formatStatus(
  r: ReturnType<typeof statusByControl> | ReturnType<typeof statusByPidFile>,
): string {
  if (!("generation" in r)) return `pid ${r.pid}: ${r.running ? "running" : "not running"}\n`;
  const count = (n: number | null) => (n === null ? "?" : String(n));
  const lines = [
    `pid ${r.pid}  generation ${r.generation}  state ${r.state}`,
    ...r.listeners.map((l) => `  ${l.addr}  ${count(l.connections)} open connection(s)`),
  ];
  if (r.previous) {
    lines.push(`pid ${r.previous.pid}  generation ${r.previous.generation}  state draining`);
    for (const l of r.previous.listeners) {
      lines.push(`  ${l.addr}  ${count(l.connections)} open connection(s)`);
    }
  }
  if (r.lastUpgrade) lines.push(`last ${formatReport(r.lastUpgrade).trimEnd()}`);
  return lines.join("\n") + "\n";
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
  const ch = connect(path);
  const started = Date.now();
  let result: { pid: number; report: UpgradeReport | null };
  try {
    const trigger = o.trigger === undefined ? {} : { trigger: o.trigger };
    ch.send({ type: "upgrade", v: PROTOCOL_VERSION, ...trigger });
    o.progress(`upgrade requested on ${path}`);
    result = await upgradeResult(ch, started, o);
  } finally {
    ch.close();
  }
  if (!o.waitDrain || !result.report) return result;
  o.progress(`waiting for generation ${result.report.old.generation} to drain…`);
  const report = await drainedReport(path, result.pid, result.report, started, o);
  return { pid: result.pid, report };
}

async function upgradeResult(
  ch: Channel,
  started: number,
  o: ControlUpgrade,
): Promise<{ pid: number; report: UpgradeReport | null }> {
  for (;;) {
    const left = o.timeout - (Date.now() - started);
    if (left <= 0) {
      throw new InstarError("TIMEOUT", `no result within ${o.timeout} ms; the server keeps trying`);
    }
    for (const { msg } of ch.receive()) {
      const m = messageOf(msg);
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
    if (ch.eof) {
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

async function upgradeByPidFile(
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

if (import.meta.main) {
  process.exit(await main(process.argv.slice(2)));
}
