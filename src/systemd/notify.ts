/**
 * systemd's `sd_notify` protocol without libsystemd: a datagram of
 * `KEY=VALUE` lines sent to `$NOTIFY_SOCKET`.
 *
 * How instar maps a graceful upgrade onto `Type=notify-reload` is described in
 * `docs/systemd.md`.
 *
 * @module
 */

import * as host from "../host.ts";
import { InstarError, invalid, SystemError } from "../errors.ts";
import { C, close, connect, EAGAIN, monotonicUsec, poll, socket, write } from "../ffi/mod.ts";
import { encodeUnix } from "../ffi/sockaddr.ts";
import type { Env } from "./env.ts";

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
  const env = options.env ?? (host.envRecord() as Env);
  const path = env.NOTIFY_SOCKET;
  const on = options.enabled !== false && path !== undefined && path !== "";
  return new SystemdNotifier(on ? path : undefined, options.sendTimeoutMs);
}
