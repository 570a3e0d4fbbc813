/**
 * The upgrade report: one record per upgrade attempt, written by the
 * generation that ran it (the old one) from the lifecycle's events — what
 * triggered it, who replaced whom, how long spawning, readiness and the drain
 * took, how many connections were open at the handover and how many of them
 * ended by themselves or were cut. The drain part arrives after the new
 * generation is ready, so a successful upgrade's report is complete only
 * once the old generation drained; it is then emitted (`upgrade-report`) and
 * sent to the new generation, which shows it in `instar status`.
 *
 * @module
 */

import { InstarError } from "../errors.ts";

/**
 * How an upgrade ended.
 *
 * @example
 * ```ts
 * import type { UpgradeOutcome } from "@instar/instar";
 *
 * const outcome: UpgradeOutcome = "rolled-back";
 * ```
 */
export type UpgradeOutcome = "succeeded" | "failed" | "refused" | "rolled-back";

/**
 * What started an upgrade: `signal` (the upgrade signal), `cli` (`instar
 * upgrade`), `handover` (an independently started process asked), `api`
 * (`up.upgrade()`), or a word a supervisor sent with its control request
 * (e.g. `watch`).
 *
 * @example
 * ```ts
 * import type { UpgradeTrigger } from "@instar/instar";
 *
 * const trigger: UpgradeTrigger = "watch";
 * ```
 */
export type UpgradeTrigger =
  | "signal"
  | "cli"
  | "handover"
  | "api"
  | (string & Record<never, never>);

/** A trigger word: what a control request may name (lower-case, at most 32 characters). */
export const TRIGGER = /^[a-z][a-z0-9-]{0,31}$/;

/**
 * One upgrade, from its trigger to the end of the old generation's drain.
 *
 * @example
 * ```ts
 * import { type UpgradeReport, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * up.on("upgrade-report", (r: UpgradeReport) => {
 *   console.log(r.outcome, r.readyMs, r.drain?.forced);
 * });
 * ```
 */
export interface UpgradeReport {
  /** What started it. */
  trigger: UpgradeTrigger;
  /** How it ended (so far: a successful upgrade is `succeeded` while the old generation drains). */
  outcome: UpgradeOutcome;
  /** Why it failed, was refused or rolled back; `null` when it succeeded. */
  reason: string | null;
  /** When it was triggered (ISO 8601). */
  startedAt: string;
  /** The generation that ran it. */
  old: { pid: number; generation: number };
  /** The generation it started; `pid` is `null` when none was started (refused, or spawning failed). */
  new: { pid: number | null; generation: number };
  /** Milliseconds from the trigger until the new process existed. */
  spawnMs: number | null;
  /** Milliseconds from the trigger until the new generation said ready. */
  readyMs: number | null;
  /** The old generation's drain; `null` until it drained (or when it never drains: failed, refused, rolled back). */
  drain: DrainReport | null;
}

/**
 * The drain part of an {@link UpgradeReport}.
 *
 * @example
 * ```ts
 * import type { DrainReport } from "@instar/instar";
 *
 * const d: DrainReport = { ms: 420, atHandover: 12, drained: 12, forced: 0 };
 * ```
 */
export interface DrainReport {
  /** Milliseconds from the start of the drain until every endpoint was released. */
  ms: number;
  /** Connections open on the old generation when it began to drain (`null`: could not be counted). */
  atHandover: number | null;
  /** Of those, the ones that ended by themselves: `atHandover - forced`. */
  drained: number | null;
  /** Connections cut at the drain timeout. */
  forced: number;
}

function bad(what: string): never {
  throw new InstarError("PROTOCOL_ERROR", `instar control protocol: upgrade report: ${what}`);
}

const MAX_MS = 1e9; // ~11 days: a duration beyond that is not one this lifecycle measured

function ms(v: unknown, what: string, nullable = true): number | null {
  if (v === null && nullable) return null;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > MAX_MS) {
    bad(`${what} is not a duration`);
  }
  return v;
}

function n(v: unknown, what: string): number | null {
  if (v === null) return null;
  if (!Number.isSafeInteger(v) || (v as number) < 0) bad(`${what} is not a count`);
  return v as number;
}

