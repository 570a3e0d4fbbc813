/**
 * The new generation's side of the protocol: read the hello the previous
 * generation left on `INSTAR_CONTROL_FD` (fork/exec), or ask a running
 * generation for its sockets over its control socket (handover); check every
 * fd; later say ready (or why not). Runs at start-up, before anything is
 * served, so it may wait synchronously.
 *
 * @module
 */

import * as host from "../host.ts";
import { UpgradeRefusedError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import { protocolError, shown } from "../protocol/fault.ts";
import { CONTROL_FD_ENV, COUNTERS_FD_ENV, type Hello, messages } from "../protocol/messages.ts";
import { SUPERVISOR_PID_ENV } from "../systemd/activation.ts";
import { checkListeningFd, validateHello } from "../protocol/validate.ts";
import { Channel } from "../protocol/channel.ts";
import { ControlClient, nobodyThere } from "../protocol/client.ts";

/** The link to the generation this one replaces. */
export interface ParentLink {
  /** What it passed. */
  hello: Hello;
  /** The channel it waits on for `ready`. */
  channel: Channel;
}

/** How long a new generation waits for the previous one's hello. */
const HELLO_TIMEOUT_MS = 10_000;

/** The previous generation's hello, if this process was started by one (fork/exec). */
export function readHello(): ParentLink | null {
  const raw = host.getEnv(CONTROL_FD_ENV);
  if (raw === undefined) return null;
  host.deleteEnv(CONTROL_FD_ENV);
  if (!/^\d{1,10}$/.test(raw) || Number(raw) > 2 ** 31 - 1) {
    protocolError(`${CONTROL_FD_ENV}=${shown(raw)} is not an fd number`);
  }
  const fd = Number(raw);
  checkChannelFd(fd);
  sys.setCloexec(fd, true);
  const channel = new Channel(fd);
  return { hello: receiveHello(channel, "inherit"), channel };
}

/**
 * The counter region `instar run` passed to this generation (`INSTAR_COUNTERS_FD`),
 * or null. Believed only when `INSTAR_SUPERVISOR_PID` names this process's parent
 * (anything else set the variable: it is ignored, its fd left alone). The variable
 * is removed either way; the region itself is checked where it is mapped.
 */
export function supervisorRegion(warn: (m: string) => void): number | null {
  const raw = host.getEnv(COUNTERS_FD_ENV);
  if (raw === undefined) return null;
  host.deleteEnv(COUNTERS_FD_ENV);
  const fromParent = host.getEnv(SUPERVISOR_PID_ENV) === String(host.ppid());
  if (!fromParent || !/^\d{1,10}$/.test(raw) || Number(raw) <= 2 || Number(raw) > 2 ** 31 - 1) {
    warn(`${COUNTERS_FD_ENV}=${shown(raw)} is not an fd from this process's instar run; ignored`);
    return null;
  }
  return Number(raw);
}

// Anything but our end of a Unix stream socketpair (stdout, a file, a TCP
// socket) is refused before it is read, written or made non-blocking.
function checkChannelFd(fd: number): void {
  const bad = (why: string): never =>
    protocolError(`${CONTROL_FD_ENV}=${fd} ${why}; it must name a Unix stream socket from instar`);
  if (fd <= 2) bad("is a standard stream");
  let domain: number, type: number;
  try {
    domain = sys.getsockoptInt(fd, sys.C.SOL_SOCKET, sys.C.SO_DOMAIN);
    type = sys.getsockoptInt(fd, sys.C.SOL_SOCKET, sys.C.SO_TYPE);
  } catch (err) {
    return bad(`is not an open socket (${(err as Error).message})`);
  }
  if (domain !== sys.C.AF_UNIX || type !== sys.C.SOCK_STREAM) bad("is not a Unix stream socket");
}

/**
 * Asks the generation answering on the control socket `path` for its
 * sockets. Nobody there (no file, or a stale one): `null`, a fresh start.
 */
export function requestHandover(path: string): ParentLink | null {
  let client: ControlClient;
  try {
    client = ControlClient.connect(
      path,
      () => `control socket ${path} belongs to another user; refusing its listeners`,
    );
  } catch (err) {
    if (nobodyThere(err)) return null;
    throw err;
  }
  client.send(messages.handover());
  return { hello: receiveHello(client.channel, "scm_rights"), channel: client.channel };
}

/**
 * Tells the previous generation this one is ready, and closes the link.
 * This generation accepts connections already, so it never waits: the
 * message is a few dozen bytes into a socket that has carried one other
 * small message from this side (`handover`, or nothing), so the kernel
 * always has room for it; if it had not, the previous generation is broken
 * and is left to time out.
 */
export function sayReady(link: ParentLink, warn: (m: string) => void): void {
  try {
    link.channel.send(messages.ready(), [], 0);
  } catch (err) {
    // The previous generation is gone; this one serves alone, which is the goal anyway.
    warn(`could not tell the previous generation: ${(err as Error).message}`);
  }
  link.channel.close();
}

/**
 * Reads the hello on `channel` and checks every fd it names. Received fds are
 * mapped by index (scm_rights); inherited ones are taken by number (inherit).
 * On any fault the peer is told, every received fd is closed, and it throws.
 */
function receiveHello(channel: Channel, transfer: Hello["transfer"]): Hello {
  let received: number[] = [];
  try {
    const { msg, fds } = channel.receiveSync(HELLO_TIMEOUT_MS);
    received = fds;
    throwIfRefused(msg);
    const hello = validateHello(msg);
    if (hello.transfer !== transfer) {
      protocolError(`expected ${transfer} transfer, got ${hello.transfer}`);
    }
    if (transfer === "inherit") {
      for (const f of received) sys.close(f); // nothing may arrive attached
      received = [];
    } else {
      mapReceived(hello, received);
    }
    for (const l of hello.listeners) {
      checkListeningFd(l.fd, l.addr, l.key);
      sys.setCloexec(l.fd, true); // never leak into the program's own children
    }
    if (hello.control) {
      checkListeningFd(
        hello.control.fd,
        { transport: "unix", path: hello.control.path },
        "control",
      );
      sys.setCloexec(hello.control.fd, true);
    }
    // Its contents are checked where it is mapped (observe/counter_region.ts): a bad one is
    // refused there with a warning, and counting starts afresh.
    if (hello.counterRegion) sys.setCloexec(hello.counterRegion.fd, true);
    return hello;
  } catch (err) {
    for (const f of received) sys.close(f);
    try {
      channel.send(messages.error((err as Error).message));
    } catch { /* the parent is gone; the error below still says what happened */ }
    channel.close();
    throw err;
  }
}

// Attached fds arrive in order; the hello names them by index.
function mapReceived(hello: Hello, received: number[]): void {
  const named = hello.listeners.length + (hello.control ? 1 : 0) + (hello.counterRegion ? 1 : 0);
  if (received.length !== named) {
    protocolError(`${named} sockets announced, ${received.length} fds received`);
  }
  const used = new Set<number>();
  const take = (i: number, what: string) => {
    if (i >= received.length || used.has(i)) protocolError(`${what} names fd index ${i}`);
    used.add(i);
    return received[i];
  };
  for (const l of hello.listeners) l.fd = take(l.fd, `listener ${l.key}`);
  if (hello.control) hello.control.fd = take(hello.control.fd, "the control socket");
  if (hello.counterRegion) {
    hello.counterRegion.fd = take(hello.counterRegion.fd, "the counter region");
  }
}

// A handover the running generation refused (e.g. it is PID 1 of this pid namespace): its
// reason and message, bounded, instead of "expected a hello message".
function throwIfRefused(msg: unknown): void {
  const m = msg as { type?: unknown; reason?: unknown; message?: unknown } | null;
  if (m?.type !== "refused" || typeof m.reason !== "string" || typeof m.message !== "string") {
    return;
  }
  const reason = m.reason.slice(0, 64) as UpgradeRefusedError["reason"];
  throw new UpgradeRefusedError(
    reason,
    `the running generation refused: ${m.message.slice(0, 2000)}`,
  );
}
