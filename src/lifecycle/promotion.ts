/**
 * The promotion window, both sides of it.
 *
 * The old generation (`PromotionWindow`): once the next generation is ready,
 * it stops accepting but keeps its sockets and the link to the new one for
 * `promotionWindow` ms. If the new generation exits, breaks the protocol or
 * says `unhealthy` within it, the old one accepts again and serves on (a
 * rollback) and tells the new one to go (`rollback` on the link): the new
 * one drains what it accepted and exits. Otherwise it drains as
 * after any upgrade.
 *
 * The new generation (`Probation`): it serves, but until the old generation
 * ends the window (closes the link: promoted, or sends `rollback`) it refuses
 * upgrades, may declare itself unhealthy, and when it is told to stop it
 * leaves without shutting the shared sockets down: the old generation
 * decides what becomes of them.
 *
 * @module
 */

import * as host from "../host.ts";
import { InstarError, UpgradeError, UpgradeRefusedError } from "../errors.ts";
import { dupCloexec, signalName } from "../ffi/mod.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../runtime/transplant.ts";
import { processRuns } from "../proc.ts";
import { shown } from "../protocol/fault.ts";
import { checkReason, type Message, messages } from "../protocol/messages.ts";
import { validateUnhealthy } from "../protocol/validate.ts";
import { MessageSocket } from "../protocol/message_socket.ts";
import { socketOnFd } from "../runtime/mod.ts";
import { deadline, sleep } from "../timeout.ts";
import type { Endpoint } from "../types.ts";
import { type ParentLink, sayReady } from "./child.ts";
import type { Attempt } from "./generation.ts";
import { writePidFile } from "./pid_file.ts";
import type { ChildEnd, Reaper } from "./reaper.ts";

/** How long a rollback waits for the exit status of a child whose link ended. */
const EXIT_WAIT_MS = 1_000;
/** How long after its link ended a handed-over process is looked for (it may be exiting). */
const PEER_EXIT_WAIT_MS = 200;
/** A new generation told to go gets the drain timeout plus this much before SIGKILL. */
const GO_GRACE_MS = 10_000;

/** What the old generation's window needs. */
export interface WindowOptions {
  /** The window, in ms. */
  windowMs: number;
  /** The new generation's number. */
  generation: number;
  /** This generation's endpoints (listeners and servers), paused for the window. */
  endpoints: readonly Endpoint[];
  /** The control socket's fd, paused for the window (the new generation answers it), or null. */
  controlFd: number | null;
  /** Reaps a fork/exec child. */
  reaper: Reaper;
  /** The drain timeout: how long a new generation told to go may drain. */
  drainTimeout: number;
  /** The PID file, rewritten with this process's pid on a rollback. */
  pidFile?: string;
  /** Reports something worth a log line. */
  warn(message: string): void;
}

/** How a window ended without a promotion. */
export interface WindowFailure {
  /** `rolled-back`, or `cancelled` when this generation was told to stop within the window. */
  error: UpgradeError;
  /** Why, in a few words: the `unhealthy()` reason, or how the new generation ended. */
  reason: string;
}

/**
 * The old generation's side: pauses accepting, watches the new generation
 * for the window, and resolves `outcome` with `null` (promoted: drain now)
 * or with why it serves on.
 */
export class PromotionWindow {
  /** `null` once the window passed (promoted), else the failure; never rejects. */
  readonly outcome: Promise<WindowFailure | null>;
  readonly #attempt: Attempt;
  readonly #o: WindowOptions;
  readonly #link: MessageSocket;
  readonly #exited: Promise<ChildEnd> | null;
  #settle!: (f: WindowFailure | null) => void;
  #paused: { endpoint?: Endpoint; socket?: PausedSocket }[] = [];
  #timer: ReturnType<typeof setTimeout>;
  #done = false;
  #deciding = false;
  #reaped = false;

