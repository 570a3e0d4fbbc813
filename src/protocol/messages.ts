/**
 * The protocol between generations: its messages and their constructors.
 *
 * A control channel is a Unix stream socket carrying newline-delimited JSON
 * messages, each tagged with the protocol version. Listening sockets travel
 * either by inheritance (fork/exec: the message names fd numbers) or as
 * SCM_RIGHTS attached to the message (handoff between independent processes).
 *
 * - `INSTAR_CONTROL_FD` names the child's end of a socketpair. The parent writes
 *   a `hello` before it starts the child, so the child reads it at once.
 * - The child answers `ready` (or `error` with a message) and closes its end.
 * - A process connecting to a control socket sends `handover` (a new
 *   generation), `upgrade` or `status` (the `instar` command).
 * - With a promotion window (`promotionWindow` in the hello) the link stays
 *   open after `ready`: the new generation may send `unhealthy` (with a
 *   reason), the old one ends the window by closing it (promoted) or by
 *   sending `rollback` first (the new generation drains and exits).
 *
 * Every message is made here ({@link messages}); `validate.ts` checks what
 * arrives, `channel.ts` and `message_socket.ts` carry it, `client.ts` is the
 * side that connects to a control socket.
 *
 * @module
 */

import * as host from "../host.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import { InstarError } from "../errors.ts";
import type { CarriedCounters } from "../observe/counters.ts";
import type { UpgradeReport } from "../observe/report.ts";
import { shown } from "./fault.ts";

/**
 * The longest control-socket request line; the control server refuses longer (`protocol-error`),
 * and a generation sends no upgrade report that long. Requests are under 100 bytes.
 */
export const MAX_REQUEST_BYTES = 4096;

/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 1;

/** The environment variable naming the child's end of the control channel. */
export const CONTROL_FD_ENV = "INSTAR_CONTROL_FD";

/**
 * The environment variable naming the counter region `instar run` passes to a
 * generation it starts itself (the first one, and after a crash): believed only
 * from the parent named by `INSTAR_SUPERVISOR_PID`; later generations get it in the hello.
 */
export const COUNTERS_FD_ENV = "INSTAR_COUNTERS_FD";

/** One listening socket handed to the next generation. */
export interface ListenerMeta {
  /** What the program asked for (`tcp:0.0.0.0:8080`, `unix:/run/app.sock`, `name:web`); port 0 stays 0. */
  key: string;
  /** The address the socket is bound to. */
  addr: Addr;
  /** The fd number in the receiving process (inherit), or the index among the attached fds (scm_rights). */
  fd: number;
  /** systemd activated it: on a stop it is left to systemd, never shut down. */
  activated?: boolean;
}

/** The control socket handed to the next generation, fd as in {@link ListenerMeta}. */
export interface ControlMeta {
  /** The path (or `@name`) it is bound to. */
  path: string;
  /** The fd number (inherit) or index (scm_rights). */
  fd: number;
}

/** The first message from the running generation to the next one. */
export interface Hello {
  /** Always `"hello"`. */
  type: "hello";
  /** Protocol version. */
  v: number;
  /** The generation number the receiver becomes. */
  generation: number;
  /** The sender's pid. */
  pid: number;
  /** How the fds travel. */
  transfer: "inherit" | "scm_rights";
  /** The listening sockets. */
  listeners: ListenerMeta[];
  /** The control socket, when the sender has one. */
  control: ControlMeta | null;
  /** The sender's promotion window in ms: the receiver keeps the link open after `ready`. Absent: none. */
  promotionWindow?: number;
  /** The counters that survive upgrades (metrics), as of this hello; absent from older senders. */
  counters?: CarriedCounters;
  /**
   * The shared counter region (src/observe/counter_region.ts), fd as in
   * {@link ListenerMeta}; absent from older senders and from a sender that could not make one.
   */
  counterRegion?: { fd: number };
}

/** Every message of the protocol. */
export type Message =
  | Hello
  // keepsLink: the sender keeps the link open for the promotion window, so the link's end
  // means it died or broke (roll back); an instar without windows closes it after ready.
  | { type: "ready"; v: number; pid: number; keepsLink?: boolean }
  | { type: "error"; v: number; pid: number; message: string }
  | { type: "handover"; v: number; pid: number }
  | { type: "upgrade"; v: number; trigger?: string }
  | { type: "status"; v: number }
  | { type: "progress"; v: number; event: string; pid?: number; detail?: string }
  | { type: "upgraded"; v: number; pid: number; report?: UpgradeReport }
  | { type: "report"; v: number; report: UpgradeReport; counters: CarriedCounters }
  | { type: "failed"; v: number; reason: string; message: string }
  | { type: "refused"; v: number; reason: string; message: string }
  | { type: "status-reply"; v: number; status: StatusReport }
  | { type: "unhealthy"; v: number; pid: number; reason: string }
  | { type: "rollback"; v: number; reason: string };

