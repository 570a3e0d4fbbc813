/**
 * The protocol between generations, in one place.
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
 * @module
 */

import * as sys from "./ffi/mod.ts";
import { C } from "./ffi/mod.ts";
import { type Addr, decode, encodeUnix, formatAddr } from "./ffi/sockaddr.ts";
import process from "node:process";
import type { Socket as NetSocket } from "node:net";
import { InstarError } from "./errors.ts";
import { type CarriedCounters, validateCounters } from "./observe/counters.ts";
import { TRIGGER, type UpgradeReport } from "./observe/report.ts";

/** The protocol version this build speaks. */
export const PROTOCOL_VERSION = 1;

/** The environment variable naming the child's end of the control channel. */
export const CONTROL_FD_ENV = "INSTAR_CONTROL_FD";

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
  ): Hello {
    const v = PROTOCOL_VERSION;
    const hello: Hello = {
      type: "hello",
      v,
      generation,
      pid: process.pid,
      transfer,
      listeners,
      control,
    };
    if (promotionWindow > 0) hello.promotionWindow = promotionWindow;
    if (counters) hello.counters = counters;
    return hello;
  },
  /** The new generation is ready: the sender may drain. */
  ready: (keepsLink = false): Message => ({
    type: "ready",
    v: PROTOCOL_VERSION,
    pid: process.pid,
    ...(keepsLink ? { keepsLink: true } : {}),
  }),
  /** The new generation refuses what it was handed. */
  error: (message: string): Message => ({
    type: "error",
    v: PROTOCOL_VERSION,
    pid: process.pid,
    message,
  }),
  /** A new process asks a running generation for its sockets. */
  handover: (): Message => ({ type: "handover", v: PROTOCOL_VERSION, pid: process.pid }),
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
    pid: process.pid,
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
}

/** Throws `PROTOCOL_ERROR` with a message naming what was wrong. */
export function protocolError(message: string): never {
  throw new InstarError("PROTOCOL_ERROR", `instar control protocol: ${message}`);
}

function isAddr(a: unknown): a is Addr {
  if (typeof a !== "object" || a === null) return false;
  const o = a as Record<string, unknown>;
  if (o.transport === "tcp") {
    return typeof o.hostname === "string" && Number.isInteger(o.port) && (o.port as number) >= 0 &&
      (o.port as number) <= 65535;
  }
  return o.transport === "unix" && typeof o.path === "string";
}

/** The largest value of a C `int`: fd numbers and pids above it are refused, not wrapped by FFI. */
const INT_MAX = 2 ** 31 - 1;

// An fd number a C `int` can hold (Bun's FFI wraps 2**32 + 5 to fd 5; -0 is not a number anyone sent).
function isFd(fd: unknown): fd is number {
  return Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= INT_MAX &&
    !Object.is(fd, -0);
}

/** `value` as JSON for an error message, cut to 100 characters: hostile input is never echoed whole. */
export function shown(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}

