/**
 * The Upgrader's options, checked once and resolved to settings with their
 * defaults.
 *
 * @module
 */

import { invalid } from "../errors.ts";
import type { SpawnBackend } from "../process/spawn.ts";
import type { IdleConnections } from "../types.ts";
import { checkIdleConnections } from "../net/drain.ts";
import { checkSignal } from "./signals.ts";

/**
 * Options of {@link Upgrader.create}.
 *
 * @example
 * ```ts
 * import { Upgrader, type UpgraderOptions } from "@instar/instar";
 *
 * const options: UpgraderOptions = { drainTimeout: 10_000, pidFile: "/run/app/app.pid" };
 * const up = await Upgrader.create(options);
 * ```
 */
export interface UpgraderOptions {
  /** How long the new generation may take to call `ready()`, in ms (default 60 000). */
  readyTimeout?: number;
  /** How long in-flight connections may take to finish after a handover, in ms (default 30 000). */
  drainTimeout?: number;
  /** A file the ready generation writes its pid to, atomically. */
  pidFile?: string;
  /** The signal that triggers an upgrade (default `SIGHUP`); `null` for none. SIGUSR1 is refused. */
  upgradeSignal?: string | null;
  /** Signals that stop this generation gracefully (default `SIGTERM`, `SIGINT`). */
  stopSignals?: string[];
  /** How the next generation is started (default `auto`). */
  spawnBackend?: SpawnBackend;
  /** The executable of the next generation (default: this process's executable, captured at start-up). */
  command?: string;
  /** Its full argv after argv[0] (default: this process's, from /proc/self/cmdline). */
  args?: string[];
  /** Its environment (default: the one this process started with, from /proc/self/environ). */
  env?: Record<string, string>;
  /** Its working directory (default: this process's at start-up). */
  cwd?: string;
  /**
   * Exit the process once drained and the `onDrained` hooks have run
   * (default true). The code right after `await up.drained` runs before the
   * exit, up to its first `await`: put asynchronous clean-up (closing a
   * database) in `up.onDrained(async () => …)`, which is awaited.
   */
  exitAfterDrain?: boolean;
  /**
   * A Unix socket path (mode 0600) on which this generation hands its listeners
   * to an independently started process (SCM_RIGHTS) and answers the `instar`
   * command. A process started with the same path takes over from the running
   * one; with nobody there it listens fresh.
   */
  controlSocket?: string;
  /**
   * Talk to systemd: sd_notify over `NOTIFY_SOCKET` (READY, RELOADING,
   * MAINPID, STOPPING, …) and adopt socket-activated listeners (`LISTEN_FDS`).
   * Default: on when systemd set those variables; `false` turns both off.
   */
  systemd?: boolean;
  /**
   * The promotion window, in ms (default 0: none). After the next generation
   * is ready, this one stops accepting but keeps its sockets for this long;
   * if the new generation exits or calls `up.unhealthy(reason)` within it,
   * this one accepts again and serves on (`rolled-back`), else it drains.
   * `upgrade()` resolves at the end of the window. At most 24 h.
   */
  promotionWindow?: number;
  /**
   * What a draining generation's HTTP servers (`up.serve()`, `up.serveNode()`)
   * do with idle keep-alive connections: `"keep"` them open until the client
   * closes them (its next request is answered with `Connection: close`) or the
   * drain timeout, or `"close-when-quiet"` once the server answered nothing for a
   * second. Default `"close-when-quiet"`; see {@link IdleConnections}.
   */
  idleConnections?: IdleConnections;
  /**
   * A window, in ms, over which a draining generation spreads the closes and
   * notices that make long-lived clients reconnect, so that they do not all
   * knock on the next generation's listen queue at once (HAProxy's
   * `close-spread-time`): WebSockets still open near the drain timeout get
   * their 1012 a few at a time over its last `closeSpread` ms, and the
   * `draining` event's `spread()` hands an application's own notices out
   * over its first, as `up.serveNode()` does with the GOAWAYs of a
   * `node:http2` server's sessions. At most half the drain timeout; 0 closes and notifies all
   * at once. Default {@link DEFAULT_CLOSE_SPREAD_MS}; see docs/design.md,
   * "Spreading reconnections".
   */
  closeSpread?: number;
}

/**
 * The default `closeSpread`: 5,000 WebSockets told to reconnect at once
 * overflowed a 511 listen queue (dropped SYNs, retried after 1 s), and with a
 * 4096 one queued fresh requests behind their handshakes for a second on
 * Deno; spread over 5 s no SYN was dropped and fresh requests mostly stayed
 * well under a second (docs/benchmarks.md, "WebSocket herds").
 */
export const DEFAULT_CLOSE_SPREAD_MS = 5000;

/** The options with their defaults, checked. */
export interface Settings extends
  Omit<
    UpgraderOptions,
    | "readyTimeout"
    | "drainTimeout"
    | "upgradeSignal"
    | "stopSignals"
    | "exitAfterDrain"
    | "promotionWindow"
    | "idleConnections"
    | "closeSpread"
  > {
  readyTimeout: number;
  drainTimeout: number;
  upgradeSignal: string | null;
  stopSignals: string[];
  exitAfterDrain: boolean;
  promotionWindow: number;
  idleConnections: IdleConnections;
  /** `closeSpread`, at most half the drain timeout. */
  closeSpread: number;
}

/** The longest promotion window: 24 h. */
export const MAX_PROMOTION_WINDOW_MS = 86_400_000;

// 0 or a whole number of ms up to a day (a timer must hold it); `fallback` when not given.
function wholeMs(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0 || value > MAX_PROMOTION_WINDOW_MS) {
    invalid(option, value, `a whole number of milliseconds from 0 to ${MAX_PROMOTION_WINDOW_MS}`);
  }
  return value;
}

function ms(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    invalid(option, value, "a positive number of milliseconds");
  }
  return value;
}

/** Checks `options` and fills in the defaults; throws `INVALID_ARGUMENT` naming the first bad one. */
export function resolveOptions(options: UpgraderOptions): Settings {
  const upgradeSignal = options.upgradeSignal === undefined ? "SIGHUP" : options.upgradeSignal;
  const drainTimeout = ms("drainTimeout", options.drainTimeout, 30_000);
  const stopSignals = options.stopSignals ?? ["SIGTERM", "SIGINT"];
  if (upgradeSignal !== null) checkSignal("upgradeSignal", upgradeSignal);
  for (const s of stopSignals) checkSignal("stopSignals", s);
  if (options.command !== undefined && !options.command.startsWith("/")) {
    invalid("command", options.command, "an absolute path");
  }
  return {
    ...options,
    readyTimeout: ms("readyTimeout", options.readyTimeout, 60_000),
    drainTimeout,
    upgradeSignal,
    stopSignals,
    exitAfterDrain: options.exitAfterDrain ?? true,
    promotionWindow: wholeMs("promotionWindow", options.promotionWindow, 0),
    idleConnections: checkIdleConnections("idleConnections", options.idleConnections),
    closeSpread: Math.min(
      wholeMs("closeSpread", options.closeSpread, DEFAULT_CLOSE_SPREAD_MS),
      drainTimeout / 2,
    ),
  };
}