/** The message constructors: every message is made here, tagged with {@link PROTOCOL_VERSION}. */
export const messages = {
  /** The running generation's first message to the next one. */
  hello(
    generation: number,
    transfer: Hello["transfer"],
    listeners: ListenerMeta[],
    control: ControlMeta | null,
    promotionWindow = 0,
    counters?: CarriedCounters,
    counterRegion?: { fd: number },
  ): Hello {
    const v = PROTOCOL_VERSION;
    const hello: Hello = {
      type: "hello",
      v,
      generation,
      pid: host.pid(),
      transfer,
      listeners,
      control,
    };
    if (promotionWindow > 0) hello.promotionWindow = promotionWindow;
    if (counters) hello.counters = counters;
    if (counterRegion) hello.counterRegion = counterRegion;
    return hello;
  },
  /** The new generation is ready: the sender may drain. */
  ready: (keepsLink = false): Message => ({
    type: "ready",
    v: PROTOCOL_VERSION,
    pid: host.pid(),
    ...(keepsLink ? { keepsLink: true } : {}),
  }),
  /** The new generation refuses what it was handed. */
  error: (message: string): Message => ({
    type: "error",
    v: PROTOCOL_VERSION,
    pid: host.pid(),
    message,
  }),
  /** A new process asks a running generation for its sockets. */
  handover: (): Message => ({ type: "handover", v: PROTOCOL_VERSION, pid: host.pid() }),
  /** The `instar` command asks for an upgrade; `trigger` names who asks for the report (`cli` when absent). */
  upgrade: (trigger?: string): Message =>
    trigger === undefined
      ? { type: "upgrade", v: PROTOCOL_VERSION }
      : { type: "upgrade", v: PROTOCOL_VERSION, trigger },
  /** The `instar` command asks for the status. */
  status: (): Message => ({ type: "status", v: PROTOCOL_VERSION }),
  /** An upgrade's progress: `spawned` with the new pid. */
  progress: (event: string, pid?: number): Message => ({
    type: "progress",
    v: PROTOCOL_VERSION,
    event,
    pid,
  }),
  /** The upgrade succeeded: `pid` serves now. */
  upgraded: (pid: number, report?: UpgradeReport | null): Message =>
    report
      ? { type: "upgraded", v: PROTOCOL_VERSION, pid, report }
      : { type: "upgraded", v: PROTOCOL_VERSION, pid },
  /** The request failed, with the reason. */
  failed: (reason: string, message: string): Message => ({
    type: "failed",
    v: PROTOCOL_VERSION,
    reason,
    message,
  }),
  /** The request was refused (nothing was started), with the reason. */
  refused: (reason: string, message: string): Message => ({
    type: "refused",
    v: PROTOCOL_VERSION,
    reason,
    message,
  }),
  /** The new generation, in its promotion window, declares itself unhealthy (a checked {@link checkReason}). */
  unhealthy: (reason: string): Message => ({
    type: "unhealthy",
    v: PROTOCOL_VERSION,
    pid: host.pid(),
    reason: checkReason(reason),
  }),
  /** The old generation takes its sockets back: the new one drains and exits. */
  rollback: (reason: string): Message => ({
    type: "rollback",
    v: PROTOCOL_VERSION,
    reason: reason.slice(0, MAX_REASON_LENGTH),
  }),
  /** The answer to `status`. */
  statusReply: (status: StatusReport): Message => ({
    type: "status-reply",
    v: PROTOCOL_VERSION,
    status,
  }),
  /** The old generation's upgrade report and carried counters, sent to the new one once it has drained. */
  report: (report: UpgradeReport, counters: CarriedCounters): Message => ({
    type: "report",
    v: PROTOCOL_VERSION,
    report,
    counters,
  }),
} as const;

/**
 * What a generation reports about itself (`instar status`).
 *
 * @example
 * ```ts
 * import { type StatusReport, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const report: StatusReport = await up.status();
 * console.log(report.generation, report.state, report.listeners);
 * ```
 */
export interface StatusReport {
  /** Process id. */
  pid: number;
  /** Generation number, 1 for the first. */
  generation: number;
  /** Lifecycle state. */
  state: string;
  /** Listening addresses and their open connections (`null`: unknown, e.g. Unix sockets of an HTTP server). */
  listeners: { addr: string; connections: number | null }[];
  /** The pid of the generation that started this one, if any. */
  parentPid: number | null;
  /** That generation while it still drains: its listeners and their open connections. */
  previous: {
    pid: number;
    generation: number;
    listeners: { addr: string; connections: number | null }[];
  } | null;
  /** The last upgrade's report (see `UpgradeReport`); absent from older servers. */
  lastUpgrade?: UpgradeReport | null;
  /** The fd limit (RLIMIT_NOFILE) in force, raised at start; absent from older servers. */
  fdLimit?: FdLimit;
}

/**
 * A generation's fd limit (RLIMIT_NOFILE) after `Upgrader.create()` raised
 * the soft limit to the hard one (Deno and Bun already do at start).
 * `null` stands for unlimited (or unknown).
 *
 * @example
 * ```ts
 * import { type FdLimit, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const limit: FdLimit | undefined = (await up.status()).fdLimit;
 * console.log(limit?.soft, limit?.hard);
 * ```
 */
export interface FdLimit {
  /** The soft limit in force: how many fds the process may hold. */
  soft: number | null;
  /** The hard limit: the ceiling the soft one may be raised to. */
  hard: number | null;
}

/** The longest reason `unhealthy` carries, in UTF-16 units. */
export const MAX_REASON_LENGTH = 1024;

/**
 * `reason` if it can travel in an `unhealthy` message and a log line or
 * sd_notify STATUS: a non-empty string of at most {@link MAX_REASON_LENGTH}
 * characters without control characters (a newline would start another
 * sd_notify field). Throws `INVALID_ARGUMENT` otherwise.
 */
export function checkReason(reason: unknown): string {
  if (
    typeof reason !== "string" || reason.length === 0 || reason.length > MAX_REASON_LENGTH ||
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f]/.test(reason)
  ) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `reason ${shown(reason)} is not a non-empty string of at most ${MAX_REASON_LENGTH} ` +
        "characters without control characters",
    );
  }
  return reason;
}

/** Whether a registry key names a datagram socket (`udp:…`, `unixgram:…`): bound, never listening, no connections. */
export function isDatagramKey(key: string): boolean {
  return key.startsWith("udp:") || key.startsWith("unixgram:");
}
