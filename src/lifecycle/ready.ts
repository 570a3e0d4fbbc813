/**
 * The `ready()` sequence of a generation, and what it starts: the control
 * server, the PID file, accepting on the sockets held until now, the new
 * generation's side of the promotion window (promotion.ts), systemd's READY.
 * Everything that can fail runs before this generation accepts a connection.
 *
 * @module
 */

import * as host from "../host.ts";
import { InstarError } from "../errors.ts";
import { systemdNotifier } from "../systemd/notify.ts";
import type { ExitReason } from "../types.ts";
import type { ControlActions } from "./control.ts";
import { writePidFile } from "./pid_file.ts";
import { Probation, unhealthy } from "./promotion.ts";
import type { Shared } from "./shared.ts";
import type { Sockets } from "./sockets.ts";
import { bridgeSystemd } from "./systemd_bridge.ts";

/** What `ready()` needs from the generation. */
export interface ReadyContext {
  /** The generation's shared state. */
  shared: Shared;
  /** Its sockets: the control socket inherited, the ones held until ready. */
  sockets: Sockets;
  /** What the control server may ask of it. */
  actions: () => ControlActions;
  /** Begins its exit (the previous generation took over again). */
  exit: (reason: ExitReason) => void;
  /** Its promotion window has passed: the upgrade that started it succeeded. */
  promoted: () => void;
}

/** A generation's readiness: `ready()` once, then its promotion window. */
export class Readiness {
  #c: ReadyContext;
  #called = false;
  #systemd: { ready(): void };

  /**
   * Tells systemd of `shared`'s events from now on. Called before the
   * observer subscribes (as before the split): systemd hears of an event
   * before the upgrade report that follows it is built.
   */
  static bridgeSystemd(shared: Shared): { ready(): void } {
    // Portable mode tells systemd nothing (no libc to send with, perhaps no environment to read).
    if (shared.portable) return bridgeSystemd(shared.events, systemdNotifier({ env: {} }));
    const enabled = shared.settings.systemd !== false;
    return bridgeSystemd(shared.events, systemdNotifier({ enabled }));
  }

  /** The readiness of the generation `c` describes; `systemd` from {@link Readiness.bridgeSystemd}. */
  constructor(c: ReadyContext, systemd: { ready(): void }) {
    this.#c = c;
    this.#systemd = systemd;
  }

  /** `up.ready()`: see there. */
  async ready(): Promise<void> {
    const { shared: s, sockets } = this.#c, path = s.settings.controlSocket;
    if (s.state !== "starting" || this.#called) {
      throw new InstarError("INVALID_STATE", `ready() called in state ${s.state}; call it once`);
    }
    this.#called = true;
    if (path) {
      const inherited = s.portable ? undefined : sockets.registry.takeControl(path);
      // Only a generation with a control socket loads its server (memory), decided at start-up.
      const { ControlServer } = await import("./control.ts");
      s.control = await ControlServer.open(path, inherited, s.portable);
    }
    this.#stillStarting();
    sockets.registry.closeUnclaimed(s.warn);
    await s.control?.start(this.#c.actions());
    this.#stillStarting();
    if (s.settings.pidFile) this.#writePidFile(s.settings.pidFile);
    sockets.resume();
    if (s.link) {
      s.probation = Probation.begin(
        s.link,
        (reason) => {
          s.warn(`the previous generation took over again: ${reason}`);
          this.#c.exit("rolled-back");
        },
        s.warn,
        this.#c.promoted,
      );
    }
    s.link = null;
    // A later generation is announced by the one it replaces (MAINPID + READY).
    if (s.generation === 1) this.#systemd.ready();
    s.setState("ready");
  }

  /** `up.unhealthy()`: see there. */
  unhealthy(reason: string): Promise<void> {
    return unhealthy(this.#c.shared.probation, reason);
  }

  // A stop() while ready() awaited: this generation must not start accepting or say ready.
  #stillStarting(): void {
    const state = this.#c.shared.state;
    if (state !== "starting") {
      throw new InstarError("INVALID_STATE", `ready() interrupted: the generation is ${state}`);
    }
  }

  // Before anything accepts: if it fails, the control server stops again and nothing was said.
  #writePidFile(path: string): void {
    try {
      writePidFile(path, host.pid());
    } catch (err) {
      this.#c.shared.control?.pauseAccepting();
      throw err;
    }
  }
}
