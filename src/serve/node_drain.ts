/**
 * What a draining `node:http` / `node:https` server does, in both runtimes
 * (their `node:http` share the API): every response carries
 * `Connection: close` (the ones already in flight too, if their headers are
 * not sent yet), the drain waits until no response went out for a while
 * before closing idle keep-alive connections, and WebSockets upgraded through
 * the `upgrade` event (the `ws` package) stay open until they close; at the
 * drain timeout they get close code 1012 and are cut.
 * A `node:http2` server's sessions get GOAWAY (a graceful close) spread
 * over the drain's close spread rather than all at once. Such a server gets
 * no `request` listener from the drain: the first one turns on its
 * compatibility API, and an application answering on `stream` would get a
 * second handler for each stream (and `Connection: close` is not HTTP/2).
 *
 * Nothing runs per request in steady state: connections are tracked as they
 * come (`connection` / `secureConnection`), and only when the drain starts
 * does a `request` listener go in front of the framework's; the responses
 * in flight then are found on their sockets (`socket._httpMessage`, set by
 * both runtimes' `node:http` as by Node's).
 *
 * @module
 */

import type * as http from "node:http";
import type * as http2 from "node:http2";
import type { Socket } from "node:net";
import { QuietClock, RESTART_REASON, SERVICE_RESTART } from "../runtime/http_drain.ts";
import { deadline, spread } from "../timeout.ts";

type Res = http.ServerResponse;

// The `ws` package keeps its WebSocket on the upgraded socket under Symbol("websocket").
function webSocketOf(socket: Socket): { close(code: number, reason: string): void } | undefined {
  const key = Object.getOwnPropertySymbols(socket).find((s) => s.description === "websocket");
  const ws = key === undefined ? undefined : (socket as unknown as Record<symbol, unknown>)[key];
  return ws && typeof (ws as { close?: unknown }).close === "function"
    ? ws as { close(code: number, reason: string): void }
    : undefined;
}

// An upgraded connection of a restarting server: a `ws` WebSocket gets 1012, anything else an end.
function closeUpgraded(socket: Socket): void {
  try {
    const ws = webSocketOf(socket);
    if (ws) ws.close(SERVICE_RESTART, RESTART_REASON);
    else socket.end();
  } catch {
    socket.destroy();
  }
}

/** What the drain uses of a `node:http2` session. */
interface Session {
  close(): void;
  destroy(): void;
  once(event: "close", listener: () => void): unknown;
}

// GOAWAY, then the session closes once its streams end.
function closeSession(session: Session): void {
  try {
    session.close();
  } catch {
    session.destroy();
  }
}

/** The names of `node:http2`'s two server classes, which the module does not export. */
const H2_SERVER_CLASSES = new Set(["Http2Server", "Http2SecureServer"]);

/**
 * Whether `server` is a `node:http2` server (or a subclass of one): told by
 * its classes' names, the same in Deno 2.9.6 and Bun 1.4.5 (measured), so
 * that a `node:http` server does not load `node:http2` for nothing (3 MB
 * resident on Deno, 6.7 MB on Bun, 15–30 ms, to make two servers to compare
 * prototypes with). A server missed here is still found at its first
 * `session` event.
 */
function isHttp2Server(server: http.Server): boolean {
  for (let p = Object.getPrototypeOf(server); p !== null; p = Object.getPrototypeOf(p)) {
    if (H2_SERVER_CLASSES.has(p.constructor?.name)) return true;
  }
  return false;
}

/** The `upgrade` listeners of every NodeDrain: none of them answers an upgrade. */
const TRACKERS = new WeakSet<(...args: never[]) => unknown>();

/** The drain of one `node:http` server: see the module comment. */
export class NodeDrain {
  #server: http.Server;
  #draining = false;
  #clock = new QuietClock();
  #sockets = new Set<Socket>();
  #upgraded = new Set<Socket>();
  #closed: Promise<void> | undefined;
  #emptied: (() => void)[] = [];
  // HTTP/2 sessions (a node:http2 server's `session` event): their clients move on GOAWAY only.
  #sessions = new Set<Session>();
  // A node:http2 server (or one whose `session` event fired): no `request` listener of ours.
  #h2: boolean;
  #onStream = (stream: http2.ServerHttp2Stream) => stream.once("close", () => this.#clock.mark());
  #onRequest = (_req: http.IncomingMessage, res: Res) => this.#closing(res);

