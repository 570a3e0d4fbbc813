/**
 * systemd integration without libsystemd: the `sd_notify` protocol (a datagram
 * of `KEY=VALUE` lines sent to `$NOTIFY_SOCKET`) and socket activation
 * (`$LISTEN_PID`, `$LISTEN_FDS`, `$LISTEN_FDNAMES`, fds from 3 on).
 *
 * How instar maps a graceful upgrade onto `Type=notify-reload` is described in
 * `docs/systemd.md`.
 *
 * @module
 */

import process from "node:process";
import { resolve } from "node:path";
import { InstarError, invalid, SystemError } from "../errors.ts";
import {
  C,
  close,
  connect,
  EAGAIN,
  fcntl,
  getpid,
  getppid,
  getsockname,
  getsockoptInt,
  monotonicUsec,
  poll,
  setCloexec,
  socket,
  write,
} from "../ffi/mod.ts";
import { type Addr, decode, encodeUnix, parseIPv4, parseIPv6 } from "../ffi/sockaddr.ts";

/**
 * An environment to read variables from (and delete consumed ones from); `process.env` by default.
 *
 * @example
 * ```ts
 * import { type Env, systemdNotifier } from "@instar/instar/unstable";
 *
 * const env: Env = { NOTIFY_SOCKET: "/run/systemd/notify" };
 * const notify = systemdNotifier({ env });
 * ```
 */
export type Env = Record<string, string | undefined>;

// ------------------------------------------------------------------ sd_notify

/**
 * Options of {@link systemdNotifier}.
 *
 * @example
 * ```ts
 * import { type NotifierOptions, systemdNotifier } from "@instar/instar/unstable";
 *
 * const options: NotifierOptions = { enabled: true, sendTimeoutMs: 500 };
 * systemdNotifier(options).status("warming up");
 * ```
 */
export interface NotifierOptions {
  /** Where `NOTIFY_SOCKET` is read from. Default: `process.env`. */
  env?: Env;
  /** `false` returns a disabled notifier even when `NOTIFY_SOCKET` is set. Default: `true`. */
  enabled?: boolean;
  /**
   * How long a send may wait, blocking the thread, when the service manager's
   * receive queue is full; after that it fails with `EAGAIN`. Default: 2000 ms.
   */
  sendTimeoutMs?: number;
}

/**
 * One notification field: `KEY=VALUE`. Values are strings, or numbers written in decimal.
 *
 * @example
 * ```ts
 * import { type NotifyFields, systemdNotifier } from "@instar/instar/unstable";
 *
 * const fields: NotifyFields = { STATUS: "serving", READY: 1 };
 * systemdNotifier().send(fields);
 * ```
 */
export type NotifyFields = Record<string, string | number | bigint>;

/**
 * The longest notification systemd reads (its NOTIFY_BUFFER_MAX, PIPE_BUF).
 *
 * @example
 * ```ts
 * import { NOTIFY_MAX_BYTES } from "@instar/instar/unstable";
 *
 * const status = "x".repeat(100);
 * console.log(status.length < NOTIFY_MAX_BYTES);
 * ```
 */
export const NOTIFY_MAX_BYTES = 4096;
const KEY = /^[A-Z][A-Z0-9_]*$/;

/**
 * Encodes notification fields as the datagram `sd_notify` sends: one
 * `KEY=VALUE` line per field, each ending in a newline. Throws
 * `INVALID_ARGUMENT` for an empty set, a key that is not upper-case
 * `[A-Z0-9_]`, a value holding a newline or NUL (either would let one
 * value forge another field), or more than {@link NOTIFY_MAX_BYTES} in all.
 *
 * @example
 * ```ts
 * import { encodeNotify } from "@instar/instar/unstable";
 *
 * new TextDecoder().decode(encodeNotify({ MAINPID: 42, READY: 1 })); // "MAINPID=42\nREADY=1\n"
 * ```
 */
