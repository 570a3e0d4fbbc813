/**
 * What systemd hears of the lifecycle (`Type=notify-reload`): RELOADING at
 * the start of an upgrade, EXTEND_TIMEOUT while the child starts, MAINPID +
 * READY from the old generation before it stops accepting (systemd must know
 * the new main pid before the old one exits; with a promotion window, once it
 * passed), READY + STATUS after a failure, MAINPID (its own) + READY + STATUS
 * after a rollback, STOPPING on stop. A failed notification is a warning, never a stop.
 *
 * @module
 */

import * as host from "../host.ts";
import type { SystemdNotifier } from "../systemd/notify.ts";
import type { Emitter } from "./events.ts";

const EXTEND_USEC = 15_000_000;
const EXTEND_EVERY_MS = 5_000;

/** Subscribes `notify` to the lifecycle's events; returns what sends READY for generation 1. */
export function bridgeSystemd(events: Emitter, notify: SystemdNotifier): { ready(): void } {
  const sd = (send: (n: SystemdNotifier) => boolean) => {
    if (!notify.enabled) return;
    try {
      send(notify);
    } catch (err) {
      events.warn(`sd_notify: ${(err as Error).message}`);
    }
  };
  let extend: ReturnType<typeof setInterval> | undefined;
  const stopExtending = () => {
    clearInterval(extend);
    extend = undefined;
  };
  if (notify.enabled) {
    events.on("upgrade-started", () => {
      sd((n) => n.reloading());
      extend = setInterval(() => sd((n) => n.extendTimeout(EXTEND_USEC)), EXTEND_EVERY_MS);
    });
    events.on("upgrade-succeeded", ({ pid }) => {
      stopExtending();
      sd((n) => n.readyWithMainPid(pid));
    });
    events.on("upgrade-failed", ({ error }) => {
      stopExtending();
      if (error.reason !== "cancelled") {
        sd((n) => n.upgradeFailed(`upgrade failed: ${error.reason}`));
      }
    });
    // The old generation stayed systemd's main process through the window; it is again the one that serves.
    events.on("rolled-back", ({ reason }) => {
      stopExtending();
      sd((n) => n.readyWithMainPid(host.pid(), `upgrade rolled back: ${reason}`));
    });
    events.on("draining", ({ reason }) => {
      stopExtending();
      if (reason === "stop") sd((n) => n.stopping());
    });
  }
  return { ready: () => sd((n) => n.ready()) };
}
