/**
 * The command line of `instar run [options] -- <command> [args...]`, checked
 * once: every mistake is an `INVALID_ARGUMENT` naming the option and what to
 * give instead.
 *
 * @module
 */

import { resolve } from "node:path";
import process from "node:process";
import { autoCommand } from "./auto_script.ts";
import { resolveCommand } from "./command_path.ts";
import { checkReadyPath } from "../auto/settings.ts";
import { parseArgs } from "node:util";
import { InstarError, invalid } from "../errors.ts";
import { type ListenSpec, parseListenSpec } from "./listen_spec.ts";

/**
 * What `instar run` was asked to do.
 *
 * @example
 * ```ts
 * import { parseRunArgs, type RunOptions } from "./options.ts";
 *
 * const o: RunOptions = parseRunArgs(["--restart", "on-failure", "--", "/bin/sleep", "9"]);
 * console.log(o.command, o.restart); // "/bin/sleep" "on-failure"
 * ```
 */
export interface RunOptions {
  /** The executable, as an absolute path (found on `PATH` when given without a slash). */
  command: string;
  /** argv, `argv[0]` as given. */
  argv: string[];
  /** The sockets the supervisor holds and passes to generation 1 (`--listen`). */
  listen: ListenSpec[];
  /** `no` (default): a crash ends the supervisor; `on-failure`: it starts the command again. */
  restart: "no" | "on-failure";
  /** The supervisor's control socket (`--control`), or `null`. */
  control: string | null;
  /** Paths whose changes upgrade (`--watch`). */
  watch: string[];
  /** How long changes are collected before one upgrade (`--watch-debounce`, ms). */
  watchDebounceMs: number;
  /** How long an upgrade may take before the trigger gives up waiting (`--upgrade-timeout`, ms). */
  upgradeTimeoutMs: number;
  /** Whether instar/auto is preloaded into the command (`--auto`; `argv` then holds the flag). */
  auto: boolean;
  /**
   * With `--auto`: a generation is ready only once `GET <readyUrl>` answers 2xx on it
   * (`--ready-url`, passed to every generation as `INSTAR_AUTO_READY_URL`), or `null`.
   */
  readyUrl: string | null;
  /**
   * With `--auto` and a package.json script or deno task (`bun run start`): what the
   * script runner would have set (auto_script.ts), for every generation.
   */
  env?: Record<string, string>;
}

/** `instar run --help`. */
export const RUN_HELP =
  `instar run — supervise a server: zero-downtime upgrades as PID 1, crash restarts

Usage:
  instar run [options] -- <command> [args...]

Options:
  --listen [name=]<spec>   hold a listening socket and pass it to the command the
                           systemd way (LISTEN_FDS from fd 3); repeatable.
                           spec: tcp://0.0.0.0:8080, tcp://[::1]:0, unix:///run/app.sock
  --restart <policy>       no (default) or on-failure: start the command again when
                           it exits with a non-zero status or is killed
  --control <path>         answer \`instar status\` / \`instar upgrade --control <path>\`
  --watch <path>           upgrade when this file or directory changes; repeatable
  --watch-debounce <ms>    collect changes this long before upgrading (default 300)
  --upgrade-timeout <ms>   how long an upgrade may take (default 120000)
  --auto                   preload instar/auto into an unmodified bun or deno
                           server (its Bun.serve, Deno.serve, node:http listen
                           serve through instar); \`bun run <script>\` and
                           \`deno task <task>\` start the command the script names;
                           see docs/zero-code.md
  --ready-url <path>       with --auto: a generation is ready only once GET <path>
                           answers 2xx on it (apps that listen before they are warm)
  -h, --help               this text

Signals: SIGHUP upgrades the current generation; SIGTERM/SIGINT stop every
generation gracefully (a second one forces). The exit status is the current
generation's (128 + signal when it was killed). See docs/supervisor.md.
`;

/** `base` (`KEY=value` entries) with what `instar run`'s options set for every generation. */
export function runEnvironment(o: RunOptions, base: readonly string[]): string[] {
  const set: Record<string, string> = { ...o.env };
  if (o.readyUrl !== null) set.INSTAR_AUTO_READY_URL = o.readyUrl;
  const keys = Object.keys(set);
  if (keys.length === 0) return [...base];
  const kept = base.filter((e) => !keys.includes(e.slice(0, e.indexOf("="))));
  return [...kept, ...keys.map((k) => `${k}=${set[k]}`)];
}

function positiveMs(option: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n <= 0) {
    invalid(option, text, "a positive whole number of milliseconds");
  }
  return n;
}

/**
 * Parses the arguments after `run`; throws `INVALID_ARGUMENT` for bad usage.
 * Returns `null` for `--help`.
 *
 * @example
 * ```ts
 * import { parseRunArgs } from "./options.ts";
 *
 * const o = parseRunArgs(["--listen", "web=tcp://127.0.0.1:8080", "--", "deno", "run", "-A", "app.ts"]);
 * console.log(o?.listen[0].name); // "web"
 * ```
 */
export function parseRunArgs(args: readonly string[]): RunOptions | null {
  const dash = args.indexOf("--");
  const mine = dash < 0 ? [...args] : args.slice(0, dash);
  if (mine.includes("-h") || mine.includes("--help")) return null;
  const command = dash < 0 ? [] : args.slice(dash + 1);
  if (command.length === 0) {
    invalid("the command", dash < 0 ? "missing" : "empty", "-- <command> [args...] at the end");
  }
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: mine,
      options: {
        listen: { type: "string", multiple: true },
        restart: { type: "string" },
        control: { type: "string" },
        watch: { type: "string", multiple: true },
        "watch-debounce": { type: "string" },
        "upgrade-timeout": { type: "string" },
        auto: { type: "boolean" },
        "ready-url": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new InstarError("INVALID_ARGUMENT", (e as Error).message.replace(/\s*\n\s*/g, " "));
  }
  const restart = (values.restart as string | undefined) ?? "no";
  if (restart !== "no" && restart !== "on-failure") {
    invalid("--restart", restart, "no or on-failure");
  }
  const control = (values.control as string | undefined) ?? null;
  if (control !== null && (control === "" || control.includes("\0"))) {
    invalid("--control", control, "a socket path");
  }
  const auto = values.auto === true;
  const readyUrl = (values["ready-url"] as string | undefined) ?? null;
  if (readyUrl !== null && !auto) {
    invalid("--ready-url", readyUrl, "--auto with it (an app with its own Upgrader calls ready())");
  }
  const run = auto ? autoCommand(command) : { argv: command, env: {} };
  return {
    readyUrl: readyUrl === null ? null : checkReadyPath("--ready-url", readyUrl),
    command: resolveCommand(run.argv[0], run.env.PATH ?? process.env.PATH),
    argv: run.argv,
    env: run.env,
    auto,
    listen: ((values.listen as string[] | undefined) ?? []).map(parseListenSpec),
    restart,
    control: control === null ? null : resolve(control),
    watch: ((values.watch as string[] | undefined) ?? []).map((p) => resolve(p)),
    watchDebounceMs: positiveMs("--watch-debounce", values["watch-debounce"] as string, 300),
    upgradeTimeoutMs: positiveMs("--upgrade-timeout", values["upgrade-timeout"] as string, 120_000),
  };
}