export function encodeNotify(fields: NotifyFields): Uint8Array {
  const entries = Object.entries(fields);
  if (entries.length === 0) invalid("notification", "{}", "at least one KEY=VALUE field");
  let text = "";
  for (const [key, raw] of entries) {
    if (!KEY.test(key)) invalid("notification key", key, "upper-case letters, digits and _");
    if (typeof raw === "number" && !Number.isSafeInteger(raw)) {
      invalid(`notification ${key}`, raw, "an integer");
    }
    const value = String(raw);
    if (/[\n\0]/.test(value)) {
      invalid(`notification ${key}`, value, "a value without newline or NUL characters");
    }
    text += `${key}=${value}\n`;
  }
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength > NOTIFY_MAX_BYTES) {
    invalid(
      "notification",
      `${bytes.byteLength} bytes`,
      `at most ${NOTIFY_MAX_BYTES} bytes (systemd ignores longer ones): shorten STATUS`,
    );
  }
  return bytes;
}

/**
 * Sends `sd_notify` messages to the service manager over `$NOTIFY_SOCKET`, or
 * does nothing when disabled (no `NOTIFY_SOCKET`, or turned off). Create one
 * with {@link systemdNotifier}.
 *
 * Every method returns `true` when a datagram was sent and `false` when the
 * notifier is disabled. A failed send throws a `SystemError` (`ENOENT` or
 * `ECONNREFUSED` when nobody listens on the socket, `EAGAIN` when the service
 * manager's queue stayed full for `sendTimeoutMs`): systemd's own `sd_notify`
 * returns such errors and most callers ignore them, so the caller decides
 * whether to log or fail — instar's lifecycle logs them and carries on, since
 * a service that cannot tell systemd it is ready is stopped by systemd's start
 * timeout anyway.
 *
 * Each send opens a fresh close-on-exec socket and closes it, as `sd_notify`
 * does: nothing stays open to leak into children, and a restarted service
 * manager is found again.
 *
 * @example
 * ```ts
 * import { systemdNotifier } from "@instar/instar/unstable";
 *
 * const notify = systemdNotifier();
 * // … start serving …
 * notify.ready("serving on :8080");
 * ```
 */
export class SystemdNotifier {
  /** The `NOTIFY_SOCKET` address (`/path` or `@abstract`), or `undefined` when disabled. */
  readonly socketPath: string | undefined;
  readonly #timeoutMs: number;

  /**
   * A notifier for `socketPath`; {@link systemdNotifier} makes one from the environment.
   *
   * @param socketPath a filesystem path or `@abstract` name; `undefined` makes a disabled notifier
   * @param sendTimeoutMs how long a send may wait for room in the receive queue
   */
  constructor(socketPath: string | undefined, sendTimeoutMs = 2000) {
    if (socketPath !== undefined) {
      if (!socketPath.startsWith("/") && !socketPath.startsWith("@")) {
        invalid(
          "NOTIFY_SOCKET",
          socketPath,
          "an absolute path or an @abstract name (other address kinds, such as vsock:, " +
            "are not supported: unset NOTIFY_SOCKET or pass { enabled: false })",
        );
      }
      encodeUnix(socketPath); // throws now, not at the first send, if it cannot be a sockaddr_un
    }
    if (!Number.isFinite(sendTimeoutMs) || sendTimeoutMs < 0) {
      invalid("sendTimeoutMs", sendTimeoutMs, "a non-negative number of milliseconds");
    }
    this.socketPath = socketPath;
    this.#timeoutMs = sendTimeoutMs;
  }

  /** Whether messages are sent at all. */
  get enabled(): boolean {
    return this.socketPath !== undefined;
  }

  /**
   * Sends one datagram with these fields, in order. Returns `false` (and
   * checks nothing) when disabled.
   */
  send(fields: NotifyFields): boolean {
    if (this.socketPath === undefined) return false;
    const data = encodeNotify(fields);
    const fd = socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
    try {
      connect(fd, encodeUnix(this.socketPath), `NOTIFY_SOCKET ${this.socketPath}`);
      const deadline = Date.now() + this.#timeoutMs;
      for (;;) {
        const n = write(fd, data);
        if (n === data.byteLength) return true;
        if (n !== null) {
          throw new InstarError(
            "NOTIFY_FAILED",
            `sd_notify datagram to ${this.socketPath} was cut short (${n} of ${data.byteLength} bytes)`,
          );
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new SystemError(
            "write",
            EAGAIN,
            "EAGAIN",
            `NOTIFY_SOCKET ${this.socketPath}: the service manager's receive queue stayed ` +
              `full for ${this.#timeoutMs} ms`,
          );
        }
        poll([{ fd, events: C.POLLOUT }], Math.min(left, 100));
      }
    } finally {
      close(fd);
    }
  }

