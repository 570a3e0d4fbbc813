/**
 * The end of a generation: it stops accepting, drains every endpoint
 * together (src/net/drain.ts) and the control socket, removes its PID file on
 * a stop, runs the `onDrained` hooks and exits; a second stop signal cuts
 * the drain short.
 *
 * @module
 */

import * as host from "../host.ts";
import { drain } from "../net/drain.ts";
import { spread } from "../timeout.ts";
import type { Endpoint, ExitReason } from "../types.ts";
import { runHooks } from "./events.ts";
import { removePidFileIfOurs } from "./pid_file.ts";
import type { Shared } from "./shared.ts";

/** One generation's exit: its reason, its drain, its `onDrained` hooks. */
export class Exit {
  /** Resolves with the reason this generation must stop; draining starts at the same moment. */
  readonly reason: Promise<ExitReason>;
  /** Resolves once draining has finished and the `onDrained` hooks ran. */
  readonly drained: Promise<void>;
  #s: Shared;
  #endpoints: () => readonly Endpoint[];
  #hooks: (() => void | Promise<void>)[] = [];
  #serving = false;
  #resolveReason!: (r: ExitReason) => void;
  #resolveDrained!: () => void;
  #ended: () => void;

  /**
   * The exit of `s`'s generation, which drains `endpoints()`; `ended` runs
   * after the hooks, before `drained` resolves.
   */
  constructor(s: Shared, endpoints: () => readonly Endpoint[], ended: () => void) {
    this.#s = s;
    this.#endpoints = endpoints;
    this.#ended = ended;
    this.reason = new Promise((r) => (this.#resolveReason = r));
    this.drained = new Promise((r) => (this.#resolveDrained = r));
  }

  /** Adds a hook run once drained, in order, each awaited. */
  onDrained(hook: () => void | Promise<void>): void {
    this.#hooks.push(hook);
  }

  /** Stops accepting and drains, once: later calls do nothing. */
  begin(reason: ExitReason): void {
    const s = this.#s;
    if (s.state === "draining" || s.state === "stopped") return;
    // A generation still starting accepts nothing yet, and shares its sockets with the one
    // serving: it must never shut them down (only its own fds close).
    this.#serving = s.state === "ready" || s.state === "upgrading";
    s.setState("draining");
    this.#resolveReason(reason);
    const window = s.settings.closeSpread;
    // Called from an event handler, often without a catch: an exception becomes a warning.
    const warn = (err: unknown) => s.warn(`draining spread(): ${(err as Error)?.message ?? err}`);
    s.events.emit("draining", {
      reason,
      spread: (items, each) => spread(items, each, window, warn),
    });
    void this.#drain(reason);
  }

  /** A second stop signal: the operator does not want to wait for the drain. */
  force(): void {
    const control = this.#s.control;
    const all = [...this.#endpoints(), ...(control ? [control] : [])];
    void Promise.all(all.map((e) => e.forceClose().catch(() => 0))).finally(() => host.exit(1));
  }

  async #drain(reason: ExitReason): Promise<void> {
    const s = this.#s, settings = s.settings;
    const control = s.control;
    s.control = null;
    // The next generation answers the control socket from now on; on stop nobody does.
    const ending = control ? drain([control], { timeoutMs: 1000, delayMs: 0 }) : Promise.resolve();
    if (control && reason === "stop") control.unlink();
    const { forced } = await drain(this.#endpoints(), {
      timeoutMs: settings.drainTimeout,
      warn: s.warn,
      refuse: reason === "stop" && this.#serving,
      closeSpreadMs: settings.closeSpread,
    });
    await ending;
    if (reason === "stop" && settings.pidFile) removePidFileIfOurs(settings.pidFile, host.pid());
    s.setState("stopped");
    s.events.emit("drained", { forced });
    await runHooks(this.#hooks, s.warn);
    // Exiting, the signals stay handled until the exit: one arriving in between (a SIGHUP of a
    // deploy script) would meet its default action, and the generation would end by it, not 0.
    if (!settings.exitAfterDrain) this.#ended();
    this.#resolveDrained();
    // Code after `await up.drained` runs first: it was queued when drained resolved.
    if (settings.exitAfterDrain) setTimeout(() => host.exit(0), 0);
  }
}
