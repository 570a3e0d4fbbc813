/**
 * `instar run`: a small process that stays while generations come and go.
 * It starts the command as generation 1, learns which generation is current
 * from its own `NOTIFY_SOCKET` (READY / MAINPID, which instar generations
 * send), reaps every child (a subreaper, or PID 1), turns SIGHUP into an
 * upgrade of the current generation and SIGTERM into a graceful stop of every
 * generation, and ends with the current generation's exit status — or starts
 * it again (`--restart on-failure`) while the sockets it holds queue
 * connections. docs/supervisor.md has the design.
 *
 * @module
 */

import process from "node:process";
import { UpgradeError, UpgradeRefusedError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import type { WaitStatus } from "../ffi/mod.ts";
import { formatAddr } from "../ffi/sockaddr.ts";
import { openConnections } from "../net/sock_diag.ts";
import type { Env } from "../systemd/env.ts";
import type { StatusReport } from "../protocol/messages.ts";
import type { UpgradeFailure } from "../types.ts";
import { childrenOf, descendsFrom } from "./ancestry.ts";
import { counterRegionFd, launch, startEnvironment } from "./generations.ts";
import { type NotifyMessage, NotifySocket } from "./notify_socket.ts";
import { runEnvironment, type RunOptions } from "./options.ts";
import { AllChildren, exitStatus } from "./reaper.ts";
import { Relay } from "./relay.ts";
import { closeHeld, describeHeld, type HeldSocket, openHeld } from "./sockets.ts";
import { becomeSubreaper } from "./subreaper.ts";
import { Backoff } from "./backoff.ts";

/**
 * Where the supervisor is: `starting` until the current generation says
 * READY=1, `upgrading` while an upgrade it triggered runs, `restarting`
 * between a crash and the next start, `stopping` once told to stop (or the
 * current generation ended for good), `stopped` at the end.
 *
 * @example
 * ```ts
 * import type { SupervisorState } from "./supervisor.ts";
 *
 * const s: SupervisorState = "ready";
 * ```
 */
export type SupervisorState =
  | "starting"
  | "ready"
  | "upgrading"
  | "restarting"
  | "stopping"
  | "stopped";

/**
 * The generation the supervisor deems current.
 *
 * @example
 * ```ts
 * import type { Generation } from "./supervisor.ts";
 *
 * const g: Generation = { pid: 42, generation: 1, ready: true, readyAt: 0, upgrading: false };
 * ```
 */
export interface Generation {
  /** Its pid. */
  pid: number;
  /** 1 for the first, +1 for each upgrade or restart. */
  generation: number;
  /** Whether it said READY=1 (or was announced with it). */
  ready: boolean;
  /** `performance.now()` when it became ready. */
  readyAt: number;
  /** It said RELOADING=1 (an upgrade runs, whoever started it) and has not finished it. */
  upgrading: boolean;
}

/** What the supervisor logs through. */
export interface SupervisorLog {
  /** Something that happened (a generation started, was upgraded, ended). */
  info(message: string): void;
  /** Something refused or gone wrong that the supervisor carries on after. */
  warn(message: string): void;
}

interface Pending {
  promise: Promise<number>;
  resolve: (pid: number) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const FAILURES: readonly UpgradeFailure[] = [
  "exited",
  "killed",
  "ready-timeout",
  "exec-failed",
  "protocol-error",
  "no-fds",
  "cancelled",
];
const ORPHAN_GRACE_MS = 2_000;
// More than a Unix datagram socket queues (net.unix.max_dgram_qlen, 512 by default).
const NOTIFY_QUEUE_MAX = 1024;

/**
 * The supervisor. {@link Supervisor.start} starts generation 1; `done`
 * resolves with the exit status once every generation is gone.
 *
 * @example
 * ```ts
 * import { parseRunArgs } from "./options.ts";
 * import { Supervisor } from "./supervisor.ts";
 *
 * const sup = await Supervisor.start(parseRunArgs(["--", "deno", "run", "-A", "app.ts"])!, console);
 * process.on("SIGHUP", () => sup.upgrade("SIGHUP").catch(() => {}));
 * process.exit(await sup.done);
 * ```
 */
export class Supervisor {
  /** Resolves with the supervisor's exit status: the current generation's. */
  readonly done: Promise<number>;
  readonly #o: RunOptions;
  readonly #log: SupervisorLog;
  readonly #env: string[];
  readonly #relay: Relay;
  readonly #held: HeldSocket[];
  readonly #reaper: AllChildren;
  readonly #backoff = new Backoff();
  #ns!: NotifySocket;
  #current: Generation | null = null;
  #draining = new Map<number, number>(); // pid -> generation
  #lastGeneration = 0;
  #pending: Pending | null = null;
  #stopping = false;
  #stops = 0;
  #status: number | null = null;
  #restart: ReturnType<typeof setTimeout> | undefined;
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  #orphansTold = false;
  #finished = false;
  #resolveDone!: (code: number) => void;
  // The counter region passed to every generation this process starts (generations.ts).
  #counters: number | null = null;

  private constructor(o: RunOptions, log: SupervisorLog, held: HeldSocket[]) {
    this.#o = o;
    this.#log = log;
    this.#held = held;
    this.#env = runEnvironment(o, startEnvironment());
    this.#relay = new Relay(envObject(this.#env), (m) => log.warn(m));
    // What a generation said before it ended is read before it is reaped: its MAINPID
    // hand-over counts first, and its /proc entry (a zombie's) still proves its descent.
    this.#reaper = new AllChildren(
      (end) => this.#onExit(end),
      () => this.#ns?.drain(NOTIFY_QUEUE_MAX),
    );
    this.done = new Promise((r) => (this.#resolveDone = r));
  }

  /**
   * Becomes a subreaper, opens the held sockets and the notification socket,
   * and starts generation 1. Throws when any of it fails (nothing is left open).
   */
  static async start(o: RunOptions, log: SupervisorLog): Promise<Supervisor> {
    if (process.pid !== 1) becomeSubreaper(); // PID 1 adopts every orphan anyway
    const held = await openHeld(o.listen);
    const sup = new Supervisor(o, log, held);
    try {
      sup.#ns = NotifySocket.open((m) => sup.#onNotify(m), (m) => log.warn(m));
    } catch (err) {
      closeHeld(held);
      throw err;
    }
    sup.#counters = counterRegionFd(held.length, (m) => log.warn(m));
    // Signal listeners keep no runtime alive: one timer that fires every 24.8 days does.
    sup.#keepAlive = setInterval(() => {}, 2 ** 31 - 1);
    sup.#reaper.start();
    for (const h of held) log.info(`holding ${describeHeld(h)}`);
    try {
      sup.#launch();
    } catch (err) {
      sup.#finish();
      throw err;
    }
    return sup;
  }

  /** The current generation, or `null` between a crash and its restart. */
  get current(): Readonly<Generation> | null {
    return this.#current;
  }

  /** Where the supervisor is. */
  get state(): SupervisorState {
    if (this.#finished) return "stopped";
    if (this.#stopping) return "stopping";
    if (this.#pending) return "upgrading";
    if (!this.#current) return "restarting";
    return this.#current.ready ? "ready" : "starting";
  }

  /** The sockets the supervisor holds (`--listen`). */
  get held(): readonly HeldSocket[] {
    return this.#held;
  }

  /**
   * Upgrades the current generation (SIGHUP to it; the instar app starts the
   * next one) and resolves with the new generation's pid once it took over.
   * `trigger` says who asked, for the log. Rejects with an
   * {@link UpgradeRefusedError} when nothing could be started (no generation
   * ready, one that never notified, stopping) and with an {@link UpgradeError}
   * when the generation reports a failure, ends, or takes longer than
   * `--upgrade-timeout`. A trigger during an upgrade joins it.
   */
  upgrade(trigger: string): Promise<number> {
    // Whatever the generations said before this trigger counts first (a MAINPID hand-over).
    this.#ns.drain(NOTIFY_QUEUE_MAX);
    if (this.#pending) return this.#pending.promise;
    const refused = this.#refusal();
    if (refused) {
      this.#log.warn(`upgrade (${trigger}) refused: ${refused.message}`);
      return Promise.reject(refused);
    }
    const cur = this.#current!;
    if (cur.upgrading) {
      // Started by someone else (the app's own control socket, a signal to it): join it.
      this.#log.info(`upgrade (${trigger}) joins the one generation ${cur.generation} runs`);
      return this.#newPending(cur);
    }
    this.#log.info(`upgrade (${trigger}): SIGHUP to generation ${cur.generation} (pid ${cur.pid})`);
    const pending = this.#newPending(cur);
    try {
      sys.kill(cur.pid, sys.SIGNALS.SIGHUP);
    } catch (err) {
      this.#settle(new UpgradeError("exited", `pid ${cur.pid}: ${(err as Error).message}`));
    }
    return pending;
  }

  #newPending(cur: Generation): Promise<number> {
    let resolve!: (pid: number) => void, reject!: (err: Error) => void;
    const promise = new Promise<number>((res, rej) => [resolve, reject] = [res, rej]);
    const ms = this.#o.upgradeTimeoutMs;
    const timer = setTimeout(() =>
      this.#settle(
        new UpgradeError(
          "ready-timeout",
          `generation ${cur.generation} (pid ${cur.pid}) announced no new generation within ` +
            `${ms} ms (--upgrade-timeout)`,
        ),
      ), ms);
    this.#pending = { promise, resolve, reject, timer };
    promise.catch(() => {}); // the caller gets it; nobody else must see it unhandled
    return promise;
  }

  #settle(result: number | Error): void {
    const p = this.#pending;
    if (!p) return;
    this.#pending = null;
    clearTimeout(p.timer);
    if (typeof result === "number") p.resolve(result);
    else {
      this.#log.warn(`upgrade failed: ${result.message}`);
      p.reject(result);
    }
  }

  #refusal(): UpgradeRefusedError | null {
    const cur = this.#current;
    if (this.#stopping || this.#finished) {
      return new UpgradeRefusedError("stopping", "the supervisor is stopping");
    }
    if (!cur) {
      return new UpgradeRefusedError("not-ready", "no generation runs (a restart is pending)");
    }
    if (!cur.ready) {
      return new UpgradeRefusedError(
        "not-ready",
        `generation ${cur.generation} (pid ${cur.pid}) has not said READY=1 on NOTIFY_SOCKET: ` +
          "it is still starting, or it is not an instar app (a plain server is restarted on a " +
          "crash, but only an instar app can be upgraded without downtime)",
      );
    }
    return null;
  }

  /**
   * Stops every generation gracefully (SIGTERM to the current one and to any
   * that still drains). A second call with `trigger` "SIGINT" sends SIGINT,
   * which makes an instar generation stop without waiting for its drain; any
   * other repeat sends SIGTERM again, which does not. `done` resolves once
   * every generation is gone.
   */
  stop(trigger: string): void {
    if (this.#finished) return;
    if (++this.#stops === 1) {
      this.#log.info(`${trigger}: stopping every generation`);
      this.#stopping = true;
      this.#relay.stopping();
      clearTimeout(this.#restart);
      this.#restart = undefined;
      this.#settle(new UpgradeRefusedError("stopping", "the supervisor is stopping"));
    } else {
      this.#log.info(`${trigger} again: telling every generation to stop now`);
    }
    // A repeated SIGINT is passed on as SIGINT: a generation ends its drain on a second SIGINT
    // only (src/lifecycle/signals.ts); a repeated SIGTERM is passed on as one, which does not.
    const signal = this.#stops > 1 && trigger === "SIGINT" ? "SIGINT" : "SIGTERM";
    const pids = [...(this.#current ? [this.#current.pid] : []), ...this.#draining.keys()];
    for (const pid of pids) {
      try {
        sys.kill(pid, sys.SIGNALS[signal]);
      } catch { /* ended; reaped soon */ }
    }
    this.#maybeFinish();
  }

  /** What `instar status --control` reports: the current generation, the draining one. */
  async status(): Promise<StatusReport> {
    const cur = this.#current;
    const listenersOf = (pid: number | undefined) =>
      Promise.all(this.#held.map(async (h) => ({
        addr: formatAddr(h.addr),
        connections: pid !== undefined && h.addr.transport === "tcp"
          ? await openConnections(h.addr.port, pid)
          : null,
      })));
    const [pid, generation] = [...this.#draining].at(-1) ?? [];
    return {
      pid: cur?.pid ?? process.pid,
      generation: cur?.generation ?? this.#lastGeneration,
      state: this.state,
      listeners: await listenersOf(cur?.pid),
      parentPid: process.pid,
      previous: pid === undefined
        ? null
        : { pid, generation: generation!, listeners: await listenersOf(pid) },
    };
  }

  // ------------------------------------------------------------ generations

  #launch(): void {
    const generation = ++this.#lastGeneration;
    const pid = launch({
      command: this.#o.command,
      argv: this.#o.argv,
      env: this.#env,
      notifySocket: this.#ns.path,
      held: this.#held,
      counters: this.#counters,
    });
    this.#current = { pid, generation, ready: false, readyAt: 0, upgrading: false };
    this.#log.info(`generation ${generation} started: pid ${pid} (${this.#o.argv.join(" ")})`);
  }

  #onExit(end: WaitStatus): void {
    const cur = this.#current;
    if (cur && end.pid === cur.pid) this.#currentEnded(cur, end);
    else if (this.#draining.has(end.pid)) {
      this.#log.info(`generation ${this.#draining.get(end.pid)} (pid ${end.pid}) ${how(end)}`);
      this.#draining.delete(end.pid);
    }
    queueMicrotask(() => this.#maybeFinish()); // after the reaper's loop
  }

  #currentEnded(cur: Generation, end: WaitStatus): void {
    this.#current = null;
    this.#status = exitStatus(end);
    this.#log.info(`generation ${cur.generation} (pid ${cur.pid}) ${how(end)}`);
    const reason = end.exited ? "exited" : "killed";
    this.#settle(
      new UpgradeError(reason, `generation ${cur.generation} (pid ${cur.pid}) ${how(end)}`),
    );
    if (this.#stopping) return;
    if (this.#o.restart === "on-failure" && this.#status !== 0) return this.#scheduleRestart(cur);
    this.#stopping = true; // it ended on its own: so does the supervisor, once the rest drained
    this.#relay.stopping(`generation ${cur.generation} ${how(end)}`);
  }

  #scheduleRestart(cur: Generation): void {
    const delay = this.#backoff.next(cur.ready ? performance.now() - cur.readyAt : 0);
    this.#relay.status(`generation ${cur.generation} crashed; restarting in ${delay} ms`);
    this.#log.info(`restarting in ${delay} ms (--restart on-failure)`);
    this.#restart = setTimeout(() => {
      this.#restart = undefined;
      try {
        this.#launch();
      } catch (err) {
        this.#log.warn(`cannot start ${this.#o.command}: ${(err as Error).message}`);
        this.#scheduleRestart({
          pid: 0,
          generation: this.#lastGeneration,
          ready: false,
          readyAt: 0,
          upgrading: false,
        });
      }
    }, delay);
  }

  // ------------------------------------------------------------ notifications

  #onNotify(m: NotifyMessage): void {
    if (this.#finished) return;
    if (!descendsFrom(m.pid, process.pid)) {
      return this.#ns.refuse(
        "stranger",
        `ignored a datagram from pid ${m.pid}, which is not a descendant of the supervisor ` +
          `(pid ${process.pid})`,
      );
    }
    const cur = this.#current;
    if (!cur || m.pid !== cur.pid) {
      // An earlier generation still draining, or a process of the app: not the current one.
      if (m.fields.has("MAINPID")) {
        this.#ns.refuse(
          "mainpid",
          `ignored MAINPID from pid ${m.pid}: only the current generation moves it`,
        );
      }
      return;
    }
    const f = m.fields;
    if (f.has("MAINPID") && !this.#mainPid(cur, f)) return;
    if (f.get("READY") === "1") this.#readySaid(this.#current!, f.get("STATUS"), f.has("MAINPID"));
    else if (f.get("RELOADING") === "1") {
      this.#current!.upgrading = true;
      this.#relay.reloading(f.get("STATUS"));
    } else if (f.has("STATUS")) this.#relay.status(f.get("STATUS")!);
    const extend = f.get("EXTEND_TIMEOUT_USEC");
    if (extend !== undefined && /^[0-9]{1,16}$/.test(extend)) {
      this.#relay.extendTimeout(BigInt(extend));
    }
  }

  // MAINPID=<pid> from the current generation: a successor took over. False when refused.
  #mainPid(cur: Generation, f: Map<string, string>): boolean {
    const text = f.get("MAINPID")!;
    const pid = Number(text);
    if (!/^[1-9][0-9]{0,9}$/.test(text)) {
      this.#ns.refuse("mainpid", `ignored MAINPID=${JSON.stringify(text.slice(0, 20))}: not a pid`);
      return false;
    }
    if (pid === cur.pid) return true;
    if (!descendsFrom(pid, process.pid)) {
      this.#ns.refuse("mainpid", `ignored MAINPID=${pid}: not a descendant of the supervisor`);
      return false;
    }
    this.#draining.set(cur.pid, cur.generation);
    const generation = ++this.#lastGeneration;
    this.#current = { pid, generation, ready: false, readyAt: 0, upgrading: false };
    this.#log.info(
      `generation ${generation} (pid ${pid}) took over from generation ${cur.generation} ` +
        `(pid ${cur.pid}), which drains`,
    );
    this.#settle(pid);
    // Announced after a stop was sent (it crossed our SIGTERM to its parent): it is told too,
    // or the supervisor would wait for a generation that nobody asked to stop.
    if (this.#stopping) {
      try {
        sys.kill(pid, sys.SIGNALS.SIGTERM);
      } catch { /* ended; reaped soon */ }
    }
    return true;
  }

  #readySaid(cur: Generation, status: string | undefined, announced: boolean): void {
    if (!cur.ready) {
      cur.ready = true;
      cur.readyAt = performance.now();
      if (!announced) this.#log.info(`generation ${cur.generation} (pid ${cur.pid}) is ready`);
      this.#relay.ready(status ?? `generation ${cur.generation} (pid ${cur.pid}) ready`);
      return;
    }
    const wasUpgrading = cur.upgrading;
    cur.upgrading = false;
    if (this.#pending || wasUpgrading) {
      // READY=1 without a new MAINPID ends a reload that failed (systemd_bridge.ts).
      const text = status ?? "the generation reported a failed upgrade";
      const reason = FAILURES.find((r) => text.includes(r)) ?? "protocol-error";
      this.#relay.ready(text);
      this.#settle(new UpgradeError(reason, `generation ${cur.generation}: ${text}`));
    }
  }

  // ------------------------------------------------------------ the end

  #maybeFinish(): void {
    if (this.#finished || !this.#stopping || this.#current || this.#draining.size) return;
    this.#reaper.reap();
    const orphans = this.#reaper.anyLeft ? childrenOf(process.pid) : [];
    if (orphans.length === 0) return this.#finish();
    // Each leftover's exit comes back here: one round of SIGTERM and one grace timer only.
    if (this.#orphansTold) return;
    this.#orphansTold = true;
    // Processes the generations left behind: asked to stop, then killed, then the supervisor
    // goes. As a subreaper under tini or systemd (not PID 1) nothing else would kill one that
    // ignores SIGTERM, and it could keep a port.
    this.#log.info(`every generation is gone; SIGTERM to ${orphans.length} leftover process(es)`);
    signalAll(orphans, sys.SIGNALS.SIGTERM);
    this.#current = null;
    setTimeout(() => {
      signalAll(childrenOf(process.pid), sys.SIGNALS.SIGKILL);
      this.#reaper.reap();
      this.#finish();
    }, ORPHAN_GRACE_MS);
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#settle(new UpgradeRefusedError("stopping", "the supervisor stopped"));
    clearTimeout(this.#restart);
    clearInterval(this.#keepAlive);
    this.#ns?.close();
    closeHeld(this.#held);
    if (this.#counters !== null) sys.close(this.#counters);
    this.#counters = null;
    this.#resolveDone(this.#status ?? 0);
  }
}

function how(end: WaitStatus): string {
  return end.exited
    ? `exited with status ${end.code}`
    : `was killed by ${sys.signalName(end.signal)} (status ${128 + end.signal})`;
}

function envObject(entries: readonly string[]): Env {
  const env: Env = {};
  for (const e of entries) {
    const i = e.indexOf("=");
    if (i > 0) env[e.slice(0, i)] = e.slice(i + 1);
  }
  return env;
}

function signalAll(pids: readonly number[], signal: number): void {
  for (const pid of pids) {
    try {
      sys.kill(pid, signal);
    } catch { /* gone */ }
  }
}
