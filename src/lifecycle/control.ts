/**
 * The control socket server: answers `instar status` and `instar upgrade`,
 * and hands the sockets to an independently started process (`handover`).
 * It is event-driven (a `node:net` server on a duplicate of the socket, idle
 * costs nothing) and treats every peer as hostile: other users are refused
 * (SO_PEERCRED), peers are capped in number, idle ones time out, requests are
 * capped in size and rate (per connection and for the whole server), one
 * request is answered at a time, replies are queued (never blocking the event
 * loop) and a peer that does not read them is dropped. Every refusal is a
 * `failed` message naming the reason, then the connection is closed.
 * docs/threat-model.md says why each limit is what it is.
 *
 * @module
 */

import type * as net from "node:net";
import type * as Fs from "node:fs";
import * as host from "../host.ts";
import { type InstarError, UpgradeRefusedError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import { openSocket } from "../net/listener.ts";
import { shown } from "../protocol/fault.ts";
import {
  MAX_REQUEST_BYTES,
  type Message,
  messages,
  type StatusReport,
} from "../protocol/messages.ts";
import { triggerOf } from "../protocol/validate.ts";
import { closeWith, MessageSocket } from "../protocol/message_socket.ts";
import type { UpgradeReport } from "../observe/report.ts";
import { fdOfSocket } from "../runtime/mod.ts";
import { onFdsRecovered } from "../runtime/fd_exhaustion.ts";
import type { Endpoint } from "../types.ts";

// node:fs is loaded by the first call that needs it, not at start-up (memory: docs/benchmarks.md).
const fs = (): typeof Fs => host.builtin("node:fs");

/** What the control server asks of the lifecycle. */
export interface ControlActions {
  /** The status report. */
  status(): Promise<StatusReport>;
  /** Runs an upgrade; `spawned` is called with the new pid. Resolves with it once ready. */
  upgrade(spawned: (pid: number) => void, trigger: string): Promise<number>;
  /** The last upgrade's report, sent with `upgraded`. */
  lastReport?(): UpgradeReport | null;
  /** The previous generation's final report (a `report` message from process `pid`, SO_PEERCRED). */
  report?(pid: number, report: unknown, counters: unknown): void;
  /** Hands the sockets to the peer on `fd` (pid from SO_PEERCRED). Resolves once it is ready. */
  handover(peer: MessageSocket, fd: number, pid: number): Promise<number>;
  /** Reports something worth a log line. */
  warn(message: string): void;
}

export { MAX_REQUEST_BYTES };

/** The most control connections open at once; more are refused (`busy`). */
export const MAX_PEERS = 16;
/** Accepted sockets open at once, peers and refusals still flushing; more are closed at once. */
const MAX_OPEN = 2 * MAX_PEERS;
/** A control connection with no traffic for this long is closed (`idle`); not while an upgrade or handover runs. */
export const IDLE_MS = 5_000;
/**
 * Connections accepted in a burst, and per second after that. Past it the
 * server stops accepting for {@link ACCEPT_PAUSE_MS}: connections wait in the
 * kernel's queue (a full queue refuses more), costing the event loop nothing.
 */
export const ACCEPT_RATE = { burst: 64, perSecond: 250 } as const;
/** How long accepting pauses once {@link ACCEPT_RATE} is spent. */
export const ACCEPT_PAUSE_MS = 100;
/** Requests one connection may make in a burst, and per second after that; more are refused (`rate-limited`). */
export const PEER_RATE = { burst: 10, perSecond: 5 } as const;
/**
 * Requests all connections together may make in a burst, and per second
 * after that; more are refused (`rate-limited`). A status request reads
 * /proc/net/tcp (10–20 ms of CPU with a few thousand sockets on the
 * machine), so this caps what a flood of requests costs at about a third of
 * a core; concurrent status requests share one report.
 */
export const SERVER_RATE = { burst: 40, perSecond: 20 } as const;
/** Refused peers of another user are logged at most once per this long. */
const REFUSED_LOG_MS = 10_000;
/** A peer with this much reply data the kernel would not take (it does not read) is dropped. */
export const MAX_UNREAD = 64 * 1024;

/** A token bucket: `take()` is true while the rate allows. Refills on use; no timer. */
class Bucket {
  #tokens: number;
  #at = performance.now();
  constructor(readonly rate: { readonly burst: number; readonly perSecond: number }) {
    this.#tokens = rate.burst;
  }
  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(
      this.rate.burst,
      this.#tokens + ((now - this.#at) / 1000) * this.rate.perSecond,
    );
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/** One control connection and what it is allowed. */
interface Peer {
  conn: MessageSocket;
  fd: number;
  pid: number;
  bucket: Bucket;
  busy: boolean;
}

/** The control socket of a generation, as an {@link Endpoint} passed to the next one. */
export class ControlServer implements Endpoint {
  readonly key = "control";
  readonly fd: number;
  readonly addr: Addr;
  readonly path: string;
  #server: net.Server | undefined;
  #actions: ControlActions | undefined;
  #peers = new Set<Peer>();
  #accepts = new Bucket(ACCEPT_RATE);
  #open = 0;
  #requests = new Bucket(SERVER_RATE);
  #status: Promise<StatusReport> | undefined;
  #resume: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #refusedAt = -Infinity;
  #refusedSince = 0;
  #released = false;
  #emptied: (() => void) | undefined;
  #unhook: (() => void) | undefined;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
    this.addr = { transport: "unix", path };
  }

  /**
   * The control socket at `path`: `inherited` when the previous generation
   * passed it, else created with mode 0600 set before listen(2), so no other
   * user can connect in between. `portable` (docs/portable.md): no fd of
   * instar's (-1); `node:net` creates the socket when it starts, and its mode
   * is all that keeps other users out.
   */
  static async open(
    path: string,
    inherited: number | undefined,
    portable = false,
  ): Promise<ControlServer> {
    if (portable) return new ControlServer(path, -1);
    const fd = inherited ?? (await openSocket({ path, mode: 0o600, backlog: 64 })).fd;
    return new ControlServer(path, fd);
  }

  /** Starts answering. */
  async start(actions: ControlActions): Promise<void> {
    this.#actions = actions;
    await this.#listen();
    // Deno's node:net stops accepting for good at EMFILE, silently: once fds are back, listen anew.
    this.#unhook = onFdsRecovered(() => this.#relisten());
  }

  #relisten(): void {
    // Portable mode's server owns its socket: closing it would remove the file (see #throttle).
    if (this.fd < 0 || this.#stopped || this.#resume || !this.#server) return;
    this.#server.close();
    this.#server = undefined;
    this.#listen().catch((err) =>
      this.#actions?.warn(`control socket: cannot accept again: ${(err as Error).message}`)
    );
  }

  async #listen(): Promise<void> {
    // node:net is loaded here, not at start-up: a generation without a control socket never pays
    // for it (a few MB resident; docs/benchmarks.md, Idle cost).
    const { createServer } = host.builtin("node:net") as typeof net;
    const server = createServer({ allowHalfOpen: false }, (s) => this.#accept(s));
    // The runtime's own check too: it closes a connection past it before a socket object is
    // made, sooner than #accept's (Deno: about half the transient fds of a burst of 300).
    server.maxConnections = MAX_OPEN;
    this.#server = server;
    if (this.fd < 0) await listenPortable(server, this.path);
    else {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        // node:net owns (and closes) the fd it listens on: it gets a duplicate.
        server.listen({ fd: sys.dupCloexec(this.fd) }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    }
    server.unref(); // the control socket alone does not keep a generation alive
  }

  // Stops accepting for a while; the socket itself keeps listening, so the kernel queues.
  #throttle(): void {
    // Portable mode: closing node:net's server would remove the socket file; the refusal said enough.
    if (this.fd < 0 || this.#resume || !this.#server) return;
    this.#server.close();
    this.#server = undefined;
    this.#resume = setTimeout(() => {
      this.#resume = undefined;
      if (this.#stopped) return;
      this.#listen().catch((err) =>
        this.#actions?.warn(`control socket: cannot accept again: ${(err as Error).message}`)
      );
    }, ACCEPT_PAUSE_MS);
    (this.#resume as { unref?: () => void }).unref?.();
  }

  connections(): Promise<number> {
    return Promise.resolve(this.#peers.size);
  }

  #accept(s: net.Socket): void {
    const actions = this.#actions!;
    s.on("error", () => {}); // a peer that resets the connection ends it, nothing more
    // Peers past MAX_PEERS are refused with a message, and those refusals close within
    // CLOSE_GRACE_MS. This bounds the fds they hold meanwhile, across the servers #throttle
    // replaces (each node:net server's own maxConnections counts only its own sockets).
    if (this.#open >= MAX_OPEN) {
      s.destroy();
      return;
    }
    this.#open++;
    s.once("close", () => this.#open--);
    if (!this.#accepts.take()) {
      closeWith(s, messages.failed("rate-limited", "too many connections; try again later"));
      this.#throttle();
      return;
    }
    const fd = this.fd < 0 ? -1 : fdOfSocket(s);
    let cred: { pid: number; uid: number } | undefined;
    try {
      // Portable mode has no SO_PEERCRED: the socket file's mode (0600) admitted only our user.
      cred = this.fd < 0 ? { pid: 0, uid: -1 } : fd >= 0 ? sys.peerCred(fd) : undefined;
    } catch { /* gone already */ }
    if (!cred || (this.fd >= 0 && cred.uid !== sys.getuid())) {
      // Only the same user may take the listeners or drive upgrades.
      closeWith(s, messages.failed("forbidden", "peer uid differs from the server's"));
      this.#warnRefused(
        `control socket: refused a peer ${
          cred ? `with another uid (${cred.uid})` : "that cannot be identified"
        }`,
      );
      return;
    }
    if (this.#peers.size >= MAX_PEERS) {
      closeWith(
        s,
        messages.failed("busy", `${MAX_PEERS} control connections are open; try again later`),
      );
      return;
    }
    const peer = { fd, pid: cred.pid, bucket: new Bucket(PEER_RATE), busy: false } as Peer;
    peer.conn = new MessageSocket(s, {
      message: (m) => this.#request(peer, m, actions),
      end: (error) =>
        this.#close(peer, error ? messages.failed("protocol-error", error.message) : undefined),
    }, MAX_REQUEST_BYTES);
    s.setTimeout(IDLE_MS, () => this.#refuse(peer, "idle", `no request within ${IDLE_MS} ms`));
    this.#peers.add(peer);
    s.on("close", () => this.#forget(peer));
  }

  // One line per refused peer, but not a flood of lines: at most one per REFUSED_LOG_MS.
  #warnRefused(line: string): void {
    const now = performance.now();
    if (now - this.#refusedAt < REFUSED_LOG_MS) {
      this.#refusedSince++;
      return;
    }
    const more = this.#refusedSince
      ? ` (${this.#refusedSince} more refused since the last line)`
      : "";
    this.#refusedAt = now;
    this.#refusedSince = 0;
    this.#actions?.warn(line + more);
  }

  #forget(peer: Peer): void {
    if (!this.#peers.delete(peer)) return;
    if (this.#peers.size === 0) this.#emptied?.();
  }

  #refuse(peer: Peer, reason: string, message: string): void {
    this.#close(peer, messages.failed(reason, message));
  }

  // Closed with a last message; no longer counted (the fd goes within CLOSE_GRACE_MS).
  #close(peer: Peer, last?: Message): void {
    peer.conn.close(last);
    this.#forget(peer);
  }

  #request(peer: Peer, m: Message, actions: ControlActions): void {
    if (peer.busy) {
      return this.#refuse(peer, "protocol-error", "one request at a time: wait for the answer");
    }
    const known = ["status", "upgrade", "handover", "report"];
    if (!known.includes(m.type)) {
      return this.#refuse(
        peer,
        "protocol-error",
        `unexpected ${shown(m.type)} message on the control socket`,
      );
    }
    if (peer.conn.socket.writableLength > 0) {
      // The kernel's buffer for this peer is full: it does not read its answers.
      return this.#refuse(peer, "not-reading", "the previous answer was not read");
    }
    if (!peer.bucket.take()) {
      return this.#refuse(
        peer,
        "rate-limited",
        `more than ${PEER_RATE.burst} requests at once or ${PEER_RATE.perSecond}/s on one connection`,
      );
    }
    if (!this.#requests.take()) {
      return this.#refuse(
        peer,
        "rate-limited",
        `the server answers at most ${SERVER_RATE.perSecond} requests/s; try again later`,
      );
    }
    if (m.type === "report") {
      // The previous generation's last word after its drain: believed only from it (observer.ts).
      actions.report?.(peer.pid, m.report, m.counters);
      return this.#close(peer);
    }
    peer.busy = true;
    if (m.type === "status") {
      this.#report(actions).then((s) => {
        peer.busy = false;
        this.#reply(peer, messages.statusReply(s));
      }, (err) => this.#fail(peer, err));
    } else if (m.type === "upgrade") {
      peer.conn.socket.setTimeout(0); // an upgrade may take up to the ready timeout
      let trigger: string;
      try {
        trigger = triggerOf(m);
      } catch (err) {
        return this.#fail(peer, err);
      }
      actions.upgrade((pid) => peer.conn.send(messages.progress("spawned", pid)), trigger).then(
        (pid) => this.#close(peer, messages.upgraded(pid, actions.lastReport?.())),
        (err) => this.#fail(peer, err),
      );
    } else {
      peer.conn.socket.setTimeout(0);
      actions.handover(peer.conn, peer.fd, peer.pid).catch((err) => this.#fail(peer, err));
    }
  }

  // Concurrent status requests share one report.
  #report(actions: ControlActions): Promise<StatusReport> {
    this.#status ??= actions.status().finally(() => (this.#status = undefined));
    return this.#status;
  }

  #fail(peer: Peer, err: unknown): void {
    this.#close(peer, failure(err));
  }

  #reply(peer: Peer, msg: Message): void {
    peer.conn.send(msg);
    if (peer.conn.socket.writableLength > MAX_UNREAD) {
      this.#refuse(peer, "not-reading", "the answers are not read");
    }
  }

  pauseAccepting(): void {
    this.#stopped = true;
    this.#unhook?.();
    clearTimeout(this.#resume);
    this.#resume = undefined;
    this.#server?.close();
    this.#server = undefined;
  }

  resumeAccepting(): void {
    // The control socket only stops for good (the next generation answers it).
  }

  refuseNew(): Promise<void> {
    // On a stop the socket file is removed (unlink) and the fd closed: nobody connects any more.
    return Promise.resolve();
  }

  /** Closes idle peers; resolves when the busy ones (an upgrade being answered) are done. */
  finish(): Promise<void> {
    this.pauseAccepting();
    for (const p of [...this.#peers]) if (!p.busy) this.#close(p);
    if (this.#peers.size === 0) return Promise.resolve();
    return new Promise((r) => (this.#emptied = r));
  }

  forceClose(): Promise<number> {
    const n = this.#peers.size;
    for (const p of [...this.#peers]) this.#close(p);
    return Promise.resolve(n);
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.pauseAccepting();
    if (this.fd >= 0) sys.close(this.fd);
  }

  /** Removes the socket file (on stop: nobody will answer it any more). */
  unlink(): void {
    if (!this.path.startsWith("@")) fs().rmSync(this.path, { force: true });
  }
}

/**
 * Portable mode: `server` listens on `path` itself, created with mode 0600
 * (the umask, for the moment of the bind, so no other user can connect in
 * between). A socket file nobody answers (a crashed server's) is replaced.
 */
async function listenPortable(server: net.Server, path: string): Promise<void> {
  const proc = host.builtin<{ umask(mask?: number): number }>("node:process");
  const attempt = () =>
    new Promise<void>((resolve, reject) => {
      const before = proc.umask(0o177);
      const done = (err?: Error) => {
        proc.umask(before);
        server.off("error", done);
        if (err) reject(err);
        else resolve();
      };
      server.once("error", done);
      server.listen({ path, backlog: 64 }, () => done());
    });
  try {
    await attempt();
  } catch (err) {
    if ((err as { code?: string }).code !== "EADDRINUSE" || !(await stale(path))) throw err;
    fs().rmSync(path, { force: true });
    await attempt();
  }
}

// Whether the socket file at `path` is a dead server's: connecting is refused.
function stale(path: string): Promise<boolean> {
  const { connect } = host.builtin("node:net") as typeof net;
  return new Promise((resolve) => {
    const c = connect({ path });
    c.once("connect", () => (c.destroy(), resolve(false)));
    c.once("error", (e: { code?: string }) => resolve(e.code === "ECONNREFUSED"));
  });
}

function failure(err: unknown): Message {
  if (err instanceof UpgradeRefusedError) return messages.refused(err.reason, err.message);
  const reason = (err as { reason?: string }).reason ?? (err as InstarError).code ?? "error";
  return messages.failed(reason, (err as Error).message);
}
