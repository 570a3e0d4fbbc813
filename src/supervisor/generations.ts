/**
 * Starting the command as a generation of its own (a fresh start or a crash
 * restart): the environment the supervisor was started with, minus what
 * belongs to it, plus its own `NOTIFY_SOCKET`, `INSTAR_SUPERVISOR_PID` and the
 * held sockets. Never runs JavaScript in the child (src/process/spawn.ts) and
 * passes no fd but 0–2 and the held sockets.
 *
 * @module
 */

import process from "node:process";
import * as sys from "../ffi/mod.ts";
import { CounterRegion } from "../observe/counter_region.ts";
import { readNulList } from "../proc.ts";
import { spawn } from "../process/spawn.ts";
import { SUPERVISOR_PID_ENV } from "../systemd/activation.ts";
import { CONTROL_FD_ENV, COUNTERS_FD_ENV } from "../protocol/messages.ts";
import { activationFor, type HeldSocket } from "./sockets.ts";

// The supervisor's, not its children's: replaced or dropped.
const OWN = [
  "NOTIFY_SOCKET",
  "LISTEN_PID",
  "LISTEN_FDS",
  "LISTEN_FDNAMES",
  CONTROL_FD_ENV,
  COUNTERS_FD_ENV,
];

/**
 * The environment this process was started with (`/proc/self/environ`: Bun
 * loads `.env` into `process.env`, which must not leak into the command).
 *
 * @example
 * ```ts
 * import { startEnvironment } from "./generations.ts";
 *
 * console.log(startEnvironment().length);
 * ```
 */
export function startEnvironment(): string[] {
  try {
    return readNulList("/proc/self/environ");
  } catch {
    return Object.entries(process.env).map(([k, v]) => `${k}=${v}`);
  }
}

/**
 * The counter region the supervisor holds for its generations, so that one it
 * starts after a crash counts on from what the crashed one counted: its fd,
 * numbered above the held sockets' activation fds (3 … 2 + `held`) so that no
 * move in {@link launch} overwrites it; null (with a warning) when none can be made.
 */
export function counterRegionFd(held: number, warn: (m: string) => void): number | null {
  try {
    const fd = CounterRegion.create().fd!;
    const high = sys.dupCloexec(fd, 3 + held);
    sys.close(fd);
    return high;
  } catch (err) {
    warn(`no counter region (${(err as Error).message}): a restarted generation counts from 0`);
    return null;
  }
}

/**
 * How every generation the supervisor starts is started.
 *
 * @example
 * ```ts
 * import { type LaunchPlan, launch } from "./generations.ts";
 *
 * const plan: LaunchPlan = {
 *   command: "/bin/true", argv: ["true"], env: [], notifySocket: "/tmp/x/notify", held: [],
 * };
 * console.log(launch(plan));
 * ```
 */
export interface LaunchPlan {
  /** Absolute path of the executable. */
  command: string;
  /** argv, argv[0] included. */
  argv: readonly string[];
  /** The supervisor's start environment (`KEY=value`). */
  env: readonly string[];
  /** The supervisor's own notification socket. */
  notifySocket: string;
  /** The sockets to pass as fds 3, 4, … */
  held: readonly HeldSocket[];
  /**
   * The counter region every generation counts in (observe/counter_region.ts),
   * passed under its own number, above the held sockets' (null: none).
   */
  counters?: number | null;
}

/**
 * Starts one generation; returns its pid. Throws the `SystemError` of a
 * failed exec (the failed child is reaped by then).
 */
export function launch(plan: LaunchPlan): number {
  const self = process.pid;
  const { env: activation, moves } = activationFor(plan.held, self);
  const keep = plan.env.filter((e) =>
    ![...OWN, SUPERVISOR_PID_ENV].some((k) => e.startsWith(`${k}=`))
  );
  const env = [
    ...keep,
    `NOTIFY_SOCKET=${plan.notifySocket}`,
    ...(activation.length ? activation : [`${SUPERVISOR_PID_ENV}=${self}`]),
  ];
  const counters = plan.counters ?? null;
  if (counters !== null) env.push(`${COUNTERS_FD_ENV}=${counters}`);
  const fds = counters === null ? [] : [counters];
  return spawn({ path: plan.command, argv: plan.argv, env, fds, moves });
}