function pidGen(
  v: unknown,
  what: string,
  nullablePid: boolean,
): { pid: number; generation: number } {
  const o = v as Record<string, unknown>;
  if (typeof o !== "object" || o === null) bad(`${what} is not an object`);
  const pid = nullablePid && o.pid === null ? null : o.pid;
  if (
    pid !== null && (!Number.isInteger(pid) || (pid as number) < 1 || (pid as number) > 2 ** 31 - 1)
  ) {
    bad(`${what}.pid is not a process id`);
  }
  if (!Number.isSafeInteger(o.generation) || (o.generation as number) < 1) {
    bad(`${what}.generation is not a generation`);
  }
  return { pid: pid as number, generation: o.generation as number };
}

const OUTCOMES = new Set(["succeeded", "failed", "refused", "rolled-back"]);

/** Checks a report received from another process; throws `PROTOCOL_ERROR` naming the first fault. */
export function validateReport(v: unknown): UpgradeReport {
  if (typeof v !== "object" || v === null || Array.isArray(v)) bad("not an object");
  const o = v as Record<string, unknown>;
  if (typeof o.trigger !== "string" || !TRIGGER.test(o.trigger)) bad("malformed trigger");
  if (!OUTCOMES.has(o.outcome as string)) bad("unknown outcome");
  if (o.reason !== null && (typeof o.reason !== "string" || o.reason.length > 200)) {
    bad("reason is not a short string");
  }
  if (
    typeof o.startedAt !== "string" || o.startedAt.length > 40 || isNaN(Date.parse(o.startedAt))
  ) {
    bad("startedAt is not a time");
  }
  let drain: DrainReport | null = null;
  if (o.drain !== null) {
    const d = o.drain as Record<string, unknown>;
    if (typeof d !== "object" || Array.isArray(d)) bad("drain is not an object");
    drain = {
      ms: ms(d.ms, "drain.ms", false)!,
      atHandover: n(d.atHandover, "drain.atHandover"),
      drained: n(d.drained, "drain.drained"),
      forced: n(d.forced, "drain.forced") ?? bad("drain.forced is null"),
    };
  }
  return {
    trigger: o.trigger,
    outcome: o.outcome as UpgradeOutcome,
    reason: o.reason as string | null,
    startedAt: o.startedAt,
    old: pidGen(o.old, "old", false),
    new: pidGen(o.new, "new", true),
    spawnMs: ms(o.spawnMs, "spawnMs"),
    readyMs: ms(o.readyMs, "readyMs"),
    drain,
  };
}

/** A report as a few lines of text (`instar upgrade`, `instar status`). */
export function formatReport(r: UpgradeReport): string {
  const t = (v: number | null) => (v === null ? "-" : `${Math.round(v)} ms`);
  const c = (v: number | null) => (v === null ? "?" : String(v));
  const lines = [
    `upgrade ${r.outcome}${
      r.reason ? ` (${r.reason})` : ""
    }, triggered by ${r.trigger} at ${r.startedAt}`,
    `  generation ${r.old.generation} (pid ${r.old.pid}) -> generation ${r.new.generation}` +
    (r.new.pid === null ? " (not started)" : ` (pid ${r.new.pid})`),
    `  spawned after ${t(r.spawnMs)}, ready after ${t(r.readyMs)}`,
  ];
  const d = r.drain;
  if (d) {
    lines.push(
      `  drained in ${t(d.ms)}: ${c(d.atHandover)} connection(s) at the handover, ` +
        `${c(d.drained)} finished, ${d.forced} cut at the drain timeout`,
    );
  } else if (r.outcome === "succeeded") {
    lines.push("  the previous generation is still draining");
  }
  return lines.join("\n") + "\n";
}

/**
 * The events a {@link Reporter} follows, with what it reads of them: the
 * lifecycle emits them (`UpgraderEvents`, src/lifecycle/events.ts).
 */
export interface ReportedEvents {
  "upgrade-started": { generation: number };
  "upgrade-spawned": { pid: number };
  "promotion-window": unknown;
  "upgrade-succeeded": { ms: number };
  "upgrade-failed": { error: { reason: string } };
  "upgrade-refused": { error: { reason: string } };
  "rolled-back": { pid: number; generation: number; reason: string };
  draining: { reason: string };
  drained: { forced: number };
}

/** Where a {@link Reporter} hears the lifecycle's events and tells its reports. */
export interface ReportEvents {
  /** Subscribes to `event`. */
  on<K extends keyof ReportedEvents>(
    event: K,
    handler: (payload: ReportedEvents[K]) => void,
  ): () => void;
  /** Tells a report. */
  emit(event: "upgrade-report", report: UpgradeReport): void;
}

/** What a {@link Reporter} follows. */
export interface ReporterContext {
  pid: number;
  generation: number;
  events: ReportEvents;
  /** Open connections now (at the handover). */
  count: () => Promise<number | null>;
}

