/**
 * What the units of one generation share: its number and settings, its
 * state and events, the link to the generation that started it, and what
 * `ready()` starts (the control server, the new generation's side of the
 * promotion window). The Upgrader (upgrader.ts) holds one and hands it to
 * the units it orchestrates: sockets.ts, attempt.ts, exit.ts.
 *
 * @module
 */

import { platformMode, portableWarning } from "../runtime/platform.ts";
import type { State } from "../types.ts";
import { type ParentLink, readHello, requestHandover } from "./child.ts";
import type { ControlServer } from "./control.ts";
import { Emitter } from "./events.ts";
import { raiseFdLimit } from "./fd_limit.ts";
import type { FdLimit } from "../protocol/messages.ts";
import type { Settings } from "./options.ts";
import type { Probation } from "./promotion.ts";

/** The state of one generation, as its units see and change it. */
export class Shared {
  /** This generation's number: 1 for a fresh start, then 2, 3, … */
  readonly generation: number;
  /** The pid of the generation that started this one, or `null`. */
  readonly parentPid: number | null;
  /** The lifecycle's events. */
  readonly events: Emitter = new Emitter();
  /** Reports something worth a log line (a `warning` event). */
  readonly warn = (message: string): void => this.events.warn(message);
  /** The generation that started this one, until `ready()`; `null` for a first generation. */
  link: ParentLink | null;
  /** The control server, from `ready()` until the drain begins. */
  control: ControlServer | null = null;
  /** This generation's side of its promotion window, from `ready()` (promotion.ts). */
  probation: Probation | null = null;
  /**
   * Portable mode (src/runtime/platform.ts): sockets through the runtime's own
   * I/O, no previous or next generation, upgrades refused. Decided once per process.
   */
  readonly portable: boolean = platformMode().mode === "portable";
  /** The fd limit, raised to the hard one at start (fd_limit.ts); unknown in portable mode. */
  readonly fdLimit: FdLimit = this.portable ? { soft: null, hard: null } : raiseFdLimit(this.warn);
  #state: State = "starting";

  /** A generation with `settings`, started by `link` (or not). */
  constructor(readonly settings: Settings, link: ParentLink | null) {
    this.link = link;
    this.generation = link?.hello.generation ?? 1;
    this.parentPid = link?.hello.pid ?? null;
  }

  /**
   * The generation this process starts as: the hello of the generation that
   * started it, else a handover asked for on the control socket, else a first one.
   */
  static start(settings: Settings): Shared {
    if (platformMode().mode === "portable") return Shared.#portable(settings);
    let link = readHello();
    if (!link && settings.controlSocket) link = requestHandover(settings.controlSocket);
    return new Shared(settings, link);
  }

  // A first generation, always: nothing can be inherited. Says so once per process, on stderr
  // (no subscriber can listen yet): which mode runs, why, and what would enable upgrades.
  static #portable(settings: Settings): Shared {
    const shared = new Shared(settings, null);
    const warning = portableWarning();
    if (warning) shared.warn(warning);
    return shared;
  }

  /** Where this generation is in its life. */
  get state(): State {
    return this.#state;
  }

  /** Moves to `state` and says so (a `state` event). */
  setState(state: State): void {
    this.#state = state;
    this.events.emit("state", { state });
  }

  /**
   * Whether a socket adopted now waits for `ready()`: a new generation
   * accepts nothing on a shared socket before it is ready (the previous one
   * serves until then, and a new version that dies before ready() takes no
   * connection with it).
   */
  get holding(): boolean {
    return this.#state === "starting" && this.link !== null;
  }
}