  /** `READY=1` (start-up or reload finished), with an optional `STATUS=`. */
  ready(status?: string): boolean {
    return this.send(status === undefined ? { READY: 1 } : { READY: 1, STATUS: status });
  }

  /**
   * `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now, in µs), which
   * `Type=notify-reload` needs to tell this reload from an earlier one.
   */
  reloading(status?: string): boolean {
    const fields: NotifyFields = { RELOADING: 1, MONOTONIC_USEC: monotonicUsec() };
    if (status !== undefined) fields.STATUS = status;
    return this.send(fields);
  }

  /** `MAINPID=<pid>`: the service's main process is now `pid`. */
  mainPid(pid: number): boolean {
    return this.send({ MAINPID: checkPid(pid) });
  }

  /**
   * `MAINPID=<pid>` and `READY=1` in one datagram: the new generation took
   * over and is ready, so systemd never sees a ready service whose main
   * process is about to exit.
   */
  readyWithMainPid(pid: number, status?: string): boolean {
    const fields: NotifyFields = { MAINPID: checkPid(pid), READY: 1 };
    if (status !== undefined) fields.STATUS = status;
    return this.send(fields);
  }

  /** `STATUS=<text>`: a one-line status shown by `systemctl status`. */
  status(text: string): boolean {
    return this.send({ STATUS: text });
  }

  /**
   * An upgrade failed and the old generation carries on serving: `READY=1`
   * ends the reload (systemd would otherwise wait for it) and `STATUS=` says
   * why.
   */
  upgradeFailed(reason: string): boolean {
    return this.send({ READY: 1, STATUS: reason });
  }

  /**
   * `EXTEND_TIMEOUT_USEC=<usec>`: asks for `usec` more microseconds before
   * systemd's start, reload or stop timeout fires (sent while a slow new
   * generation starts).
   */
  extendTimeout(usec: number | bigint): boolean {
    if (typeof usec === "number" ? !Number.isSafeInteger(usec) || usec < 0 : usec < 0n) {
      invalid("extendTimeout usec", usec, "a non-negative integer number of microseconds");
    }
    return this.send({ EXTEND_TIMEOUT_USEC: usec });
  }

  /** `STOPPING=1`: the service is shutting down. */
  stopping(status?: string): boolean {
    return this.send(status === undefined ? { STOPPING: 1 } : { STOPPING: 1, STATUS: status });
  }
}

function checkPid(pid: number): number {
  if (!Number.isSafeInteger(pid) || pid <= 0) invalid("pid", pid, "a positive integer");
  return pid;
}

/**
 * A {@link SystemdNotifier} for this process: enabled when `NOTIFY_SOCKET` is
 * set (and not empty) and `options.enabled` is not `false`, disabled (every
 * method a no-op returning `false`) otherwise. `NOTIFY_SOCKET` stays in the
 * environment so later generations can notify too (`NotifyAccess=all`).
 * Throws `INVALID_ARGUMENT` when `NOTIFY_SOCKET` is neither an absolute path
 * nor an `@abstract` name.
 *
 * @example
 * ```ts
 * import { systemdNotifier } from "@instar/instar/unstable";
 *
 * const notify = systemdNotifier({ enabled: Deno.args.includes("--systemd") });
 * if (notify.enabled) notify.status("starting");
 * ```
 */
export function systemdNotifier(options: NotifierOptions = {}): SystemdNotifier {
  const env = options.env ?? (process.env as Env);
  const path = env.NOTIFY_SOCKET;
  const on = options.enabled !== false && path !== undefined && path !== "";
  return new SystemdNotifier(on ? path : undefined, options.sendTimeoutMs);
}

