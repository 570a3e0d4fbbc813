/**
 * The `instar` command line, read once with `node:util`'s parseArgs and
 * checked: every mistake is a {@link UsageError} of one line (exit status 2).
 * `instar run` keeps its own options (`supervisor/options.ts`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkSignal } from "../lifecycle/signals.ts";
import { TRIGGER } from "../observe/report.ts";
import { HELP } from "./help.ts";

/** Bad usage: printed as one line with a pointer to `--help`, exit status 2. */
export class UsageError extends Error {}

/** Where the server is found: exactly one of its control socket or its PID file. */
export type Target = { control: string; pidFile?: undefined } | {
  control?: undefined;
  pidFile: string;
};

/** `instar status`. */
export type StatusCommand = Target & { name: "status"; json: boolean };

/** How `instar upgrade` waits and what it asks. */
export interface UpgradeOptions {
  /** Give up waiting after this many ms. */
  timeout: number;
  /** The upgrade signal (with a PID file). */
  signal: string;
  /** What the report names as the trigger (with a control socket). */
  trigger?: string;
  /** Also wait until the old generation drained (with a control socket). */
  waitDrain: boolean;
  /** Watch the PID file this many ms for a rollback (with a PID file); 0: not at all. */
  window: number;
}

/** `instar upgrade`. */
export type UpgradeCommand = Target & UpgradeOptions & { name: "upgrade"; json: boolean };

/** What the command line asks for. */
export type Command =
  | { name: "help"; text: string; exitCode: number }
  | { name: "run"; args: string[] }
  | StatusCommand
  | UpgradeCommand;

const OPTIONS = {
  control: { type: "string" },
  "pid-file": { type: "string" },
  signal: { type: "string" },
  timeout: { type: "string" },
  "promotion-window": { type: "string" },
  json: { type: "boolean" },
  "wait-drain": { type: "boolean" },
  trigger: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Values = ReturnType<typeof parseOptions>;

/** Reads `args` (the command line after `instar`); throws {@link UsageError} for bad usage. */
export function parseCommand(args: readonly string[]): Command {
  const [command, ...rest] = args;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    return { name: "help", text: HELP.main, exitCode: command === undefined ? 2 : 0 };
  }
  if (command === "run") return { name: "run", args: rest };
  if (command !== "upgrade" && command !== "status") {
    throw new UsageError(
      `unknown command ${JSON.stringify(command)}; expected upgrade, status or run`,
    );
  }
  const values = parseOptions(rest);
  if (values.help) return { name: "help", text: HELP[command], exitCode: 0 };
  const target = targetOf(values);
  const upgrade = upgradeOptions(command, target, values);
  return command === "status"
    ? { ...target, name: "status", json: values.json === true }
    : { ...target, ...upgrade, name: "upgrade", json: values.json === true };
}

function parseOptions(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    // parseArgs explains over several lines; the usage error is one.
    throw new UsageError((e as Error).message.replace(/\s*\n\s*/g, " "));
  }
}

function targetOf(values: Values): Target {
  const { control, "pid-file": pidFile } = values;
  if (!control === !pidFile) {
    throw new UsageError("give exactly one of --control <path> or --pid-file <path>");
  }
  return control ? { control } : { pidFile: pidFile! };
}

// Checked for status too (in this order), so a misplaced option is named whatever the command.
function upgradeOptions(
  command: "upgrade" | "status",
  target: Target,
  values: Values,
): UpgradeOptions {
  const timeout = values.timeout === undefined ? 120_000 : Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) {
    throw new UsageError(`--timeout ${values.timeout} is not a positive number of milliseconds`);
  }
  const byPidFile = command === "upgrade" && target.pidFile !== undefined;
  const byControl = command === "upgrade" && target.control !== undefined;
  const signal = values.signal ?? "SIGHUP";
  if (values.signal !== undefined && !byPidFile) {
    throw new UsageError("--signal applies only to upgrade --pid-file");
  }
  checkUpgradeSignal(signal);
  const trigger = values.trigger;
  if ((trigger !== undefined || values["wait-drain"]) && !byControl) {
    throw new UsageError("--trigger and --wait-drain apply only to upgrade --control");
  }
  if (trigger !== undefined && !TRIGGER.test(trigger)) {
    throw new UsageError(`--trigger ${trigger} is not a lower-case word of at most 32 characters`);
  }
  const window = promotionWindow(values["promotion-window"], byPidFile);
  return { timeout, signal, trigger, waitDrain: values["wait-drain"] === true, window };
}

function promotionWindow(text: string | undefined, byPidFile: boolean): number {
  const window = text === undefined ? 0 : Number(text);
  if (!Number.isSafeInteger(window) || window < 0) {
    throw new UsageError(`--promotion-window ${text} is not a whole number of milliseconds`);
  }
  if (window > 0 && !byPidFile) {
    throw new UsageError(
      "--promotion-window applies only to upgrade --pid-file (with --control the server reports a rollback)",
    );
  }
  return window;
}

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
