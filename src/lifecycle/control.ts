/**
 * The control socket server: answers `instar status` and `instar upgrade`,
 * and hands the sockets to an independently started process (`handover`).
 * It is event-driven (a `node:net` server on a duplicate of the socket, idle
 * costs nothing) and treats every peer as hostile: other users are refused
 * (SO_PEERCRED), peers are capped in number, idle ones time out, one request
 * is answered at a time, replies are queued (never blocking the event loop)
 * and a peer that does not read them is dropped.
 *
 * @module
 */

import * as net from "node:net";
import { rmSync } from "node:fs";
import { type InstarError, UpgradeRefusedError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import { openSocket } from "../net/listener.ts";
import { type Message, messages, MessageSocket, type StatusReport } from "../protocol.ts";
import { fdOfSocket } from "../runtime/mod.ts";
import type { Endpoint } from "../types.ts";

/** What the control server asks of the lifecycle. */
export interface ControlActions {
  /** The status report. */
  status(): Promise<StatusReport>;
  /** Runs an upgrade; `spawned` is called with the new pid. Resolves with it once ready. */
  upgrade(spawned: (pid: number) => void): Promise<number>;
  /** Hands the sockets to the peer on `fd` (pid from SO_PEERCRED). Resolves once it is ready. */
  handover(peer: MessageSocket, fd: number, pid: number): Promise<number>;
  /** Reports something worth a log line. */
  warn(message: string): void;
}

/** The most control connections open at once; more are closed at once. */
export const MAX_PEERS = 16;
/** A control connection with no request for this long is closed. */
export const IDLE_MS = 10_000;
/** A peer with this much unread reply data is dropped. */
const MAX_UNREAD = 64 * 1024;

/** The control socket of a generation, as an {@link Endpoint} passed to the next one. */
export class ControlServer implements Endpoint {
  readonly key = "control";
  readonly fd: number;
  readonly addr: Addr;
  readonly path: string;
  #server: net.Server | undefined;
  #peers = new Set<MessageSocket>();
  #busy = new Set<MessageSocket>();
  #released = false;
  #emptied: (() => void) | undefined;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
    this.addr = { transport: "unix", path };
  }

  /**
   * The control socket at `path`: `inherited` when the previous generation
   * passed it, else created with mode 0600 set before listen(2), so no other
   * user can connect in between.
   */
  static async open(path: string, inherited: number | undefined): Promise<ControlServer> {
    const fd = inherited ?? (await openSocket({ path, mode: 0o600, backlog: 64 })).fd;
    return new ControlServer(path, fd);
  }

  /** Starts answering. */
  async start(actions: ControlActions): Promise<void> {
    const server = net.createServer({ allowHalfOpen: false }, (s) => this.#accept(s, actions));
    server.maxConnections = MAX_PEERS;
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // node:net owns (and closes) the fd it listens on: it gets a duplicate.
      server.listen({ fd: sys.dupCloexec(this.fd) }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.unref(); // the control socket alone does not keep a generation alive
  }

  connections(): Promise<number> {
    return Promise.resolve(this.#peers.size);
  }

  #accept(s: net.Socket, actions: ControlActions): void {
    s.on("error", () => {}); // a peer that resets the connection ends it, nothing more
    const fd = fdOfSocket(s);
    let cred: { pid: number; uid: number } | undefined;
    try {
      if (fd >= 0) cred = sys.peerCred(fd);
    } catch { /* gone already */ }
    if (!cred || cred.uid !== sys.getuid()) {
      // Only the same user may take the listeners or drive upgrades.
      s.end(
        JSON.stringify(messages.failed("forbidden", "peer uid differs from the server's")) + "\n",
      );
      actions.warn(
        `control socket: refused a peer ${
          cred ? `with another uid (${cred.uid})` : "that cannot be identified"
        }`,
      );
      return;
    }
    s.setTimeout(IDLE_MS, () => peer.close());
    const peer: MessageSocket = new MessageSocket(s, {
      message: (m) => this.#request(peer, m, fd, cred!.pid, actions),
      end: (error) => {
        if (error) peer.close(messages.failed("protocol-error", error.message));
        this.#forget(peer);
      },
    });
    this.#peers.add(peer);
    s.on("close", () => this.#forget(peer));
  }

  #forget(peer: MessageSocket): void {
    this.#peers.delete(peer);
    this.#busy.delete(peer);
    if (this.#peers.size === 0) this.#emptied?.();
  }

  #request(
    peer: MessageSocket,
    m: Message,
    fd: number,
    pid: number,
    actions: ControlActions,
  ): void {
    if (this.#busy.has(peer)) {
      return peer.close(
        messages.failed("protocol-error", "one request at a time: wait for the answer"),
      );
    }
    if (m.type === "status") {
      this.#busy.add(peer);
      actions.status().then((s) => {
        this.#busy.delete(peer);
        this.#reply(peer, messages.statusReply(s));
      }, (err) => peer.close(failure(err)));
      return;
    }
    if (m.type === "upgrade") return this.#upgrade(peer, actions);
    if (m.type === "handover") {
      this.#busy.add(peer);
      peer.socket.setTimeout(0);
      actions.handover(peer, fd, pid).catch((err) => peer.close(failure(err)));
      return;
    }
    peer.close(
      messages.failed("protocol-error", `unexpected ${m.type} message on the control socket`),
    );
  }

  #reply(peer: MessageSocket, msg: Message): void {
    peer.send(msg);
    if (peer.socket.writableLength > MAX_UNREAD) peer.close(); // it does not read its answers
  }

  #upgrade(peer: MessageSocket, actions: ControlActions): void {
    this.#busy.add(peer);
    peer.socket.setTimeout(0); // an upgrade may take up to the ready timeout
    actions.upgrade((pid) => peer.send(messages.progress("spawned", pid))).then(
      (pid) => peer.close(messages.upgraded(pid)),
      (err) => peer.close(failure(err)),
    );
  }

  pauseAccepting(): void {
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
    for (const p of this.#peers) if (!this.#busy.has(p)) p.close();
    if (this.#peers.size === 0) return Promise.resolve();
    return new Promise((r) => (this.#emptied = r));
  }

  forceClose(): Promise<number> {
    const n = this.#peers.size;
    for (const p of [...this.#peers]) p.close();
    return Promise.resolve(n);
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.pauseAccepting();
    sys.close(this.fd);
  }

  /** Removes the socket file (on stop: nobody will answer it any more). */
  unlink(): void {
    if (!this.path.startsWith("@")) rmSync(this.path, { force: true });
  }
}

function failure(err: unknown): Message {
  if (err instanceof UpgradeRefusedError) return messages.refused(err.reason, err.message);
  const reason = (err as { reason?: string }).reason ?? (err as InstarError).code ?? "error";
  return messages.failed(reason, (err as Error).message);
}