  /** Starts the window for `attempt`, which just said ready. */
  constructor(attempt: Attempt, o: WindowOptions) {
    this.#attempt = attempt;
    this.#o = o;
    this.outcome = new Promise((r) => (this.#settle = r));
    if (!attempt.keep) {
      throw new InstarError("INVALID_STATE", `${attempt.who} cannot keep its link`);
    }
    this.#pause();
    this.#link = attempt.keep({
      message: (m) => this.#message(m),
      end: (error) => void this.#linkEnded(error),
    });
    this.#exited = attempt.child ? o.reaper.exited(attempt.pid) : null;
    this.#exited?.then((end) => {
      this.#reaped = true;
      if (!this.#deciding) this.#rollback(describeEnd(end));
    });
    this.#timer = setTimeout(() => this.#promote(), o.windowMs);
  }

  // Connections queue for the new generation; the sockets stay open here.
  #pause(): void {
    for (const endpoint of this.#o.endpoints) {
      try {
        endpoint.pauseAccepting();
        this.#paused.push({ endpoint });
      } catch (err) {
        this.#o.warn(`promotion window: pausing ${endpoint.key}: ${(err as Error).message}`);
      }
    }
    if (this.#o.controlFd === null) return;
    try {
      this.#paused.push({ socket: pauseSocket(this.#o.controlFd) });
    } catch (err) {
      this.#o.warn(`promotion window: pausing the control socket: ${(err as Error).message}`);
    }
  }

  // Accepting again, everywhere it was paused; once.
  #giveBack(): void {
    for (const p of this.#paused.splice(0)) {
      try {
        if (p.endpoint) p.endpoint.resumeAccepting();
        else resumeSocket(p.socket!);
      } catch (err) {
        this.#o.warn(`rollback: accepting again: ${(err as Error).message}`);
      }
    }
  }

  #message(m: Message): void {
    if (m.type !== "unhealthy") {
      return this.#rollback(`broke the protocol: unexpected ${shown(m.type)} message`);
    }
    let reason: string;
    try {
      reason = validateUnhealthy(m);
    } catch (err) {
      return this.#rollback(`broke the protocol: ${(err as Error).message}`);
    }
    this.#rollback(reason);
  }

  // The link ended without a word: the new generation died (roll back), or it is
  // an instar that does not keep the link (it serves: promote). Either way nobody
  // may wait meanwhile, so this generation accepts again at once. One that said
  // it keeps the link is rolled back whatever its exit looks like: a process slow
  // to finish dying must never be promoted.
  async #linkEnded(error: InstarError | null): Promise<void> {
    if (this.#done || this.#deciding) return;
    if (error) return this.#rollback(`broke the protocol: ${error.message}`);
    this.#deciding = true;
    this.#giveBack();
    let ended: string | null;
    if (this.#exited) {
      const r = await deadline(this.#exited, EXIT_WAIT_MS);
      ended = r.done ? describeEnd(r.value) : null;
    } else {
      await sleep(PEER_EXIT_WAIT_MS);
      ended = processRuns(this.#attempt.pid) ? null : "closed the control connection and exited";
    }
    this.#deciding = false;
    if (ended === null && this.#attempt.keepsLink?.()) {
      ended = "closed the link within its promotion window";
    }
    if (ended !== null) return this.#rollback(ended);
    this.#o.warn(
      `${this.#attempt.who} closed the link after ready: an instar without promotion windows; ` +
        "promoted at once",
    );
    this.#promote();
  }

  // The window's timer; while a link's end is being looked into, that decides.
  #promote(): void {
    if (this.#done || this.#deciding) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#settle(null);
  }

  #rollback(reason: string): void {
    if (this.#done) return;
    this.#finish(reason);
    const who = this.#attempt.who;
    this.#goAway();
    this.#takePidFile();
    const error = new UpgradeError(
      "rolled-back",
      `${who} was rolled back within the ${this.#o.windowMs} ms promotion window: ${reason}`,
      { pid: this.#attempt.pid },
    );
    this.#settle({ error, reason });
  }

  /**
   * This generation was told to stop within the window: it accepts again (a
   * stop takes what is queued before it closes the sockets), tells the new
   * generation to go, and the upgrade is `cancelled`.
   */
  stop(): void {
    if (this.#done) return;
    const reason = "the previous generation was told to stop";
    this.#finish(reason);
    this.#goAway();
    // The new generation wrote it at its ready(); this stop removes it only if it names this pid.
    this.#takePidFile();
    const error = new UpgradeError(
      "cancelled",
      `this generation was told to stop within the promotion window of ${this.#attempt.who}`,
      { pid: this.#attempt.pid },
    );
    this.#settle({ error, reason });
  }

  // The PID file names the generation that serves: this one again.
  #takePidFile(): void {
    const path = this.#o.pidFile;
    if (!path) return;
    try {
      writePidFile(path, host.pid());
    } catch (err) {
      this.#o.warn(`rollback: PID file ${path}: ${(err as Error).message}`);
    }
  }

  #finish(reason: string): void {
    this.#done = true;
    clearTimeout(this.#timer);
    this.#giveBack();
    this.#link.close(messages.rollback(reason));
  }

  // `rollback` went on the link: the new generation drains what it accepted and exits.
  // No SIGTERM: it may get one from the operator or systemd (KillMode=control-group)
  // at the same time, and a second stop signal forces the exit, cutting its
  // connections. A child still there after the drain timeout (+10 s) is killed and
  // reaped; a handed-over process is not ours to signal once its link is closed.
  #goAway(): void {
    const exited = this.#exited;
    if (!exited || this.#reaped) return;
    const pid = this.#attempt.pid;
    void deadline(exited, this.#o.drainTimeout + GO_GRACE_MS).then((r) => {
      if (!r.done) return this.#o.reaper.kill(pid);
    }).catch(() => {});
  }
}

function describeEnd(end: ChildEnd): string {
  if (end === null) return "ended (reaped elsewhere)";
  if (end.exited) return `exited with code ${end.code}`;
  return `was killed by ${signalName(end.signal)}`;
}

/**
 * The new generation's side, from `ready()` until the old generation ends
 * the window. `begin` says ready; with no window announced it closes the
 * link as always and returns null.
 */
export class Probation {
  readonly #conn: MessageSocket;
  readonly #windowMs: number;
  readonly #onRollback: (reason: string) => void;
  readonly #warn: (message: string) => void;
  readonly #onPromoted: () => void;
  #state: "on" | "promoted" | "rolled-back" = "on";
  #waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  private constructor(
    conn: (h: ConstructorParameters<typeof MessageSocket>[1]) => MessageSocket,
    windowMs: number,
    onRollback: (reason: string) => void,
    warn: (message: string) => void,
    onPromoted: () => void,
  ) {
    this.#windowMs = windowMs;
    this.#onRollback = onRollback;
    this.#warn = warn;
    this.#onPromoted = onPromoted;
    this.#conn = conn({
      message: (m) => this.#message(m),
      end: (error) => {
        // A fault in what the old generation sent is not its end: only the link's close promotes.
        if (!error) return this.#promoted();
        warn(`the previous generation's link: ${error.message}`);
        this.#conn.socket.once("close", () => this.#promoted());
      },
    });
  }

  /**
   * Tells the previous generation this one is ready. `onRollback` is called
   * when it takes its sockets back (this generation must drain and exit);
   * `onPromoted` once the window has passed (the upgrade succeeded).
   */
  static begin(
    link: ParentLink,
    onRollback: (reason: string) => void,
    warn: (message: string) => void,
    onPromoted: () => void = () => {},
  ): Probation | null {
    const windowMs = link.hello.promotionWindow ?? 0;
    if (windowMs <= 0) {
      sayReady(link, warn);
      return null;
    }
    let fd: number;
    try {
      // This generation accepts already: never wait (see sayReady).
      link.channel.send(messages.ready(true), [], 0);
      fd = dupCloexec(link.channel.fd);
    } catch (err) {
      warn(`could not tell the previous generation: ${(err as Error).message}`);
      return null;
    } finally {
      link.channel.close();
    }
    const socket = socketOnFd(fd);
    return new Probation(
      (h) => new MessageSocket(socket, h),
      windowMs,
      onRollback,
      warn,
      onPromoted,
    );
  }

  /** Whether the previous generation may still take over. */
  get active(): boolean {
    return this.#state === "on";
  }

  /** Why an upgrade cannot start now, or null. */
  refusal(): UpgradeRefusedError | null {
    if (this.#state !== "on") return null;
    return new UpgradeRefusedError(
      "promotion-window",
      `this generation is in its promotion window (${this.#windowMs} ms from ready): the ` +
        "previous generation may still take over; upgrade once it has drained",
    );
  }

  /** See {@link unhealthy}. */
  unhealthy(reason: string): Promise<void> {
    if (this.#state === "rolled-back") return Promise.resolve();
    if (this.#state === "promoted") return Promise.reject(noWindow("the window has ended"));
    if (!this.#conn.send(messages.unhealthy(reason))) {
      return Promise.reject(noWindow("the link to the previous generation is gone"));
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /**
   * This generation is told to stop within the window: it hands the sockets
   * back (the previous generation serves on) instead of shutting them down.
   * True when it did (drain with reason `rolled-back`), false after the window.
   */
  leave(why: string): boolean {
    if (this.#state !== "on") return this.#state === "rolled-back";
    // Sent with end(), which flushes it: a write followed by destroy() could drop it, and the
    // old generation would then see a bare link end.
    this.#conn.close(messages.unhealthy(why));
    this.#end("rolled-back");
    return true;
  }

  #message(m: Message): void {
    if (m.type !== "rollback") {
      return this.#warn(
        `unexpected ${shown(m.type)} message from the previous generation; ignored`,
      );
    }
    let reason: string;
    try {
      reason = checkReason((m as { reason?: unknown }).reason);
    } catch {
      reason = "(a malformed reason)"; // it goes into a log line: never echoed unchecked
    }
    if (this.#state !== "on") return;
    this.#end("rolled-back");
    this.#onRollback(reason);
  }

  #promoted(): void {
    if (this.#state !== "on") return;
    this.#end("promoted");
    this.#onPromoted();
  }

  #end(state: "promoted" | "rolled-back"): void {
    this.#state = state;
    this.#conn.close();
    for (const w of this.#waiters.splice(0)) {
      if (state === "rolled-back") w.resolve();
      else w.reject(noWindow("the previous generation ended the window: this one is promoted"));
    }
  }
}

function noWindow(why: string): InstarError {
  return new InstarError(
    "NO_PROMOTION_WINDOW",
    `unhealthy(): no promotion window is open (${why}); nobody can take over from this ` +
      "generation: stop it, or deploy a fix",
  );
}

/**
 * `up.unhealthy(reason)`: within the promotion window, asks the previous
 * generation to take over again; resolves once it has (this generation then
 * drains and exits). Rejects with `INVALID_ARGUMENT` for a bad reason, and
 * with `NO_PROMOTION_WINDOW` when no window is open.
 */
export function unhealthy(probation: Probation | null, reason: string): Promise<void> {
  try {
    checkReason(reason);
  } catch (err) {
    return Promise.reject(err);
  }
  if (!probation) {
    return Promise.reject(
      noWindow("this generation was not started with one, or is the first generation"),
    );
  }
  return probation.unhealthy(reason);
}