// ------------------------------------------------------------ socket activation

/**
 * The first fd systemd passes (`SD_LISTEN_FDS_START`).
 *
 * @example
 * ```ts
 * import { LISTEN_FDS_START } from "@instar/instar/unstable";
 *
 * console.log(`systemd passes sockets from fd ${LISTEN_FDS_START} on`);
 * ```
 */
export const LISTEN_FDS_START = 3;

/**
 * One socket the service manager passed.
 *
 * @example
 * ```ts
 * import { type ActivatedSocket, activatedSockets } from "@instar/instar/unstable";
 *
 * const sockets: ActivatedSocket[] = activatedSockets().sockets;
 * for (const s of sockets) console.log(s.fd, s.name, s.kind, s.listening);
 * ```
 */
export interface ActivatedSocket {
  /** The fd (3, 4, …); close-on-exec from now on. */
  fd: number;
  /** Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`), `"unknown"` when unnamed. */
  name: string;
  /**
   * `stream`, `dgram` or `seqpacket` for sockets; `other` for fds that are not
   * sockets (`ListenFIFO=`, `ListenSpecial=`, …).
   */
  kind: "stream" | "dgram" | "seqpacket" | "other";
  /** Whether it is a listening socket (`false` for a connection passed with `Accept=yes`). */
  listening: boolean;
  /**
   * Its local address, or `null` for a socket of another family (netlink, …)
   * or a non-socket. An AF_INET/AF_INET6 address says `transport: "tcp"`
   * whatever the `kind`: look at `kind` for UDP.
   */
  address: Addr | null;
}

/**
 * What {@link activatedSockets} found.
 *
 * @example
 * ```ts
 * import { type Activation, activatedSockets } from "@instar/instar/unstable";
 *
 * const activation: Activation = activatedSockets();
 * console.log(activation.sockets.length);
 * ```
 */
export interface Activation {
  /** The sockets passed to this process, in fd order; empty when none were. */
  sockets: ActivatedSocket[];
  /**
   * Set when `LISTEN_FDS` was present but is not meant for this process
   * (`LISTEN_PID` names another process, or is missing), saying so; those
   * fds were left alone.
   */
  ignored?: string;
}

/**
 * Options of {@link activatedSockets}.
 *
 * @example
 * ```ts
 * import { activatedSockets, type ActivationOptions } from "@instar/instar/unstable";
 *
 * const options: ActivationOptions = { env: { LISTEN_PID: "1", LISTEN_FDS: "0" } };
 * console.log(activatedSockets(options).sockets);
 * ```
 */
export interface ActivationOptions {
  /** Where `LISTEN_*` are read from and deleted from. Default: `process.env`. */
  env?: Env;
  /** The pid `LISTEN_PID` must name. Default: this process's. */
  pid?: number;
}

let cached: Activation | undefined;

/**
 * Set by `instar run` to its own pid in every generation's environment. With
 * `LISTEN_PID` equal to it and to the parent's pid, the passed fds are this
 * process's (docs/supervisor.md: a supervisor cannot put the child's pid in
 * `LISTEN_PID` before the exec without running code in the child).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { SUPERVISOR_PID_ENV } from "./systemd.ts";
 *
 * console.log("supervised by", process.env[SUPERVISOR_PID_ENV] ?? "nobody");
 * ```
 */
export const SUPERVISOR_PID_ENV = "INSTAR_SUPERVISOR_PID";

const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;

function malformed(variable: string, value: string, expected: string): never {
  throw new InstarError(
    "INVALID_ACTIVATION",
    `${variable} is ${JSON.stringify(value)}; expected ${expected}. ` +
      "It is set by the service manager (or systemd-socket-activate): check the unit, " +
      "or unset LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES if nothing passes sockets",
  );
}

