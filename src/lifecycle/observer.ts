/**
 * The observer of one generation: it follows the lifecycle's events and the
 * endpoints the upgrader tells it about, and keeps the counters, the upgrade
 * reports and the metrics (their types and counting: src/observe/). Counting
 * costs one integer increment per request (`serve()`) or accepted connection
 * (`listen()`); everything else is computed when someone asks.
 *
 * @module
 */

import * as host from "../host.ts";
import { formatAddr } from "../ffi/sockaddr.ts";
import { processRuns } from "../proc.ts";
import { ControlClient } from "../protocol/client.ts";
import {
  type FdLimit,
  MAX_REQUEST_BYTES,
  messages,
  type StatusReport,
} from "../protocol/messages.ts";
import type { Endpoint, State } from "../types.ts";
import { type CarriedCounters, MAX_COUNTER_KEYS, validateCounters } from "../observe/counters.ts";
import { Tally } from "../observe/tally.ts";
import {
  countOpen,
  type GenerationConnections,
  type Metrics,
  type OpenCount,
  serving,
} from "../observe/metrics.ts";
import { Reporter, type UpgradeReport, validateReport } from "../observe/report.ts";
import { supervisorRegion } from "./child.ts";
import type { Emitter } from "./events.ts";
import type { Shared } from "./shared.ts";
import { statusReport } from "./status.ts";

/** What the observer needs from the upgrader. */
export interface ObserverContext {
  generation: number;
  parentPid: number | null;
  /** The promotion window the previous generation announced (0: none): the upgrade succeeds when it has passed. */
  promotionWindow: number;
  /** The counters the previous generation passed, or `null` for a first generation. */
  carried: CarriedCounters | null;
  /** The counter region the previous generation passed (its fd), if any. */
  regionFd?: number | null;
  state: () => State;
  endpoints: () => readonly Endpoint[];
  events: Pick<Emitter, "on" | "emit" | "warn">;
  onDrained: (hook: () => void | Promise<void>) => void;
  /** The control socket the next generation answers, where the final report goes. */
  controlPath: string | null;
  /** The fd limit raised at start (fd_limit.ts). */
  fdLimit?: FdLimit;
  /** Portable mode: each endpoint counts its own connections (no kernel table, no /proc). */
  portable?: boolean;
}

type Counted = { kind: "serve" | "listen" };

/** The counters, the report and the metrics of one generation. */
export class Observer {
  #c: ObserverContext;
  #tally: Tally;
  #counted = new Map<string, Counted>();
  #reporter: Reporter;

  /**
   * The observer of `s`'s generation, which serves `endpoints()`; `onDrained`
   * adds a hook run once the generation drained.
   */
  static of(
    s: Shared,
    endpoints: () => readonly Endpoint[],
    onDrained: (hook: () => void | Promise<void>) => void,
  ): Observer {
    return new Observer({
      generation: s.generation,
      parentPid: s.parentPid,
      promotionWindow: s.link?.hello.promotionWindow ?? 0,
      carried: s.link?.hello.counters ?? null,
      regionFd: s.portable
        ? null
        : s.link
        ? s.link.hello.counterRegion?.fd ?? null
        : supervisorRegion(s.warn),
      state: () => s.state,
      endpoints,
      events: s.events,
      onDrained,
      controlPath: s.settings.controlSocket ?? null,
      // Portable mode cannot read the limit: left out rather than shown as unlimited.
      fdLimit: s.portable ? undefined : s.fdLimit,
      portable: s.portable,
    });
  }

