/**
 * PID 1's duty, and a subreaper's: every process that becomes this one's
 * child is reaped (`waitpid(-1, WNOHANG)` on each SIGCHLD, until none is
 * left), so no zombie piles up. The supervisor runs no other child that its
 * runtime would reap.
 *
 * @module
 */

import process from "node:process";
import { InstarError } from "../errors.ts";
import { waitpidNoHang, type WaitStatus } from "../ffi/mod.ts";

/**
 * Reaps every child; `onExit` hears of each.
 *
 * @example
 * ```ts
 * import { AllChildren } from "./reaper.ts";
 *
 * const reaper = new AllChildren((end) => console.log("reaped", end.pid));
 * reaper.start();
 * ```
 */
export class AllChildren {
  #onExit: (end: WaitStatus) => void;
  #beforeReap: () => void;
  #onSignal = () => this.reap();
  #left = true;

  /**
   * `onExit` is called once per reaped child, in the order reaped; `beforeReap`
   * before each round of reaping, while the children that ended are still
   * zombies (their /proc entries, parents included, still readable).
   */
  constructor(onExit: (end: WaitStatus) => void, beforeReap: () => void = () => {}) {
    this.#onExit = onExit;
    this.#beforeReap = beforeReap;
  }

  /** Installs the SIGCHLD listener and reaps what already ended. */
  start(): void {
    process.on("SIGCHLD", this.#onSignal);
    this.reap();
  }

  /** Whether any child was left after the last {@link AllChildren.reap}. */
  get anyLeft(): boolean {
    return this.#left;
  }

  /** Reaps every child that has ended; returns how many. */
  reap(): number {
    this.#beforeReap();
    let n = 0;
    for (;;) {
      let end: WaitStatus | null;
      try {
        end = waitpidNoHang(-1);
      } catch (err) {
        if (err instanceof InstarError && err.code === "ECHILD") {
          this.#left = false;
          return n;
        }
        throw err;
      }
      if (end === null) {
        this.#left = true;
        return n;
      }
      n++;
      this.#onExit(end);
    }
  }
}

/**
 * The shell's exit status of a wait status: the code, or 128 + the signal.
 *
 * @example
 * ```ts
 * import { exitStatus } from "./reaper.ts";
 *
 * exitStatus({ pid: 7, exited: false, signal: 9 }); // 137
 * ```
 */
export function exitStatus(end: WaitStatus): number {
  return end.exited ? end.code : 128 + end.signal;
}
