/**
 * `instar run` in portable mode (src/runtime/platform.ts: off Linux, Deno
 * without `-A`, `INSTAR_PORTABLE=1`): the command runs as a child of
 * `node:child_process`, signals are passed on, a crash is restarted
 * (`--restart on-failure`, with the same back-off), and SIGHUP or a change
 * under `--watch` **restarts** the command: the running one stops gracefully
 * (it drains), then the next one starts. Between the two nothing listens, so
 * connections are refused for that moment (the "refusal window": the old
 * one's drain plus the new one's start-up). What needs Linux is refused at
 * start: `--listen` (held sockets, passed by fd) and `--control` (the
 * supervisor's control socket passes sockets too); and the supervisor is no
 * subreaper and does no PID-1 duties (orphans of the command are not reaped).
 *
 * @module
 */

import type * as ChildProcess from "node:child_process";
import type * as Os from "node:os";
import * as host from "../host.ts";
import { InstarError } from "../errors.ts";
import { Backoff } from "./backoff.ts";
import type { RunOptions } from "./options.ts";
import type { SupervisorLog } from "./supervisor.ts";

/** Refuses what needs Linux, before anything starts. */
export function checkPortable(o: RunOptions, why: string): void {
  const linuxOnly = [...(o.listen.length ? ["--listen"] : []), ...(o.control ? ["--control"] : [])];
  if (linuxOnly.length === 0) return;
  throw new InstarError(
    "UNSUPPORTED_PLATFORM",
    `${linuxOnly.join(" and ")} need${linuxOnly.length === 1 ? "s" : ""} Linux: ` +
      `instar run runs in portable mode here (${why}); see docs/portable.md`,
  );
}

/** One command at a time, restarted on a crash or on request; `done` resolves with the exit status. */
export class PortableSupervisor {
  /** The command's last exit status once the supervisor is done (128 + n for signal n). */
  readonly done: Promise<number>;
  #o: RunOptions;
  #log: SupervisorLog;
  #child: ChildProcess.ChildProcess | null = null;
  #startedAt = 0;
  #backoff = new Backoff();
  #stops = 0;
  #restarting: string | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #finish!: (status: number) => void;

  /** Starts `o`'s command at once. */
  constructor(o: RunOptions, log: SupervisorLog) {
    this.#o = o;
    this.#log = log;
    this.done = new Promise((r) => (this.#finish = r));
    this.#start();
  }

  /** The running command's pid, or `null` between two. */
  get pid(): number | null {
    return this.#child?.pid ?? null;
  }

  /**
   * Stops the command gracefully (SIGTERM) and then the supervisor. A
   * repeated SIGINT is passed on as SIGINT (an instar app then stops
   * without waiting for its drain); any other repeat as SIGTERM.
   */
  stop(trigger: string): void {
    const signal = ++this.#stops > 1 && trigger === "SIGINT" ? "SIGINT" : "SIGTERM";
    this.#log.info(`${trigger}: stopping the command`);
    clearTimeout(this.#timer);
    if (!this.#child) return this.#finish(0);
    send(this.#child, signal);
  }

  /** Stops the command gracefully and starts it again (connections are refused in between). */
  restart(reason: string): void {
    if (this.#stops > 0 || this.#restarting !== null) return;
    this.#restarting = reason;
    this.#log.info(`${reason}: restarting the command (portable mode cannot upgrade in place)`);
    if (this.#child) send(this.#child, "SIGTERM");
    else this.#start();
  }

  #start(): void {
    const { spawn } = host.builtin<typeof ChildProcess>("node:child_process");
    const [argv0, ...args] = this.#o.argv;
    const child = spawn(this.#o.command, args, { argv0, stdio: "inherit" });
    this.#child = child;
    this.#startedAt = performance.now();
    this.#restarting = null;
    child.once("error", (err) => {
      // Not started (or not signalled): as a shell reports a command it cannot run.
      this.#log.warn(`${this.#o.command}: ${err.message}`);
      if (child.exitCode === null && child.pid === undefined) this.#exited(child, 127, null);
    });
    child.once("exit", (code, signal) => this.#exited(child, code, signal));
    this.#log.info(`started pid ${child.pid ?? "?"}`);
  }

  #exited(child: ChildProcess.ChildProcess, code: number | null, signal: string | null): void {
    if (this.#child !== child) return;
    this.#child = null;
    const status = code ?? 128 + signalNumber(signal);
    this.#log.info(`pid ${child.pid} exited with status ${status}`);
    if (this.#stops > 0) return this.#finish(status);
    if (this.#restarting !== null) return this.#start();
    if (this.#o.restart !== "on-failure" || status === 0) return this.#finish(status);
    const delay = this.#backoff.next(performance.now() - this.#startedAt);
    this.#log.info(`restarting in ${delay} ms (--restart on-failure)`);
    this.#timer = setTimeout(() => this.#start(), delay);
  }
}

// By pid, not `child.kill()`: after that, Deno's node:child_process reports the signal sent as
// the cause of the exit (code null, signal SIGTERM) even when the command exited 0 on it.
function send(child: ChildProcess.ChildProcess, signal: string): void {
  if (child.pid === undefined) return;
  try {
    host.builtin<{ kill(pid: number, signal: string): void }>("node:process").kill(
      child.pid,
      signal,
    );
  } catch { /* it exited meanwhile: its exit event comes */ }
}

// The platform's number for a signal name (node:os knows this platform's, not only Linux's).
function signalNumber(name: string | null): number {
  const os = host.builtin<typeof Os>("node:os");
  return (name && os.constants.signals[name as keyof typeof os.constants.signals]) || 0;
}
