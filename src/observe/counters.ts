/**
 * The counters that survive an upgrade: upgrades by outcome and what each
 * endpoint accepted. A generation passes them to the next one in the hello
 * (and, after it drained, its final values with the upgrade report), so a
 * Prometheus counter never restarts at 0 because the program was upgraded.
 * What arrives is hostile input: every field is checked and bounded here.
 *
 * @module
 */

import { InstarError } from "../errors.ts";

/**
 * Upgrades by outcome, one outcome each: with a promotion window an upgrade
 * succeeds when the window has passed, or is rolled back within it.
 *
 * @example
 * ```ts
 * import { type UpgradeCounts, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const counts: UpgradeCounts = (await up.metrics()).upgrades;
 * console.log(counts.succeeded, counts.failed["exited"] ?? 0);
 * ```
 */
export interface UpgradeCounts {
  /** The new generation said ready. */
  succeeded: number;
  /** The new generation failed before ready, by reason (`exited`, `killed`, `ready-timeout`, …). */
  failed: Record<string, number>;
  /** A trigger started nothing, by reason (`in-progress`, `not-ready`, `stopping`, `pid-1`, …). */
  refused: Record<string, number>;
  /** A ready generation was rolled back within its promotion window. */
  rolledBack: number;
}

/** What the hello carries to the next generation. */
export interface CarriedCounters {
  /** Upgrades by outcome, since the first generation. */
  upgrades: UpgradeCounts;
  /** Per endpoint key: requests (`serve()`) or connections (`listen()`) accepted, since the first generation. */
  accepted: Record<string, number>;
}

/** Counters of a first generation. */
export function zeroCounters(): CarriedCounters {
  return { upgrades: { succeeded: 0, failed: {}, refused: {}, rolledBack: 0 }, accepted: {} };
}

/** At most this many reasons or endpoint keys per map: the hello stays small. */
export const MAX_COUNTER_KEYS = 64;
/** A reason: lower-case words joined by dashes, as the lifecycle names them. */
const REASON = /^[a-z][a-z0-9-]{0,39}$/;
/** An endpoint key is at most this long (a Unix socket path fits). */
const MAX_KEY = 300;

function bad(what: string): never {
  throw new InstarError("PROTOCOL_ERROR", `instar control protocol: counters: ${what}`);
}

function count(v: unknown, what: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 0) bad(`${what} is not a count`);
  return v as number;
}

function countMap(v: unknown, what: string, key: (k: string) => boolean): Record<string, number> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) bad(`${what} is not an object`);
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_COUNTER_KEYS) bad(`${what} has more than ${MAX_COUNTER_KEYS} entries`);
  const out: Record<string, number> = {};
  for (const [k, n] of entries) {
    if (!key(k)) bad(`${what} has a malformed key ${JSON.stringify(k.slice(0, 50))}`);
    out[k] = count(n, `${what}.${k.slice(0, 50)}`);
  }
  return out;
}

/** Checks counters received from another process; throws `PROTOCOL_ERROR` naming the first fault. */
export function validateCounters(v: unknown): CarriedCounters {
  if (typeof v !== "object" || v === null || Array.isArray(v)) bad("not an object");
  const o = v as Record<string, unknown>;
  const u = o.upgrades as Record<string, unknown>;
  if (typeof u !== "object" || u === null || Array.isArray(u)) bad("upgrades is not an object");
  const reason = (k: string) => REASON.test(k);
  return {
    upgrades: {
      succeeded: count(u.succeeded, "upgrades.succeeded"),
      failed: countMap(u.failed, "upgrades.failed", reason),
      refused: countMap(u.refused, "upgrades.refused", reason),
      rolledBack: count(u.rolledBack, "upgrades.rolledBack"),
    },
    accepted: countMap(o.accepted, "accepted", (k) => k.length > 0 && k.length <= MAX_KEY),
  };
}

function maxMap(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [k, n] of Object.entries(b)) out[k] = Math.max(out[k] ?? 0, n);
  return out;
}

/**
 * The larger of two snapshots, field by field: counters only grow, so a
 * later snapshot of the same generation never lowers what was carried.
 */
export function maxCounters(a: CarriedCounters, b: CarriedCounters): CarriedCounters {
  return {
    upgrades: {
      succeeded: Math.max(a.upgrades.succeeded, b.upgrades.succeeded),
      failed: maxMap(a.upgrades.failed, b.upgrades.failed),
      refused: maxMap(a.upgrades.refused, b.upgrades.refused),
      rolledBack: Math.max(a.upgrades.rolledBack, b.upgrades.rolledBack),
    },
    accepted: maxMap(a.accepted, b.accepted),
  };
}

/**
 * `by[key]` plus `n` (one by default), for a count by reason: a malformed
 * reason counts as `other`, and a map holds at most {@link MAX_COUNTER_KEYS}.
 */
export function bump(by: Record<string, number>, key: string, n = 1): void {
  const k = reasonKey(key);
  if (by[k] === undefined && Object.keys(by).length >= MAX_COUNTER_KEYS) return;
  by[k] = (by[k] ?? 0) + n;
}

/** `key` if it is a well-formed reason (lower-case words joined by dashes), else `other`. */
export function reasonKey(key: string): string {
  return REASON.test(key) ? key : "other";
}
