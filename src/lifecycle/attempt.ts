/**
 * Upgrade attempts, one at a time, however the next generation comes to
 * exist: started by fork/exec (`up.upgrade()`, the upgrade signal, `instar
 * upgrade`), or a process that asked for a handover on the control socket.
 * An attempt passes the sockets, waits for the new generation's ready, runs
 * the promotion window when one is set (promotion.ts) and, on success, begins
 * this generation's exit; whatever fails, this generation serves on.
 *
 * @module
 */

import { UpgradeError, type UpgradeRefusedError } from "../errors.ts";
import type { MessageSocket } from "../protocol/message_socket.ts";
import { platformMode } from "../runtime/platform.ts";
import type { ExitReason } from "../types.ts";
import type { ControlActions } from "./control.ts";
import { refusal } from "./events.ts";
import {
  type Attempt,
  awaitReady,
  handOver,
  outOfFds,
  type Passed,
  spawnGeneration,
} from "./generation.ts";
import {
  forkUpgradeRefusal,
  handoverRefusal,
  type InitHazard,
  initHazard,
  portableHazard,
} from "./init_check.ts";
import type { Observer } from "./observer.ts";
import { PromotionWindow } from "./promotion.ts";
import { Reaper } from "./reaper.ts";
import type { Shared } from "./shared.ts";
import type { Sockets } from "./sockets.ts";

/** What the attempts need from the generation that runs them. */
export interface AttemptContext {
  /** The generation's shared state. */
  shared: Shared;
  /** Its sockets: what the next generation gets. */
  sockets: Sockets;
  /** Its observer: the counters passed on, the reports, the status. */
  observer: Observer;
  /** Begins its exit (after a successful upgrade). */
  exit: (reason: ExitReason) => void;
}

/** Starts the next generation: one attempt at a time. */
export class Upgrades {
  #c: AttemptContext;
  #s: Shared;
  #reaper = new Reaper();
  // Detected once at start-up: PID 1 or a child of tini & co. refuses fork/exec upgrades;
  // portable mode refuses every upgrade (and has no /proc to read).
  #initHazard: InitHazard | null;
  #window: PromotionWindow | null = null;
  #cancel: ((e: UpgradeError) => void) | null = null;

  /** The attempts of the generation `c` describes. */
  constructor(c: AttemptContext) {
    this.#c = c;
    this.#s = c.shared;
    const mode = platformMode();
    this.#initHazard = mode.mode === "portable"
      ? portableHazard(mode.why, mode.enable)
      : initHazard();
  }

  /** A fork/exec upgrade, started by `trigger` (for its report); resolves with the new pid. */
  fork(trigger: string): Promise<number> {
    this.#c.observer.trigger(trigger);
    return this.#run(
      (generation, sockets) => spawnGeneration(this.#s.settings, generation, sockets, this.#reaper),
      forkUpgradeRefusal(this.#initHazard),
    );
  }

  /** This generation stops: a promotion window ends, an attempt in flight is cancelled. */
  cancel(): void {
    this.#window?.stop();
    this.#cancel?.(new UpgradeError("cancelled", "this generation was told to stop"));
  }

  /** What the control server may ask of this generation. */
  controlActions(): ControlActions {
    const { observer } = this.#c;
    return {
      status: () => observer.status(),
      upgrade: (spawned: (pid: number) => void, trigger: string) => {
        const off = this.#s.events.on("upgrade-spawned", ({ pid }) => spawned(pid));
        return this.fork(trigger).finally(off);
      },
      lastReport: () => observer.lastUpgrade(),
      report: (pid: number, report: unknown, counters: unknown) =>
        observer.adopt(pid, report, counters),
      handover: (peer: MessageSocket, fd: number, pid: number) => {
        observer.trigger("handover");
        return this.#run(
          (generation, sockets) => handOver(peer, fd, pid, generation, sockets),
          handoverRefusal(this.#initHazard, pid),
        );
      },
      warn: this.#s.warn,
    };
  }

  /** One upgrade, however the next generation comes to exist. This generation serves on whatever happens. */
  async #run(
    start: (generation: number, sockets: Passed) => Attempt,
    blocked: UpgradeRefusedError | null = null,
  ): Promise<number> {
    const s = this.#s;
    // Portable mode's refusal comes first: whatever the state or the trigger (a handover on the
    // control socket too), no upgrade could ever start.
    const refused = s.portable
      ? forkUpgradeRefusal(this.#initHazard)
      : refusal(s.state) ?? s.probation?.refusal() ?? blocked;
    if (refused) {
      s.events.emit("upgrade-refused", { error: refused });
      throw refused;
    }
    s.setState("upgrading");
    s.events.emit("upgrade-started", { generation: s.generation + 1 });
    const started = performance.now();
    let attempt: Attempt | undefined;
    const cancelled = new Promise<UpgradeError>((r) => (this.#cancel = r));
    try {
      const c = s.control;
      attempt = start(s.generation + 1, {
        ...this.#c.sockets.registry.passable(c && { path: c.path, fd: c.fd }),
        promotionWindow: s.settings.promotionWindow,
        counters: this.#c.observer.carry(),
        counterRegion: this.#c.observer.regionFd,
      });
      s.events.emit("upgrade-spawned", { pid: attempt.pid });
      await awaitReady(attempt, s.settings.readyTimeout, cancelled);
    } catch (err) {
      await attempt?.abandon((err as UpgradeError).reason === "cancelled");
      return this.#failed(err);
    } finally {
      this.#cancel = null;
    }
    const ms = performance.now() - started;
    if (s.settings.promotionWindow > 0) await this.#promote(attempt);
    attempt.release();
    s.events.emit("upgrade-succeeded", { pid: attempt.pid, ms });
    this.#c.exit("upgrade");
    return attempt.pid;
  }

  // The promotion window (promotion.ts): returns once it passed; throws when this generation serves on.
  async #promote(attempt: Attempt): Promise<void> {
    const s = this.#s;
    const generation = s.generation + 1, ms = s.settings.promotionWindow;
    this.#window = new PromotionWindow(attempt, {
      windowMs: ms,
      generation,
      endpoints: this.#c.sockets.registry.endpoints,
      controlFd: s.control?.fd ?? null,
      reaper: this.#reaper,
      drainTimeout: s.settings.drainTimeout,
      pidFile: s.settings.pidFile,
      warn: s.warn,
    });
    s.events.emit("promotion-window", { pid: attempt.pid, generation, ms });
    const failed = await this.#window.outcome;
    this.#window = null;
    if (!failed) return;
    if (failed.error.reason === "cancelled") this.#failed(failed.error);
    s.events.emit("rolled-back", { pid: attempt.pid, generation, reason: failed.reason });
    s.setState("ready");
    throw failed.error;
  }

  #failed(err: unknown): never {
    const error = err instanceof UpgradeError ? err : outOfFds(err) ??
      new UpgradeError("protocol-error", (err as Error).message, {}, { cause: err });
    if (this.#s.state === "upgrading") this.#s.setState("ready");
    this.#s.events.emit("upgrade-failed", { error });
    throw error;
  }
}
