/**
 * What one generation counts, and where: in its slot of the shared counter
 * region (counter_region.ts), which every generation of the server counts in
 * and reads the sum of. A region that came from the previous generation holds
 * everything counted since the first one; a fresh one starts from the
 * counters a hello carried (`base`: an older instar that passes no region,
 * or a region refused as malformed), and only then are the previous
 * generation's final counters, sent over the control socket, merged in.
 *
 * @module
 */

import {
  bump,
  type CarriedCounters,
  maxCounters,
  reasonKey,
  type UpgradeCounts,
  zeroCounters,
} from "./counters.ts";
import { type CounterRegion, openRegion } from "./counter_region.ts";

/** An upgrade's outcome, as counted. */
export type Outcome = "succeeded" | "rolled-back" | "failed" | "refused";

const UPGRADES = "upgrades:";
const ACCEPTED = "accepted:";

/** The counters of one generation. */
export class Tally {
  /** True when the region came from the previous generation: its counts are all in it. */
  readonly shared: boolean;
  readonly #region: CounterRegion;
  readonly #warn: (message: string) => void;
  #base: CarriedCounters;
  #views = new Map<string, Float64Array>();
  #syncs: (() => void)[] = [];
  #full = false;

  /**
   * The tally of generation `generation` (process `pid`): in the region on
   * `regionFd` if one was passed and checks out, else in a fresh one that
   * starts from `carried`.
   */
  constructor(o: {
    regionFd: number | null;
    carried: CarriedCounters | null;
    pid: number;
    generation: number;
    warn: (message: string) => void;
    /** Portable mode: counts stay in this process, without libc (no region, no warning). */
    portable?: boolean;
  }) {
    this.#warn = o.warn;
    const { region, adopted } = openRegion(o.regionFd, o.warn, !o.portable);
    this.#region = region;
    this.shared = adopted;
    this.#base = adopted ? zeroCounters() : structuredClone(o.carried ?? zeroCounters());
    if (!region.claim(o.pid, o.generation)) {
      o.warn(
        "every slot of the counter region is held by a running process: this generation " +
          "counts privately, and its counts end with it",
      );
    }
  }

  /** The region's fd, to pass to the next generation (null: none could be made). */
  get regionFd(): number | null {
    return this.#region.fd;
  }

  // This generation's count `name` (one view each, made once); a throwaway when the table is full.
  #view(name: string): Float64Array {
    let v = this.#views.get(name);
    if (v) return v;
    v = this.#region.counter(name) ?? undefined;
    if (!v) {
      if (!this.#full) {
        this.#warn(`the counter region's names table is full: ${name} is not counted`);
      }
      this.#full = true;
      v = new Float64Array(1);
    }
    this.#views.set(name, v);
    return v;
  }

  /** One upgrade with `outcome` (and `reason` for `failed` and `refused`). */
  upgrade(outcome: Outcome, reason = ""): void {
    // The same bound as a carried reason: lower-case words, else "other".
    const key = outcome === "failed" || outcome === "refused"
      ? `${outcome}:${reasonKey(reason)}`
      : outcome;
    this.#view(UPGRADES + key)[0]++;
  }

  /**
   * The previous generation's upgrade succeeded, counted by this one (it
   * passed no region, so it cannot count it where this one reads).
   */
  succeededBefore(): void {
    this.#base.upgrades.succeeded++;
  }

  /** The counter of requests on endpoint `key`: `view[0]++` per request. */
  requests(key: string): Float64Array {
    return this.#view(ACCEPTED + key);
  }

  /** Counts what `listener` (on `key`) accepts: its own counter, copied into the region when read. */
  accepts(key: string, listener: { readonly accepted: number }): void {
    const v = this.#view(ACCEPTED + key);
    const from = v[0];
    this.#syncs.push(() => void (v[0] = from + listener.accepted));
  }

  /**
   * The previous generation's final counters (the report over the control
   * socket): merged only into what a hello carried; a shared region has them.
   */
  merge(received: CarriedCounters): void {
    if (!this.shared) this.#base = maxCounters(this.#base, received);
  }

  /** Everything counted since the first generation: upgrades, and accepted for the endpoints `keys`. */
  read(keys: readonly string[]): CarriedCounters {
    for (const sync of this.#syncs) sync();
    const totals = this.#region.totals();
    const b = this.#base;
    const accepted: Record<string, number> = {};
    for (const k of keys) accepted[k] = (b.accepted[k] ?? 0) + (totals.get(ACCEPTED + k) ?? 0);
    const u: UpgradeCounts = structuredClone(b.upgrades);
    for (const [name, n] of totals) {
      if (!name.startsWith(UPGRADES)) continue;
      const [outcome, reason] = name.slice(UPGRADES.length).split(":");
      if (outcome === "succeeded") u.succeeded += n;
      else if (outcome === "rolled-back") u.rolledBack += n;
      else if (reason && (outcome === "failed" || outcome === "refused")) {
        bump(u[outcome], reason, n);
      }
    }
    return { upgrades: u, accepted };
  }

  /** This generation counts no more: its last counts are written and its slot freed (the counts stay). */
  release(): void {
    for (const sync of this.#syncs) sync();
    this.#syncs = [];
    this.#region.release();
  }
}