/**
 * The sockets systemd passed to this process by socket activation
 * (`sd_listen_fds_with_names`). Reads `LISTEN_PID`, `LISTEN_FDS` and
 * `LISTEN_FDNAMES`, marks every passed fd close-on-exec (instar hands them to
 * later generations explicitly, so they must not leak into unrelated
 * children), and deletes the three variables from the environment so that no
 * child mistakes them for its own. With the default environment the first
 * call's result is remembered and returned by every later call.
 *
 * When `LISTEN_PID` is not this process, the fds are not ours: they are left
 * untouched and `ignored` says why. Malformed values (`LISTEN_FDS=abc`, a
 * name count that differs from `LISTEN_FDS`, a passed fd that is not open)
 * throw `INVALID_ACTIVATION`.
 *
 * @example
 * ```ts
 * import { activatedSockets, findActivated } from "@instar/instar/unstable";
 *
 * const { sockets } = activatedSockets();
 * const web = findActivated(sockets, { name: "web", port: 8080 });
 * if (web) console.log(`systemd passed fd ${web.fd}`);
 * ```
 */
export function activatedSockets(options: ActivationOptions = {}): Activation {
  const useProcessEnv = options.env === undefined;
  if (useProcessEnv && cached && options.pid === undefined) return cached;
  const env = options.env ?? (process.env as Env);
  const pidText = env.LISTEN_PID;
  const fdsText = env.LISTEN_FDS;
  const namesText = env.LISTEN_FDNAMES;
  // Consumed whatever happens next, as sd_listen_fds(unset_environment=1) does.
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  const ourPid = options.pid ?? getpid();
  // `instar run --listen` cannot know its child's pid before the exec: it names itself in
  // LISTEN_PID and in SUPERVISOR_PID_ENV, and the fds are ours when it is our parent.
  const bySupervisor = pidText !== undefined && pidText === env[SUPERVISOR_PID_ENV] &&
    options.pid === undefined && Number(pidText) === getppid();
  const result = readActivation(
    pidText,
    fdsText,
    namesText,
    bySupervisor ? Number(pidText) : ourPid,
  );
  if (useProcessEnv && options.pid === undefined) cached = result;
  return result;
}

function readActivation(
  pidText: string | undefined,
  fdsText: string | undefined,
  namesText: string | undefined,
  ourPid: number,
): Activation {
  if (fdsText === undefined || fdsText === "") return { sockets: [] };
  if (!DECIMAL.test(fdsText)) malformed("LISTEN_FDS", fdsText, "a decimal count of fds");
  const count = Number(fdsText);
  if (pidText === undefined || pidText === "") {
    return {
      sockets: [],
      ignored: `LISTEN_FDS=${fdsText} came without LISTEN_PID, so the fds are not known to be ours`,
    };
  }
  if (!DECIMAL.test(pidText) || Number(pidText) === 0) {
    malformed("LISTEN_PID", pidText, "the decimal pid of the process the fds are for");
  }
  if (Number(pidText) !== ourPid) {
    return {
      sockets: [],
      ignored: `LISTEN_PID=${pidText} names another process (this is ${ourPid}): ` +
        `its ${count} fd(s) are not ours and were left alone`,
    };
  }
  if (count > 65536) malformed("LISTEN_FDS", fdsText, "at most 65536 fds");
  let names: string[];
  if (namesText === undefined) {
    names = new Array(count).fill("unknown");
  } else {
    names = count === 0 && namesText === "" ? [] : namesText.split(":");
    if (names.length !== count) {
      malformed("LISTEN_FDNAMES", namesText, `${count} colon-separated name(s), one per fd`);
    }
  }
  const sockets: ActivatedSocket[] = [];
  for (let i = 0; i < count; i++) {
    const fd = LISTEN_FDS_START + i;
    try {
      fcntl(fd, C.F_GETFD);
    } catch (err) {
      throw new InstarError(
        "INVALID_ACTIVATION",
        `LISTEN_FDS=${count} but fd ${fd} is not open: the service manager's fds were closed ` +
          "before instar looked (or LISTEN_FDS is wrong)",
        { cause: err },
      );
    }
    setCloexec(fd, true);
    sockets.push({ fd, name: names[i] === "" ? "unknown" : names[i], ...describe(fd) });
  }
  return { sockets };
}