  /** Follows `c.events` from now on. */
  constructor(c: ObserverContext) {
    this.#c = c;
    const tally = this.#tally = new Tally({
      regionFd: c.regionFd ?? null,
      carried: c.carried,
      pid: host.pid(),
      generation: c.generation,
      warn: (m) => c.events.warn(m),
      portable: c.portable,
    });
    const on = c.events.on.bind(c.events);
    // A previous generation that passed no region cannot count this upgrade where this one
    // reads: being ready is its success, or, with a promotion window, its end
    // ({@link Observer.promoted}): counted at ready, a rollback would take it back and the
    // counter would fall (a reset to Prometheus). With a region, the old generation counts it.
    if (c.parentPid !== null && c.promotionWindow === 0 && !tally.shared) {
      const off = on("state", ({ state }) => {
        if (state !== "ready") return;
        off();
        tally.succeededBefore();
      });
    }
    on("upgrade-succeeded", () => tally.upgrade("succeeded"));
    on("upgrade-failed", ({ error }) => tally.upgrade("failed", error.reason));
    on("upgrade-refused", ({ error }) => tally.upgrade("refused", error.reason));
    on("rolled-back", () => tally.upgrade("rolled-back"));
    this.#reporter = new Reporter({
      pid: host.pid(),
      generation: c.generation,
      events: c.events,
      count: () => this.#openNow(),
    });
    c.onDrained(async () => {
      await this.#handOnReport();
      tally.release();
    });
  }

  #inflight: Promise<Metrics> | null = null;

  /** The promotion window this generation started in has passed: its upgrade succeeded. */
  promoted(): void {
    if (!this.#tally.shared) this.#tally.succeededBefore();
  }

  /** The counter region's fd, passed to the next generation with the sockets (null: none). */
  get regionFd(): number | null {
    return this.#tally.regionFd;
  }

  /**
   * The counter of requests served on `key`: element 0, incremented once per
   * request by the server's adapter (serve.ts `REQUEST_COUNTER`).
   */
  requestCounter(key: string): Float64Array {
    this.#counted.set(key, { kind: "serve" });
    // This generation's count in the shared region: every generation reads the sum.
    return this.#tally.requests(key);
  }

  /** Counts what the listener on `key` accepts (the listener counts; nothing is added per connection). */
  countAccepts(key: string, listener: { readonly accepted: number }): void {
    this.#counted.set(key, { kind: "listen" });
    this.#tally.accepts(key, listener);
  }

  /** The counters to pass to the next generation (in the hello, for one that reads no region). */
  carry(): CarriedCounters {
    // Only the endpoints served now, at most MAX_COUNTER_KEYS: keys of sockets no longer
    // served would pile up over generations until the next one refused the hello.
    return this.#tally.read(this.#streams().slice(0, MAX_COUNTER_KEYS).map((e) => e.key));
  }

  /** The last upgrade's report (see {@link Metrics.lastUpgrade}). */
  lastUpgrade(): UpgradeReport | null {
    return this.#reporter.last();
  }

  /** What this generation reports about itself (`instar status`), with the last upgrade's report. */
  async status(): Promise<StatusReport> {
    const c = this.#c;
    const s = await statusReport(c.generation, c.state(), c.parentPid, c.endpoints());
    return { ...s, lastUpgrade: this.lastUpgrade(), ...(c.fdLimit ? { fdLimit: c.fdLimit } : {}) };
  }

  /** The trigger of the next upgrade, for its report. */
  trigger(trigger: string): void {
    this.#reporter.trigger(trigger);
  }

  /**
   * Everything measured, connections counted now (off the event loop). Callers
   * that arrive while a count runs share it: a burst of scrapes costs one.
   */
  metrics(): Promise<Metrics> {
    this.#inflight ??= this.#measure().finally(() => (this.#inflight = null));
    return this.#inflight;
  }

  async #measure(): Promise<Metrics> {
    const c = this.#c;
    const carried = this.carry();
    const state = c.state();
    const previous = c.parentPid !== null && !c.portable && processRuns(c.parentPid)
      ? c.parentPid
      : null;
    const all = this.#streams();
    const open = await this.#open(all, previous);
    const endpoints = all.map((e, i) => {
      const connections: GenerationConnections[] = [
        { pid: host.pid(), generation: c.generation, open: open[i].own },
      ];
      if (previous !== null) {
        connections.push({ pid: previous, generation: c.generation - 1, open: open[i].previous });
      }
      return {
        key: e.key,
        addr: formatAddr(e.addr),
        kind: this.#counted.get(e.key)?.kind ?? "listen",
        accepted: carried.accepted[e.key] ?? 0,
        connections,
      };
    });
    return {
      pid: host.pid(),
      generation: c.generation,
      state,
      ready: serving(state),
      endpoints,
      upgrades: carried.upgrades,
      lastUpgrade: this.lastUpgrade(),
    };
  }

  #open(endpoints: readonly Endpoint[], previous: number | null): Promise<OpenCount[]> {
    if (this.#c.portable) {
      return Promise.all(
        endpoints.map(async (e) => ({ own: await e.connections(), previous: null })),
      );
    }
    return countOpen(endpoints, previous, (key) => this.#counted.get(key)?.kind === "listen");
  }

  // The endpoints served through up.serve() and up.listen(). Datagram sockets have no
  // connections, and counting their datagrams would cost something per datagram: left out.
  #streams(): Endpoint[] {
    return this.#c.endpoints().filter((e) => this.#counted.has(e.key));
  }

  // Open connections on every endpoint now; null when one cannot be counted.
  async #openNow(): Promise<number | null> {
    const counts = (await this.#open(this.#streams(), null)).map((o) => o.own);
    return counts.some((n) => n === null) ? null : counts.reduce((a, b) => a! + b!, 0);
  }

  /**
   * The previous generation's final report and counters, sent by process
   * `pid` once it drained. Only the generation that started this one is
   * believed, and only about this upgrade; anything else is refused.
   */
  adopt(pid: number, report: unknown, counters: unknown): void {
    const c = this.#c;
    try {
      if (pid !== c.parentPid) throw new Error(`process ${pid} did not start this generation`);
      const r = validateReport(report);
      if (r.new.pid !== host.pid() || r.old.pid !== pid) {
        throw new Error("the report is about another upgrade");
      }
      this.#tally.merge(validateCounters(counters));
      this.#reporter.adopt(r);
    } catch (err) {
      c.events.warn(`control socket: refused an upgrade report: ${(err as Error).message}`);
    }
  }

  // After a successful upgrade's drain: the final report and counters go to the next generation
  // on the control socket it now answers. Never blocks: a non-blocking connect and a 0 ms send.
  async #handOnReport(): Promise<void> {
    const report = await this.#reporter.settled();
    const path = this.#c.controlPath;
    if (!report || report.outcome !== "succeeded" || !report.drain || !path) return;
    const msg = messages.report(report, this.carry());
    const size = new TextEncoder().encode(JSON.stringify(msg)).byteLength;
    if (size >= MAX_REQUEST_BYTES) {
      // Many endpoints or reasons: the next generation keeps the counters of the hello.
      this.#c.events.warn(`the upgrade report (${size} bytes) is too long for the control socket`);
      return;
    }
    let client: ControlClient | undefined;
    try {
      const otherUser = (uid: number) => `the control socket ${path} answers as uid ${uid}`;
      client = ControlClient.connect(path, otherUser, true);
      client.sendNow(msg);
    } catch (err) {
      this.#c.events.warn(
        `could not send the upgrade report to generation ${report.new.generation}: ${
          (err as Error).message
        }`,
      );
    } finally {
      client?.close();
    }
  }
}
