/**
 * Starting the next generation and waiting for its `ready`, without polling:
 * the channel is read through the event loop and a child's exit arrives by
 * SIGCHLD. Two ways a next generation comes to exist: this one starts the
 * program anew with the sockets inherited (fork/exec), or an independently
 * started process asks for them on the control socket (handover).
 *
 * @module
 */

import type { Socket as NetSocket } from "node:net";
import { type InstarError, UpgradeError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import { C, signalName } from "../ffi/mod.ts";
import { spawn, type SpawnBackend } from "../process/spawn.ts";
import {
  CONTROL_FD_ENV,
  type ControlMeta,
  COUNTERS_FD_ENV,
  type ListenerMeta,
  type Message,
  messages,
} from "../protocol/messages.ts";
import { Channel } from "../protocol/channel.ts";
import { type MessageHandlers, MessageSocket } from "../protocol/message_socket.ts";
import { socketOnFd } from "../runtime/mod.ts";
import type { CarriedCounters } from "../observe/counters.ts";
import { deadline } from "../timeout.ts";
import type { ChildEnd, Reaper } from "./reaper.ts";
import { START } from "./start_info.ts";

/** A next generation being waited for. */
export interface Attempt {
  /** Its pid. */
  readonly pid: number;
  /** "generation 3 (pid 4242)", for messages. */
  readonly who: string;
  /** Resolves when it says ready; rejects with an {@link UpgradeError}. */
  readonly ready: Promise<void>;
  /**
   * It will not be waited for any more: it is killed (fork/exec) or told to go;
   * resolves once gone. `gently`: it may already serve (a stop raced its
   * `ready`), so it gets SIGTERM and a grace to drain before SIGKILL.
   */
  abandon(gently?: boolean): Promise<void>;
  /** It succeeded: let go of the channel (the child lives on). */
  release(): void;
  /** Whether bytes from it wait on the channel, not yet read by the event loop (poll(2), 0 ms). */
  pending(): boolean;
  /** Whether its `ready` said it keeps the link open for the promotion window. */
  keepsLink?(): boolean;
  /** Started by this process (fork/exec): its exit is reaped here. False (or absent) for a handover. */
  readonly child?: boolean;
  /**
   * It is ready and the link stays open (the promotion window): what arrives
   * on it from now on goes to `handlers`. `release()` or `abandon()` still end it.
   * Both kinds of next generation have it; absent, no window can be held.
   */
  keep?(handlers: MessageHandlers): MessageSocket;
}

/** The sockets (and the promotion window) a next generation is handed. */
export interface Passed {
  listeners: ListenerMeta[];
  control: ControlMeta | null;
  /** The promotion window in ms, announced in the hello (0: none). */
  promotionWindow?: number;
  /** The counters that survive upgrades (metrics). */
  counters?: CarriedCounters;
  /** The shared counter region's fd (observe/counter_region.ts), passed like a socket. */
  counterRegion?: number | null;
}

/** How to start the program anew. */
export interface ExecPlan {
  command?: string;
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  spawnBackend?: SpawnBackend;
}

// How long a generation abandoned by a stop gets to drain before SIGKILL.
const ABANDON_GRACE_MS = 5_000;

// Only these belong to systemd's socket activation, which the first generation consumed.
const ACTIVATION_ENV = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

function execArgs(plan: ExecPlan): { path: string; argv: string[]; env: string[] } {
  if ((!plan.args && !START.argv?.length) || (!plan.env && !START.env)) {
    throw new UpgradeError(
      "exec-failed",
      `cannot tell how this program was started (${
        START.problem ?? "empty /proc/self/cmdline"
      }); pass the command, args and env options`,
    );
  }
  const path = plan.command ?? START.execPath;
  const env = plan.env
    ? Object.entries(plan.env).map(([k, v]) => `${k}=${v}`)
    : START.env!.filter((e) =>
      ![CONTROL_FD_ENV, COUNTERS_FD_ENV, ...ACTIVATION_ENV].some((p) => e.startsWith(`${p}=`))
    );
  return { path, argv: plan.args ? [path, ...plan.args] : START.argv!, env };
}

/**
 * `no-fds` when `err` says this process (EMFILE) or the system (ENFILE) ran
 * out of fds: the upgrade needs a few (a socketpair, the spawn's pipe), and
 * the fix is fewer connections or a higher limit, not a new version.
 */
export function outOfFds(err: unknown): UpgradeError | null {
  const code = (err as InstarError | null)?.code;
  if (code !== "EMFILE" && code !== "ENFILE") return null;
  const why = code === "EMFILE" ? "this process reached its fd limit" : "the system ran out of fds";
  return new UpgradeError(
    "no-fds",
    `${why} (${code}): ${(err as Error).message}; this generation serves on`,
    { errno: code },
    { cause: err },
  );
}

/** Starts the program as it now is on disk with `listeners` and `control` inherited. */
export function spawnGeneration(
  plan: ExecPlan,
  generation: number,
  sockets: Passed,
  reaper: Reaper,
): Attempt {
  const { path, argv, env } = execArgs(plan);
  const [mine, theirs] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
  env.push(`${CONTROL_FD_ENV}=${theirs}`);
  const fds = [
    ...sockets.listeners.map((l) => l.fd),
    ...(sockets.control ? [sockets.control.fd] : []),
    ...(sockets.counterRegion != null ? [sockets.counterRegion] : []),
    theirs,
  ];
  let pid: number;
  try {
    // The hello waits in the socket buffer, so the child reads it at once.
    new Channel(mine).send(
      messages.hello(
        generation,
        "inherit",
        sockets.listeners,
        sockets.control,
        sockets.promotionWindow,
        sockets.counters,
        sockets.counterRegion != null ? { fd: sockets.counterRegion } : undefined,
      ),
    );
    pid = spawn({
      path,
      argv,
      env,
      cwd: plan.cwd ?? START.cwd,
      fds,
      backend: plan.spawnBackend ?? "auto",
    });
  } catch (err) {
    sys.close(mine);
    const noFds = outOfFds(err);
    if (noFds) throw noFds;
    throw new UpgradeError(
      "exec-failed",
      `could not start ${path}: ${(err as Error).message}`,
      { errno: (err as InstarError).code ?? "UNKNOWN" },
      { cause: err },
    );
  } finally {
    sys.close(theirs);
  }
  const who = `generation ${generation} (pid ${pid})`;
  const ended = async () => childEnded(who, pid, await reaper.exited(pid));
  const wait = readiness(socketOnFd(mine), who, pid, ended);
  return {
    pid,
    who,
    ready: wait.ready,
    abandon: async (gently) => {
      wait.close();
      if (gently) await reaper.terminate(pid, ABANDON_GRACE_MS);
      else await reaper.kill(pid);
    },
    release: () => {
      wait.close();
      reaper.forget(pid);
    },
    pending: () => !wait.closed() && readable(mine),
    child: true,
    keep: wait.keep,
    keepsLink: wait.keepsLink,
  };
}

/**
 * Hands the sockets to the independently started process on `peer` (a
 * control connection whose pid is `pid`, from SO_PEERCRED).
 */
export function handOver(
  peer: MessageSocket,
  fd: number,
  pid: number,
  generation: number,
  sockets: Passed,
): Attempt {
  // Attached fds travel in order; the hello names them by index.
  const all = [
    ...sockets.listeners.map((l) => l.fd),
    ...(sockets.control ? [sockets.control.fd] : []),
    ...(sockets.counterRegion != null ? [sockets.counterRegion] : []),
  ];
  const controlAt = sockets.listeners.length;
  const hello = messages.hello(
    generation,
    "scm_rights",
    sockets.listeners.map((l, i) => ({ ...l, fd: i })),
    sockets.control ? { ...sockets.control, fd: controlAt } : null,
    sockets.promotionWindow,
    sockets.counters,
    sockets.counterRegion != null ? { fd: all.length - 1 } : undefined,
  );
  const bytes = new TextEncoder().encode(JSON.stringify(hello) + "\n");
  // A fresh connection's send buffer is empty: the message goes at once or not at all.
  const sent = sys.sendFds(fd, bytes, all);
  if (sent !== bytes.byteLength) {
    throw new UpgradeError("protocol-error", `could not send the sockets to process ${pid}`, {
      pid,
    });
  }
  const who = `process ${pid}`;
  const ended = () =>
    Promise.resolve(
      new UpgradeError("exited", `${who} closed the control connection before it was ready`, {
        pid,
      }),
    );
  const wait = readiness(peer.socket, who, pid, ended, peer);
  return {
    pid,
    who,
    ready: wait.ready,
    abandon: () => Promise.resolve(wait.close()),
    release: () => wait.close(),
    pending: () => !wait.closed() && readable(fd),
    child: false,
    keep: wait.keep,
    keepsLink: wait.keepsLink,
  };
}

function childEnded(who: string, pid: number, end: ChildEnd): UpgradeError {
  if (end === null || end.exited) {
    const code = end?.exited ? end.code : undefined;
    return new UpgradeError(
      "exited",
      `${who} exited with code ${code ?? "?"} before it was ready`,
      {
        pid,
        exitCode: code,
      },
    );
  }
  const signal = signalName(end.signal);
  return new UpgradeError("killed", `${who} was killed by ${signal} before it was ready`, {
    pid,
    signal,
  });
}

/**
 * Waits on `socket` for `ready`. An `error` message, a protocol fault or an
 * end without `ready` rejects (`ended` says why it ended).
 */
function readiness(
  socket: NetSocket,
  who: string,
  pid: number,
  ended: () => Promise<UpgradeError>,
  existing?: MessageSocket,
): {
  ready: Promise<void>;
  close: () => void;
  closed: () => boolean;
  keep: (h: MessageHandlers) => MessageSocket;
  keepsLink: () => boolean;
} {
  let conn: MessageSocket | undefined = existing;
  let closed = false;
  let keepsLink = false;
  let linkEnded = false; // the link ended (before keep() could rebind it)
  const ready = new Promise<void>((resolve, reject) => {
    const handlers = {
      message(m: Message) {
        if (m.type === "ready") {
          keepsLink = m.keepsLink === true;
          return resolve();
        }
        const why = m.type === "error"
          ? `${who} refused the handover: ${m.message}`
          : `unexpected ${m.type} message from ${who}`;
        reject(new UpgradeError("protocol-error", why, { pid }));
      },
      end(error: InstarError | null) {
        linkEnded = true;
        if (error) {
          reject(new UpgradeError("protocol-error", error.message, { pid }, { cause: error }));
        } else ended().then(reject);
      },
    };
    if (conn) conn.rebind(handlers);
    else conn = new MessageSocket(socket, handlers);
  });
  ready.catch(() => {}); // a wait abandoned first must not leave an unhandled rejection
  return {
    ready,
    close: () => {
      closed = true;
      conn?.close();
    },
    closed: () => closed,
    keepsLink: () => keepsLink,
    keep: (h) => {
      conn!.rebind(h);
      // An end already reported to the readiness wait is reported again, after this call returns.
      if (linkEnded) queueMicrotask(() => h.end(null));
      return conn!;
    },
  };
}

/** Whether `fd` has bytes to read now (or its peer hung up): poll(2) with a 0 ms timeout. */
export function readable(fd: number): boolean {
  try {
    const p: sys.PollFd = { fd, events: C.POLLIN };
    return sys.poll([p], 0) === 1 && (p.revents! & C.POLLIN) !== 0;
  } catch {
    return false;
  }
}

/**
 * How long a ready that may be on its way gets once the ready timeout has
 * passed: {@link LAST_CHANCE_MS} when nothing waits on the channel (an
 * event the loop has read but not yet delivered), {@link PENDING_GRACE_MS}
 * when poll(2) shows bytes not yet read.
 */
export const LAST_CHANCE_MS = 100;
/** See {@link LAST_CHANCE_MS}. */
export const PENDING_GRACE_MS = 1000;

/**
 * Waits for `attempt` at most `timeoutMs`, or until `cancelled` resolves with an error.
 *
 * A child whose ready was sent just before the deadline must not be killed
 * for being late: when the time is up, the ready gets a last chance —
 * {@link PENDING_GRACE_MS} if bytes wait unread on the channel (poll(2), 0 ms),
 * else {@link LAST_CHANCE_MS} for one the event loop has already read but not
 * yet delivered. A ready within it counts; anything else is `ready-timeout`.
 */
export async function awaitReady(
  attempt: Attempt,
  timeoutMs: number,
  cancelled: Promise<UpgradeError>,
): Promise<void> {
  const outcome = await deadline(
    Promise.race([attempt.ready.then(() => null), cancelled]),
    timeoutMs,
  );
  if (!outcome.done) {
    const grace = attempt.pending() ? PENDING_GRACE_MS : LAST_CHANCE_MS;
    const late = await deadline(attempt.ready.then(() => true, () => false), grace);
    if (late.done && late.value) return;
    throw new UpgradeError("ready-timeout", `${attempt.who} was not ready within ${timeoutMs} ms`, {
      pid: attempt.pid,
    });
  }
  if (outcome.value) throw outcome.value;
}
