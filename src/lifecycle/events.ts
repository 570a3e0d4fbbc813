/**
 * The lifecycle's events and a small typed emitter for them.
 *
 * @module
 */

import type { InstarError, UpgradeError, UpgradeRefusedError } from "../errors.ts";
import type { ExitReason, State } from "../types.ts";

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
  /** The new generation said ready; this one drains now. */
  "upgrade-succeeded": { pid: number; ms: number };
  /** The upgrade failed; this generation serves on. */
  "upgrade-failed": { error: UpgradeError };
  /** A trigger was refused (an upgrade in flight, not ready yet, stopping): nothing was started. */
  "upgrade-refused": { error: UpgradeRefusedError };
  /** This generation stopped accepting and drains. */
  draining: { reason: ExitReason };
  /** Draining finished; `forced` connections were closed at the drain timeout. */
  drained: { forced: number };
  /** serve() could not transplant and serves through its node:net proxy; `reason` says why. */
  "serve-fallback": { addr: string; reason: InstarError };
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

  /** Calls every subscriber of `event`; their exceptions are rethrown asynchronously. */
  emit<K extends keyof UpgraderEvents>(event: K, payload: UpgraderEvents[K]): void {
    for (const h of this.#handlers.get(event) ?? []) {
      try {
        h(payload);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  /** Emits a `warning`. */
  warn(message: string): void {
    this.emit("warning", { message });
  }
}