const SO_TYPES: Record<number, ActivatedSocket["kind"]> = {
  1: "stream",
  2: "dgram",
  5: "seqpacket",
};

function describe(fd: number): Pick<ActivatedSocket, "kind" | "listening" | "address"> {
  let type: number;
  try {
    type = getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE);
  } catch {
    return { kind: "other", listening: false, address: null }; // ENOTSOCK: a FIFO or special file
  }
  const kind = SO_TYPES[type] ?? "other";
  const listening = getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN) !== 0;
  let address: Addr | null;
  try {
    address = decode(getsockname(fd));
  } catch (err) {
    if (!(err instanceof InstarError) || err.code !== "UNSUPPORTED_ADDRESS") throw err;
    address = null;
  }
  return { kind, listening, address };
}

/**
 * What {@link findActivated} looks for: a name, an address, or both (name first).
 *
 * @example
 * ```ts
 * import { type ActivatedRequest, activatedSockets, findActivated } from "@instar/instar/unstable";
 *
 * const want: ActivatedRequest = { name: "web", port: 8080 };
 * const web = findActivated(activatedSockets().sockets, want);
 * ```
 */
export interface ActivatedRequest {
  /** A `FileDescriptorName=`; matched first. */
  name?: string;
  /** Numeric address, `localhost`, or omitted/`0.0.0.0`/`::` for any; with `port`. */
  hostname?: string;
  /** TCP port; `0` never matches an address (it asks for a fresh port). */
  port?: number;
  /** Unix socket path or `@abstract` name; relative paths resolve against the working directory. */
  path?: string;
}

function canonicalHost(h: string): string | null {
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (parseIPv4(h)) return h;
  const v6 = parseIPv6(h);
  if (!v6) return null;
  if (v6.slice(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) {
    return v6.slice(12).join("."); // ::ffff:a.b.c.d is the IPv4 address
  }
  return Array.from(v6, (b) => b.toString(16).padStart(2, "0")).join("");
}

const ANY = new Set(["0.0.0.0", "00000000000000000000000000000000"]);
const LOOPBACK = new Set(["127.0.0.1", "00000000000000000000000000000001"]);

function hostMatches(wanted: string | undefined, actual: string): boolean {
  if (wanted === undefined || wanted === "") return true;
  const a = canonicalHost(actual);
  if (a === null) return false;
  if (wanted === "localhost") return LOOPBACK.has(a);
  const w = canonicalHost(wanted);
  if (w === null) return false;
  // systemd's ListenStream=8080 binds [::]:8080 dual-stack: any wildcard matches any wildcard.
  return w === a || (ANY.has(w) && ANY.has(a));
}

/**
 * Finds the activated socket for a listen request: the first socket named
 * `request.name`, else the first listening stream socket whose address
 * matches `hostname`/`port` or `path`. Port 0 and a missing address never
 * match by address. Returns `undefined` when nothing matches.
 *
 * @example
 * ```ts
 * import { activatedSockets, findActivated } from "@instar/instar/unstable";
 *
 * const { sockets } = activatedSockets();
 * const api = findActivated(sockets, { hostname: "127.0.0.1", port: 8080 });
 * const admin = findActivated(sockets, { path: "/run/app/admin.sock" });
 * ```
 */
export function findActivated(
  sockets: readonly ActivatedSocket[],
  request: ActivatedRequest,
): ActivatedSocket | undefined {
  if (request.name !== undefined) {
    const byName = sockets.find((s) => s.name === request.name);
    if (byName) return byName;
  }
  const streams = sockets.filter((s) => s.kind === "stream" && s.listening && s.address);
  if (request.path !== undefined && request.path !== "") {
    const want = request.path.startsWith("@") ? request.path : resolve(request.path);
    return streams.find((s) => s.address!.transport === "unix" && s.address!.path === want);
  }
  if (request.port !== undefined && request.port !== 0) {
    return streams.find((s) => {
      const a = s.address!;
      return a.transport === "tcp" && a.port === request.port &&
        hostMatches(request.hostname, a.hostname);
    });
  }
  return undefined;
}
