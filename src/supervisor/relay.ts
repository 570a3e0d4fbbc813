/**
 * What systemd hears when `instar run` is its service (`ExecStart=`): the
 * supervisor is and stays the main process, so no generation is ever an
 * "alien" main process, and `MAINPID=` is never passed on. READY when the
 * first generation is ready and when an upgrade ends (either way),
 * RELOADING when one starts, STATUS, EXTEND_TIMEOUT_USEC and STOPPING as the
 * current generation says them. A failed send is a warning.
 *
 * @module
 */

import type { Env } from "../systemd/env.ts";
import { type SystemdNotifier, systemdNotifier } from "../systemd/notify.ts";

/**
 * The supervisor's line to its own service manager.
 *
 * @example
 * ```ts
 * import { Relay } from "./relay.ts";
 *
 * const relay = new Relay({ NOTIFY_SOCKET: undefined }, console.warn);
 * relay.ready("generation 1 (pid 42) ready"); // nothing: not under systemd
 * ```
 */
export class Relay {
  readonly #notify: SystemdNotifier;
  readonly #warn: (m: string) => void;

  /** A relay to the `NOTIFY_SOCKET` of `env` (the supervisor's start environment). */
  constructor(env: Env, warn: (m: string) => void) {
    this.#warn = warn;
    let notify: SystemdNotifier;
    try {
      notify = systemdNotifier({ env });
    } catch (err) {
      warn(`not relaying to systemd: ${(err as Error).message}`);
      notify = systemdNotifier({ enabled: false });
    }
    this.#notify = notify;
  }

  /** Whether a service manager listens. */
  get enabled(): boolean {
    return this.#notify.enabled;
  }

  #send(f: (n: SystemdNotifier) => boolean): void {
    if (!this.#notify.enabled) return;
    try {
      f(this.#notify);
    } catch (err) {
      this.#warn(`sd_notify: ${(err as Error).message}`);
    }
  }

  /** READY=1 with a status line. */
  ready(status: string): void {
    this.#send((n) => n.ready(status));
  }

  /** RELOADING=1 (with this process's MONOTONIC_USEC). */
  reloading(status?: string): void {
    this.#send((n) => n.reloading(status));
  }

  /** STATUS=. */
  status(text: string): void {
    this.#send((n) => n.status(text));
  }

  /** EXTEND_TIMEOUT_USEC=. */
  extendTimeout(usec: bigint): void {
    this.#send((n) => n.extendTimeout(usec));
  }

  /** STOPPING=1. */
  stopping(status?: string): void {
    this.#send((n) => n.stopping(status));
  }
}