/** Validates a parsed `hello`; throws `PROTOCOL_ERROR` naming the first fault. */
export function validateHello(m: unknown): Hello {
  if (typeof m !== "object" || m === null || Array.isArray(m)) {
    protocolError("hello is not an object");
  }
  const o = m as Record<string, unknown>;
  if (o.type !== "hello") protocolError(`expected a hello message, got ${shown(o.type)}`);
  if (o.v !== PROTOCOL_VERSION) {
    protocolError(
      `the previous generation speaks version ${shown(o.v)}, this one speaks ` +
        `${PROTOCOL_VERSION}: upgrade through a version that speaks both`,
    );
  }
  if (!Number.isSafeInteger(o.generation) || (o.generation as number) < 2) {
    protocolError(`generation ${shown(o.generation)} is not an integer ≥ 2`);
  }
  if (!Number.isInteger(o.pid) || (o.pid as number) < 1 || (o.pid as number) > INT_MAX) {
    protocolError(`pid ${shown(o.pid)} is not a process id`);
  }
  if (o.transfer !== "inherit" && o.transfer !== "scm_rights") {
    protocolError(`unknown transfer ${shown(o.transfer)}`);
  }
  if (!Array.isArray(o.listeners)) protocolError("listeners is not an array");
  const seen = new Set<string>();
  const fds = new Set<number>();
  // One fd (or attached index) serves one purpose: two entries sharing it would be closed twice.
  const once = (fd: number, what: string) => {
    if (fds.has(fd)) protocolError(`fd ${fd} is named twice (again for ${what})`);
    fds.add(fd);
  };
  for (const l of o.listeners as unknown[]) {
    const e = l as Record<string, unknown>;
    if (
      typeof e !== "object" || e === null || Array.isArray(e) || typeof e.key !== "string" ||
      !isAddr(e.addr)
    ) {
      protocolError(`malformed listener entry ${shown(l)}`);
    }
    if (!isFd(e.fd)) {
      protocolError(`listener ${shown(e.key)} has no valid fd (${shown(e.fd)})`);
    }
    if (seen.has(e.key)) protocolError(`listener ${shown(e.key)} is listed twice`);
    seen.add(e.key);
    once(e.fd, `listener ${shown(e.key)}`);
  }
  o.control ??= null;
  const c = o.control as Record<string, unknown> | null;
  if (
    c !== null &&
    (typeof c !== "object" || Array.isArray(c) || typeof c.path !== "string" || !isFd(c.fd))
  ) {
    protocolError(`malformed control entry ${shown(c)}`);
  }
  if (c !== null) once(c.fd as number, "the control socket");
  if (
    o.promotionWindow !== undefined &&
    (!Number.isSafeInteger(o.promotionWindow) || (o.promotionWindow as number) < 0 ||
      (o.promotionWindow as number) > MAX_WINDOW_MS)
  ) {
    protocolError(`promotionWindow ${shown(o.promotionWindow)} is not a number of ms up to a day`);
  }
  if (o.counters !== undefined) o.counters = validateCounters(o.counters);
  return o as unknown as Hello;
}

// The longest promotion window a hello may announce (the option's own limit).
const MAX_WINDOW_MS = 86_400_000;

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

/** Validates an `unhealthy` message from a new generation; throws `PROTOCOL_ERROR` naming the fault. */
export function validateUnhealthy(m: Message): string {
  const reason = (m as { reason?: unknown }).reason;
  try {
    return checkReason(reason);
  } catch (err) {
    protocolError(`unhealthy: ${(err as Error).message}`);
  }
}

function sameAddr(a: Addr, b: Addr): boolean {
  if (a.transport === "unix" || b.transport === "unix") {
    return a.transport === b.transport &&
      (a as { path: string }).path === (b as { path: string }).path;
  }
  return a.hostname === b.hostname && a.port === b.port;
}

/**
 * Checks that `fd` is what the metadata says: an open, listening stream
 * socket (a datagram socket for a `udp:`/`unixgram:` key) bound to `addr`. Throws `PROTOCOL_ERROR` naming the fd otherwise.
 */
export function checkListeningFd(fd: number, addr: Addr, key: string): void {
  let type: number, accepting: number, bound: Addr;
  try {
    type = sys.getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE);
    accepting = sys.getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN);
    bound = decode(sys.getsockname(fd));
  } catch (err) {
    throw new InstarError(
      "PROTOCOL_ERROR",
      `instar control protocol: fd ${fd} for listener ${key} is not a usable socket (${
        (err as Error).message
      })`,
      { cause: err },
    );
  }
  // A datagram socket is bound, never listening.
  if (isDatagramKey(key)) {
    if (type !== C.SOCK_DGRAM) protocolError(`fd ${fd} for ${key} is not a datagram socket`);
  } else {
    if (type !== C.SOCK_STREAM) {
      protocolError(`fd ${fd} for listener ${key} is not a stream socket`);
    }
    if (accepting !== 1) protocolError(`fd ${fd} for listener ${key} is not listening`);
  }
  if (!sameAddr(bound, addr)) {
    protocolError(
      `fd ${fd} for listener ${key} is bound to ${formatAddr(bound)}, not ${formatAddr(addr)}`,
    );
  }
}

/**
 * One end of a control channel: a non-blocking Unix stream socket carrying
 * newline-delimited JSON, read and written through FFI so that both runtimes
 * behave the same. Reads never block; the caller polls.
 */
export class Channel {
  /** The socket fd; -1 once closed. */
  fd: number;
  #buf = "";
  #fds: number[] = [];
  #eof = false;
  #decoder = new TextDecoder();

  /** Wraps `fd` and makes it non-blocking. */
  constructor(fd: number) {
    this.fd = fd;
    sys.setNonBlocking(fd, true);
  }

