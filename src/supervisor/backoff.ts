/**
 * The delay before a crashed generation is started again (`--restart
 * on-failure`): at once after a generation that served a while, then
 * doubling from 100 ms up to 10 s while starts keep failing fast. No timer
 * runs unless a restart is due.
 *
 * @module
 */

/** A generation that served this long before it crashed resets the back-off. */
export const HEALTHY_MS = 10_000;
/** The longest wait between two starts. */
export const MAX_DELAY_MS = 10_000;
const FIRST_DELAY_MS = 100;

/**
 * Consecutive fast failures and the delay they earn.
 *
 * @example
 * ```ts
 * import { Backoff } from "./backoff.ts";
 *
 * const b = new Backoff();
 * console.log(b.next(60_000), b.next(0), b.next(0)); // 0 100 200
 * ```
 */
export class Backoff {
  #failures = 0;

  /** The delay before the next start, given how long the crashed generation was ready (ms). */
  next(servedMs: number): number {
    this.#failures = servedMs >= HEALTHY_MS ? 1 : this.#failures + 1;
    if (this.#failures === 1) return 0;
    return Math.min(FIRST_DELAY_MS * 2 ** (this.#failures - 2), MAX_DELAY_MS);
  }
}
