/**
 * The lifecycle's events and a small typed emitter for them.
 *
 * @module
 */

import { type InstarError, type UpgradeError, UpgradeRefusedError } from "../errors.ts";
import type { ExitReason, State } from "../types.ts";
import type { UpgradeReport } from "../observe/report.ts";

/**
 * Calls `each` for every item of `items` (taken when called; an item deleted
 * from a `Set` before its turn is skipped), spread over the Upgrader's
 * `closeSpread` window. Resolves with how many were called; an exception
 * from `each` (a send on a socket closing meanwhile) is reported as a
 * `warning` event and the other items still get their turn. A connection
 * the runtime still delivers once draining began (it had accepted it just
 * before) is not among the items: tell it when it arrives (`up.state` is
 * `"draining"`).
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create({ closeSpread: 2000 });
 * const clients = new Set<WebSocket>();
 * up.on("draining", ({ spread }) => void spread(clients, (ws) => ws.send("reconnect")));
 * ```
 */
export type Spread = <T>(items: Iterable<T>, each: (item: T) => void) => Promise<number>;

/**
 * Events an {@link Upgrader} emits, with their payloads.
 *
 * @example
 * ```ts
 * import { Upgrader, type UpgraderEvents } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const log = (e: UpgraderEvents["upgrade-failed"]) => console.error(e.error.reason);
 * up.on("upgrade-failed", log);
 * ```
 */
export interface UpgraderEvents {
  /** The state changed. */
  state: { state: State };
  /** An upgrade began. */
  "upgrade-started": { generation: number };
  /** The new generation's process exists. */
  "upgrade-spawned": { pid: number };
  /** The new generation said ready (and its promotion window passed, if any); this one drains now. */
  "upgrade-succeeded": { pid: number; ms: number };
  /** The upgrade failed; this generation serves on. */
  "upgrade-failed": { error: UpgradeError };
  /**
   * The new generation `pid` is ready and this one has stopped accepting for
   * the promotion window of `ms`; `upgrade-succeeded` follows when it has
   * passed, `rolled-back` if the new generation failed within it.
   */
  "promotion-window": { pid: number; generation: number; ms: number };
  /**
   * The new generation (`pid`, `generation`) exited or was declared unhealthy
   * within the promotion window: this generation accepts again and serves on;
   * `upgrade()` rejects with reason `rolled-back`. It is the upgrade's outcome
   * (no `upgrade-failed` follows). `reason`: the `unhealthy()` reason, or how it ended.
   */
  "rolled-back": { pid: number; generation: number; reason: string };
  /** A trigger was refused (an upgrade in flight, not ready yet, stopping): nothing was started. */
  "upgrade-refused": { error: UpgradeRefusedError };
  /**
   * This generation stopped accepting and drains. `spread(items, each)`
   * calls `each` for every item spread over the `closeSpread` window, in
   * batches 10 ms apart: notices that make clients reconnect (a `draining`
   * message to each WebSocket) reach them a few at a time, not all at once.
   */
  draining: { reason: ExitReason; spread: Spread };
  /** Draining finished; `forced` connections were closed at the drain timeout. */
  drained: { forced: number };
  /** serve() could not transplant and serves through its node:net proxy; `reason` says why. */
  "serve-fallback": { addr: string; reason: InstarError };
  /**
   * One upgrade's report: when it failed, was refused or rolled back, or,
   * after a success, once this generation drained (see `docs/observability.md`).
   */
  "upgrade-report": UpgradeReport;
  /** Something worth a log line that is not an error of the caller's. */
  warning: { message: string };
}

/**
 * A subscriber to one event of {@link UpgraderEvents}.
 *
 * @example
 * ```ts
 * import { Upgrader, type UpgraderHandler } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const onDraining: UpgraderHandler<"draining"> = ({ reason }) => console.log("draining:", reason);
 * up.on("draining", onDraining);
 * ```
 */
export type UpgraderHandler<K extends keyof UpgraderEvents> = (payload: UpgraderEvents[K]) => void;

/** Subscribers by event; a throwing subscriber never breaks the lifecycle. */
export class Emitter {
  #handlers = new Map<string, Set<(p: unknown) => void>>();

  /** Subscribes; returns a function that unsubscribes. */
  on<K extends keyof UpgraderEvents>(event: K, handler: UpgraderHandler<K>): () => void {
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, set = new Set());
    set.add(handler as (p: unknown) => void);
    return () => set.delete(handler as (p: unknown) => void);
  }

  /**
   * Calls every subscriber of `event`. A subscriber that throws is reported as
   * a `warning` (or on stderr, for a throwing `warning` subscriber): it never
   * breaks the lifecycle, e.g. in the middle of a drain.
   */
  emit<K extends keyof UpgraderEvents>(event: K, payload: UpgraderEvents[K]): void {
    for (const h of this.#handlers.get(event) ?? []) {
      try {
        h(payload);
      } catch (err) {
        const message = `a subscriber to ${event} threw: ${(err as Error)?.message ?? err}`;
        if (event === "warning") console.error(`instar: ${message}`);
        else this.warn(message);
      }
    }
  }

  /**
   * Emits a `warning`; with nobody subscribed yet (e.g. during `Upgrader.create()`,
   * before `logLifecycle`), it goes to stderr: a warning is never lost.
   */
  warn(message: string): void {
    if (this.#handlers.get("warning")?.size) this.emit("warning", { message });
    else console.warn(`instar: warning: ${message}`);
  }
}

/** Why a trigger cannot start an upgrade in `state`, or `null` when it can. */
export function refusal(state: State): UpgradeRefusedError | null {
  if (state === "ready") return null;
  if (state === "upgrading") {
    return new UpgradeRefusedError(
      "in-progress",
      "an upgrade is already in flight; wait for its result",
    );
  }
  if (state === "starting") {
    return new UpgradeRefusedError("not-ready", "cannot upgrade before ready() was called");
  }
  return new UpgradeRefusedError("stopping", `cannot upgrade while ${state}`);
}

/** Runs the `onDrained` hooks in order, each awaited; a failing one is reported and the rest run. */
export async function runHooks(
  hooks: readonly (() => void | Promise<void>)[],
  warn: (message: string) => void,
): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook();
    } catch (err) {
      warn(`onDrained hook failed: ${(err as Error).message}`);
    }
  }
}