  /** True once the peer closed its end and every message was read. */
  get eof(): boolean {
    return this.#eof && !this.#buf.includes("\n");
  }

  /**
   * Sends one message, with `fds` attached as SCM_RIGHTS. Waits up to
   * `timeoutMs` for room in the socket buffer (messages are small), blocking
   * the thread: only where nothing is served yet (start-up, the CLI). With
   * `timeoutMs` 0 it never waits: no room is a `PROTOCOL_ERROR` at once.
   */
  send(msg: Message, fds: readonly number[] = [], timeoutMs = 5000): void {
    const bytes = new TextEncoder().encode(JSON.stringify(msg) + "\n");
    let off = 0;
    let first = true;
    const deadline = Date.now() + timeoutMs;
    while (off < bytes.byteLength) {
      const chunk = bytes.subarray(off);
      const n = first && fds.length ? sys.sendFds(this.fd, chunk, fds) : sys.write(this.fd, chunk);
      if (n === null || n === 0) {
        if (timeoutMs <= 0 || Date.now() > deadline) {
          protocolError("the peer does not read the control channel");
        }
        sys.poll([{ fd: this.fd, events: C.POLLOUT }], 50);
        continue;
      }
      off += n;
      first = false;
    }
  }

  /** Reads what has arrived; returns complete messages with the fds that came with them. */
  receive(): { msg: unknown; fds: number[] }[] {
    if (this.fd < 0) return [];
    for (;;) {
      let got: sys.Received | null;
      try {
        got = sys.recvFds(this.fd, 65536, 16);
      } catch (err) {
        // A peer that exits with unread data resets the connection: that is an end, not a fault.
        if ((err as { code?: string }).code !== "ECONNRESET") throw err;
        this.#eof = true;
        break;
      }
      if (got === null) break;
      this.#fds.push(...got.fds);
      if (got.data.byteLength === 0) {
        this.#eof = true;
        break;
      }
      this.#buf += this.#decoder.decode(got.data, { stream: true });
      if (this.#buf.length > 1 << 20) protocolError("message longer than 1 MiB");
    }
    const out: { msg: unknown; fds: number[] }[] = [];
    let nl: number;
    while ((nl = this.#buf.indexOf("\n")) >= 0) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch {
        // Nobody gets the fds that came with this or an earlier line of this read.
        for (const o of out) for (const fd of o.fds) sys.close(fd);
        this.#closeFds();
        protocolError(`malformed message ${shown(line)}`);
      }
      out.push({ msg, fds: this.#fds });
      this.#fds = [];
    }
    return out;
  }

  /**
   * Waits (blocking the thread, up to `timeoutMs`) for the next complete
   * message. Used only at start-up, before the program serves anything.
   */
  receiveSync(timeoutMs: number): { msg: unknown; fds: number[] } {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.receive();
      if (got.length) return got[0];
      if (this.#eof) protocolError("the control channel closed before a message arrived");
      const left = deadline - Date.now();
      if (left <= 0) protocolError(`no message within ${timeoutMs} ms`);
      sys.poll([{ fd: this.fd, events: C.POLLIN }], Math.min(left, 1000));
    }
  }

  #closeFds(): void {
    for (const fd of this.#fds) sys.close(fd);
    this.#fds = [];
  }

  /** Closes the socket and any received fds nobody took. */
  close(): void {
    this.#closeFds();
    if (this.fd >= 0) sys.close(this.fd);
    this.fd = -1;
  }
}

/**
 * Connects to the control socket at `path`. Nobody there throws the
 * SystemError of connect(2): ENOENT (no file) or ECONNREFUSED (a stale one).
 */
export function connectControl(path: string): Channel {
  const fd = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
  try {
    sys.connect(fd, encodeUnix(path), `control socket ${path}`);
  } catch (err) {
    sys.close(fd);
    throw err;
  }
  return new Channel(fd);
}

/** Whether connecting failed because nobody listens at the path. */
export function nobodyThere(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOENT" || code === "ECONNREFUSED";
}

/** The trigger a control `upgrade` request names (`cli` when none); throws `PROTOCOL_ERROR` if malformed. */
export function triggerOf(m: { trigger?: unknown }): string {
  if (m.trigger === undefined) return "cli";
  if (typeof m.trigger !== "string" || !TRIGGER.test(m.trigger)) {
    protocolError(`trigger ${shown(m.trigger)} is not a lower-case word of at most 32 characters`);
  }
  return m.trigger;
}

/** Validates the common shape of a message received from a peer. */
export function messageOf(raw: unknown): Message {
  if (typeof raw !== "object" || raw === null) protocolError("message is not an object");
  const o = raw as Record<string, unknown>;
  if (typeof o.type !== "string") protocolError("message has no type");
  if (o.v !== PROTOCOL_VERSION) {
    protocolError(`peer speaks version ${shown(o.v)}, this one ${PROTOCOL_VERSION}`);
  }
  return o as unknown as Message;
}

/** Longest message a peer may send by default; longer is a protocol error. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/** How long a connection closed with a last message may take to flush it before it is cut. */
export const CLOSE_GRACE_MS = 1000;

/** What a {@link MessageSocket} reports. */
export interface MessageHandlers {
  /** One complete, version-checked message. */
  message(m: Message): void;
  /** The peer closed, or broke the protocol (`error`); no more messages come. */
  end(error: InstarError | null): void;
}

/**
 * Closes `socket`, after writing `msg` if given: the message and the end of
 * the stream are sent at once, and the socket is destroyed (its fd closed)
 * when the peer closes its side, at the latest after {@link CLOSE_GRACE_MS}.
 * The grace lets a peer that writes before it reads (its request crossing
 * the refusal) still read why; a peer that neither reads nor closes cannot
 * hold the fd longer.
 */
export function closeWith(socket: NetSocket, msg?: Message): void {
  if (socket.destroyed) return;
  if (!msg) {
    socket.destroy();
    return;
  }
  if (socket.writableEnded) return; // closing already, with its own last message
  const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  socket.once("close", () => clearTimeout(timer));
  socket.resume(); // what the peer still sends is discarded, so its end is seen
  socket.end(JSON.stringify(msg) + "\n");
}

/**
 * A control connection read through the event loop: newline-delimited JSON
 * from a `node:net` socket, checked with {@link messageOf}. Writes are queued
 * by the runtime and never block. Fds a peer attaches are dropped by the
 * kernel, since the runtime reads with read(2).
 */
export class MessageSocket {
  /** The runtime socket. */
  readonly socket: NetSocket;
  #buf = "";
  #ended = false;
  #handlers: MessageHandlers;
  #maxBytes: number;

  /** Starts reading `socket`, reporting to `handlers`; a line longer than `maxBytes` is a protocol error. */
  constructor(socket: NetSocket, handlers: MessageHandlers, maxBytes = MAX_MESSAGE_BYTES) {
    this.socket = socket;
    this.#handlers = handlers;
    this.#maxBytes = maxBytes;
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => this.#data(d));
    socket.on("end", () => this.#end(null));
    socket.on("close", () => this.#end(null));
    socket.on("error", () => this.#end(null));
  }

  #data(d: string): void {
    if (this.#ended) return;
    this.#buf += d;
    let nl: number;
    try {
      // Lengths in UTF-16 units: at most the bytes received, so the check is never laxer.
      while (!this.#ended && (nl = this.#buf.indexOf("\n")) >= 0) {
        if (nl > this.#maxBytes) this.#tooLong();
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        this.#handlers.message(messageOf(parseLine(line)));
      }
      if (this.#buf.length > this.#maxBytes) this.#tooLong();
    } catch (err) {
      this.#buf = "";
      this.#end(err as InstarError);
    }
  }

  #tooLong(): never {
    protocolError(`message longer than ${this.#maxBytes} bytes`);
  }

  /** Sends what arrives from now on to `handlers` (a control connection turned handover). */
  rebind(handlers: MessageHandlers): void {
    this.#handlers = handlers;
  }

  #end(error: InstarError | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#handlers.end(error);
  }

  /** Queues `msg`; false when the connection is gone. */
  send(msg: Message): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false;
    this.socket.write(JSON.stringify(msg) + "\n");
    return true;
  }

  /** Sends `msg` (if given) and closes: see {@link closeWith}. Nothing more is reported. */
  close(msg?: Message): void {
    this.#ended = true;
    this.#buf = "";
    closeWith(this.socket, msg);
  }
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    protocolError(`malformed message ${shown(line)}`);
  }
}

/** Whether a registry key names a datagram socket (`udp:…`, `unixgram:…`): bound, never listening, no connections. */
export function isDatagramKey(key: string): boolean {
  return key.startsWith("udp:") || key.startsWith("unixgram:");
}