  /** Starts watching `server`'s connections and upgrades. */
  constructor(server: http.Server) {
    this.#server = server;
    this.#h2 = isHttp2Server(server);
    const track = (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once("close", () => {
        this.#sockets.delete(socket);
        if (this.#sockets.size === 0) { for (const r of this.#emptied.splice(0)) r(); }
      });
    };
    server.prependListener("connection", track);
    server.prependListener("secureConnection", track);
    server.prependListener("session", (session: Session) => {
      this.#h2 = true;
      this.#sessions.add(session);
      session.once("close", () => this.#sessions.delete(session));
    });
    this.#trackUpgrades(server);
  }

  // node:http (Node's, Deno's and Bun's) hands a `Connection: Upgrade` request to the
  // `upgrade` event only when someone listens to it, else it answers it as a plain request
  // (h2c probes, `curl --http2`). A listener of ours alone would leave such a request
  // unanswered and its connection holding the drain: ours joins the application's.
  #trackUpgrades(server: http.Server): void {
    const onUpgrade = (_req: http.IncomingMessage, socket: Socket) => {
      this.#upgraded.add(socket);
      socket.once("close", () => this.#upgraded.delete(socket));
    };
    TRACKERS.add(onUpgrade);
    let joined = false;
    const join = (event: string | symbol, listener?: unknown) => {
      if (event !== "upgrade" || joined || listener === onUpgrade) return;
      joined = true;
      server.prependListener("upgrade", onUpgrade);
    };
    if (server.listenerCount("upgrade") > 0) join("upgrade");
    server.on("newListener", join);
    // The application's last one gone: ours goes too.
    server.on(
      "removeListener",
      (event: string | symbol, listener: (...args: never[]) => unknown) => {
        if (event !== "upgrade" || !joined || TRACKERS.has(listener)) return;
        if (server.listeners("upgrade").every((l) => TRACKERS.has(l))) {
          joined = false;
          server.off("upgrade", onUpgrade);
        }
      },
    );
  }

  /** How many upgraded connections (WebSockets) are open. */
  get upgraded(): number {
    return this.#upgraded.size;
  }

  // A response of a draining server: `Connection: close` (the client opens its next
  // connection to the new generation), and its end marks the quiet clock.
  #closing(res: Res): void {
    res.once("finish", () => this.#clock.mark());
    if (res.headersSent) return;
    try {
      res.setHeader("connection", "close");
    } catch { /* headers went out meanwhile */ }
  }

  /**
   * Switches the answers to `Connection: close` (and back). On HTTP/2 the
   * answers stay as they are (its sessions get GOAWAY): the end of each
   * stream marks the quiet clock.
   */
  draining(on: boolean): void {
    if (on === this.#draining) return;
    this.#draining = on;
    if (!on) {
      this.#server.off("request", this.#onRequest);
      this.#server.off("stream", this.#onStream);
      return;
    }
    this.#clock.mark();
    if (this.#h2) {
      // A `stream` listener, unlike a `request` one, changes nothing of how streams are answered.
      this.#server.on("stream", this.#onStream);
      return;
    }
    // In front of the framework's listener: the header is set before it answers.
    this.#server.prependListener("request", this.#onRequest);
    // Requests taken before the drain and not answered yet close their connection too.
    for (const socket of this.#sockets) {
      const res = (socket as unknown as { _httpMessage?: unknown })._httpMessage;
      if (res && typeof (res as Res).setHeader === "function" && !(res as Res).writableEnded) {
        this.#closing(res as Res);
      }
    }
  }

  /** How many connections the server has open. */
  get connections(): number {
    return this.#sockets.size;
  }

  /** Resolves once no response went out for `idleMs` (at most `maxMs`). */
  quiet(idleMs: number, maxMs: number): Promise<void> {
    return this.#clock.quiet(idleMs, maxMs);
  }

  /** Resolves once the server has no connection open (each closed by its client, or cut). */
  noConnections(): Promise<void> {
    if (this.#sockets.size === 0) return Promise.resolve();
    return new Promise((r) => this.#emptied.push(r));
  }

  /**
   * Stops the server: it closes its (duplicate) listening fd and its idle
   * connections; resolves when every connection, WebSockets included, ended.
   * HTTP/2 sessions are first closed gracefully (GOAWAY, then closed once
   * their streams end) a few at a time over `spreadMs`: the server's close
   * would send GOAWAY to every idle one at once (Deno 2.9.6, Bun 1.4.5).
   */
  async finish(spreadMs = 0): Promise<void> {
    if (spreadMs > 0 && this.#sessions.size > 0) {
      await spread(this.#sessions, closeSession, spreadMs);
    }
    const s = this.#server;
    this.#closed ??= new Promise<void>((resolve) => {
      if (!s.listening) return resolve();
      s.close(() => resolve());
    });
    s.closeIdleConnections?.();
    return await this.#closed;
  }

  /**
   * Starts closing the open WebSockets with 1012, spread over `windowMs`;
   * one closed meanwhile is skipped. Resolves once every one had its turn.
   */
  async closeSpread(windowMs: number): Promise<void> {
    await Promise.all([
      spread(this.#upgraded, closeUpgraded, windowMs),
      spread(this.#sessions, closeSession, windowMs),
    ]);
  }

  /** Closes the open WebSockets with 1012; resolves with how many closed within `ms`. */
  async closeWebSockets(ms: number): Promise<number> {
    const n = this.#upgraded.size;
    if (n === 0) return 0;
    const gone = new Promise<void>((resolve) => {
      let left = n;
      for (const socket of [...this.#upgraded]) {
        socket.once("close", () => --left === 0 && resolve());
        closeUpgraded(socket);
      }
    });
    await deadline(gone, ms);
    return n - this.#upgraded.size;
  }

  /** Cuts every connection the server still has, upgraded ones included. */
  closeAll(): void {
    this.#server.closeAllConnections?.();
    for (const s of this.#upgraded) s.destroy();
  }
}
