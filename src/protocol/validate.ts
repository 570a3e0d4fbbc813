/**
 * Checks what a peer sent: a `hello` and the fds it names (each must be the
 * open, listening or bound socket the message says), the common shape and
 * version of any message, an `unhealthy` reason and an upgrade's trigger.
 *
 * @module
 */

import * as sys from "../ffi/mod.ts";
import { C } from "../ffi/mod.ts";
import { type Addr, decode, formatAddr } from "../ffi/sockaddr.ts";
import { InstarError } from "../errors.ts";
import { validateCounters } from "../observe/counters.ts";
import { TRIGGER } from "../observe/report.ts";
import { protocolError, shown } from "./fault.ts";
import {
  checkReason,
  type Hello,
  isDatagramKey,
  type Message,
  PROTOCOL_VERSION,
} from "./messages.ts";

// An address exactly as instar writes one: no other keys (a hello is another process's word, and
// an address it announces must be the one the fd is checked against, field for field).
function isAddr(a: unknown): a is Addr {
  if (typeof a !== "object" || a === null || Array.isArray(a)) return false;
  const o = a as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(",");
  if (o.transport === "tcp") {
    return keys === "hostname,port,transport" && typeof o.hostname === "string" &&
      Number.isInteger(o.port) && (o.port as number) >= 0 && (o.port as number) <= 65535;
  }
  return o.transport === "unix" && keys === "path,transport" && typeof o.path === "string";
}

/** The largest value of a C `int`: fd numbers and pids above it are refused, not wrapped by FFI. */
const INT_MAX = 2 ** 31 - 1;

// An fd number a C `int` can hold (Bun's FFI wraps 2**32 + 5 to fd 5; -0 is not a number anyone sent).
function isFd(fd: unknown): fd is number {
  return Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= INT_MAX &&
    !Object.is(fd, -0);
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
  if (o.counterRegion !== undefined) {
    const r = o.counterRegion as Record<string, unknown> | null;
    if (
      typeof r !== "object" || r === null || Array.isArray(r) ||
      Object.keys(r).join() !== "fd" || !isFd(r.fd) || (o.transfer === "inherit" && r.fd <= 2)
    ) {
      protocolError(`malformed counterRegion entry ${shown(r)}`);
    }
    once(r.fd as number, "the counter region");
  }
  return o as unknown as Hello;
}

// The longest promotion window a hello may announce (the option's own limit).
const MAX_WINDOW_MS = 86_400_000;

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