/**
 * Writes the reports of the upgrades one generation runs, from its events.
 * A refusal is counted (metrics) and emitted, but it started nothing and
 * does not replace the last upgrade's report.
 */
export class Reporter {
  #c: ReporterContext;
  #trigger: string | null = null;
  #current: UpgradeReport | null = null;
  #t0 = 0;
  #last: UpgradeReport | null = null;
  #drainT0 = 0;
  #atHandover: Promise<number | null> | null = null;
  #settled: Promise<UpgradeReport | null> = Promise.resolve(null);

  constructor(c: ReporterContext) {
    this.#c = c;
    const on = c.events.on.bind(c.events);
    on("upgrade-started", ({ generation }) => this.#start(generation));
    on("upgrade-spawned", ({ pid }) => {
      if (!this.#current) return;
      this.#current.new.pid = pid;
      this.#current.spawnMs = performance.now() - this.#t0;
    });
    // With a promotion window the new generation is ready when the window opens; the upgrade
    // succeeds when it has passed, with `ms` still the time to ready.
    on("promotion-window", () => {
      if (this.#current) this.#current.readyMs = performance.now() - this.#t0;
    });
    on("upgrade-succeeded", ({ ms }) => {
      if (!this.#current) return;
      this.#current.readyMs = ms;
      this.#last = this.#current;
      this.#current = null;
    });
    on("upgrade-failed", ({ error }) => this.#end(this.#current, "failed", error.reason));
    on("upgrade-refused", ({ error }) => {
      const r = this.#fresh(this.#c.generation + 1);
      this.#emit({ ...r, outcome: "refused", reason: error.reason });
    });
    // The upgrade's outcome (no upgrade-succeeded or upgrade-failed follows).
    on("rolled-back", ({ pid, generation, reason }) => {
      const r = this.#current?.new.pid === pid
        ? this.#current
        : { ...this.#fresh(generation), new: { pid, generation } };
      this.#end(r, "rolled-back", reason);
    });
    on("draining", ({ reason }) => {
      if (reason !== "upgrade" || this.#last?.outcome !== "succeeded" || this.#last.drain) return;
      this.#drainT0 = performance.now();
      this.#atHandover = this.#c.count().catch(() => null);
    });
    on("drained", ({ forced }) => {
      const r = this.#last, at = this.#atHandover;
      if (!r || !at) return;
      this.#atHandover = null;
      const ms = performance.now() - this.#drainT0;
      this.#settled = at.then((atHandover) => {
        const drained = atHandover === null ? null : Math.max(0, atHandover - forced);
        r.drain = { ms, atHandover, drained, forced };
        this.#c.events.emit("upgrade-report", r);
        return r;
      });
    });
  }

  /** Names what triggers the next upgrade (`api` when nobody says). */
  trigger(trigger: string): void {
    this.#trigger = trigger;
  }

  /** The last upgrade's report: complete, or succeeded with the drain still to come. */
  last(): UpgradeReport | null {
    return this.#last;
  }

  /** Resolves with the last report once its drain part is in (at once when none is pending). */
  settled(): Promise<UpgradeReport | null> {
    return this.#settled.then(() => this.#last);
  }

  /** The report the previous generation sent about the upgrade that started this one. */
  adopt(r: UpgradeReport): void {
    if (!this.#last || this.#last.new.generation <= r.new.generation) this.#last = r;
  }

  #fresh(generation: number): UpgradeReport {
    const trigger = this.#trigger ?? "api";
    this.#trigger = null;
    return {
      trigger,
      outcome: "succeeded",
      reason: null,
      startedAt: new Date().toISOString(),
      old: { pid: this.#c.pid, generation: this.#c.generation },
      new: { pid: null, generation },
      spawnMs: null,
      readyMs: null,
      drain: null,
    };
  }

  #start(generation: number): void {
    this.#t0 = performance.now();
    this.#current = this.#fresh(generation);
  }

  #end(r: UpgradeReport | null, outcome: UpgradeOutcome, reason: string): void {
    if (!r) return;
    r.outcome = outcome;
    r.reason = reason.slice(0, 200);
    if (r === this.#current) this.#current = null;
    this.#last = r;
    this.#emit(r);
  }

  // After every subscriber of the event that ended the upgrade: a log shows the failure, then its report.
  #emit(r: UpgradeReport): void {
    queueMicrotask(() => this.#c.events.emit("upgrade-report", r));
  }
}
