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
import {
  type Channel,
  connectControl,
  messageOf,
  nobodyThere,
  PROTOCOL_VERSION,
  type StatusReport,
} from "./protocol.ts";
import { processRuns, processStartedAt } from "./proc.ts";
import { checkSignal } from "./lifecycle/signals.ts";
import { sleep } from "./timeout.ts";
import { runSupervisor } from "./supervisor/run.ts";

const HELP: Record<string, string> = {
  main: `instar — zero-downtime upgrades for Deno and Bun servers

Usage:
  instar upgrade (--control <path> | --pid-file <path>) [--timeout <ms>]
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
  instar upgrade --control <path> [--timeout <ms>]
  instar upgrade --pid-file <path> [--signal SIGHUP] [--timeout <ms>]

With --control the server reports progress and the reason of a failure
(exited, killed, ready-timeout, exec-failed, protocol-error, in-progress).
With --pid-file instar sends the upgrade signal and waits until the PID file
names a new, live process; the reason of a failure is in the server's log.

Exit status: 0 and the new pid on stdout when the new generation is ready;
1 with the reason on stderr otherwise; 2 for bad usage.

Options:
  --control <path>   the server's control socket (Upgrader option controlSocket)
  --pid-file <path>  the server's PID file (Upgrader option pidFile)
  --signal <name>    upgrade signal for --pid-file (default SIGHUP)
  --timeout <ms>     give up waiting after this long (default 120000)
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
          json: { type: "boolean" },
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
    if (command === "status") {
      const report = control ? statusByControl(control) : statusByPidFile(pidFile!);
      out(values.json ? JSON.stringify(report) + "\n" : formatStatus(report));
      return 0;
    }
    const progress = (line: string) => err(line + "\n");
    const pid = control
      ? await upgradeByControl(control, timeout, progress)
      : await upgradeByPidFile(pidFile!, signal, timeout, progress);
    out(`${pid}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`instar: ${e.message} (see instar --help)\n`);
      return 2;
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
  return lines.join("\n") + "\n";
}

async function upgradeByControl(
  path: string,
  timeout: number,
  progress: (s: string) => void,
): Promise<number> {
  const ch = connect(path);
  const started = Date.now();
  try {
    ch.send({ type: "upgrade", v: PROTOCOL_VERSION });
    progress(`upgrade requested on ${path}`);
    for (;;) {
      const left = timeout - (Date.now() - started);
      if (left <= 0) {
        throw new InstarError("TIMEOUT", `no result within ${timeout} ms; the server keeps trying`);
      }
      for (const { msg } of ch.receive()) {
        const m = messageOf(msg);
        if (m.type === "progress") {
          progress(`new generation started: pid ${m.pid}; waiting until it is ready…`);
        } else if (m.type === "upgraded") {
          progress(`ready after ${((Date.now() - started) / 1000).toFixed(1)} s`);
          return m.pid;
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
  } finally {
    ch.close();
  }
}

async function upgradeByPidFile(
  pidFile: string,
  signal: string,
  timeout: number,
  progress: (s: string) => void,
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
      return now;
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

if (import.meta.main) {
  process.exit(await main(process.argv.slice(2)));
}
