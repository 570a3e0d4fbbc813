/**
 * Child exits without polling: a SIGCHLD listener, installed only while a
 * child is watched, reaps each watched pid with `waitpid(WNOHANG)` (never
 * `-1`: children the program started itself stay the runtime's to reap).
 *
 * @module
 */

import * as host from "../host.ts";
import { kill, SIGNALS, waitpidNoHang, type WaitStatus } from "../ffi/mod.ts";
import { deadline } from "../timeout.ts";

/** How a watched child ended; `null` when someone else reaped it (ECHILD). */
export type ChildEnd = WaitStatus | null;

/** Watches the children of this generation. */
export class Reaper {
  #watched = new Map<number, { promise: Promise<ChildEnd>; resolve: (e: ChildEnd) => void }>();
  #listening = false;
  #onSignal = () => this.#check();

  /** Resolves when `pid` has ended and been reaped. */
  exited(pid: number): Promise<ChildEnd> {
    let w = this.#watched.get(pid);
    if (!w) {
      let resolve!: (e: ChildEnd) => void;
      const promise = new Promise<ChildEnd>((r) => (resolve = r));
      this.#watched.set(pid, w = { promise, resolve });
      this.#listen(true);
      this.#check(); // it may have ended before the listener was there
    }
    return w.promise;
  }

  /** Stops watching `pid` (it lives on: e.g. the new generation after a handover). */
  forget(pid: number): void {
    this.#watched.delete(pid);
    if (this.#watched.size === 0) this.#listen(false);
  }

  /** Kills `pid` and waits (up to `ms`) until it is reaped: no zombie is left behind. */
  kill(pid: number, ms = 2000): Promise<ChildEnd | undefined> {
    return this.#signal(pid, SIGNALS.SIGKILL, ms);
  }

  /**
   * Asks `pid` to stop (SIGTERM: a generation that already serves drains what
   * it took); kills it if it has not ended within `graceMs`.
   */
  async terminate(pid: number, graceMs: number): Promise<ChildEnd | undefined> {
    const ended = await this.#signal(pid, SIGNALS.SIGTERM, graceMs);
    return ended !== undefined ? ended : await this.kill(pid);
  }

  async #signal(pid: number, signo: number, ms: number): Promise<ChildEnd | undefined> {
    const ended = this.exited(pid);
    try {
      kill(pid, signo);
    } catch { /* already gone: the watch reaps it */ }
    const r = await deadline(ended, ms);
    return r.done ? r.value : undefined;
  }

  #check(): void {
    for (const [pid, w] of this.#watched) {
      let end: ChildEnd;
      try {
        end = waitpidNoHang(pid);
        if (end === null) continue;
      } catch {
        end = null; // ECHILD: not ours to reap any more
      }
      this.forget(pid);
      w.resolve(end);
    }
  }

  #listen(on: boolean): void {
    if (on === this.#listening) return;
    this.#listening = on;
    if (on) host.onSignal("SIGCHLD", this.#onSignal);
    else host.offSignal("SIGCHLD", this.#onSignal);
  }
}
