/**
 * The lifecycle of one generation, as a small state machine: adopt the sockets of the previous
 * generation, tell it when this one is ready, start the next one on demand, drain when this one
 * must stop. Each step is a unit of its own (sockets.ts, ready.ts, attempt.ts, exit.ts,
 * observer.ts); this file only orchestrates them.
 *
 * @module
 */

import * as host from "../host.ts";
import type { DatagramSocket } from "../net/datagram.ts";
import type { Listener } from "../net/listener.ts";
import type { DatagramSpec, SocketSpec } from "../net/specs.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { StatusReport } from "../protocol/messages.ts";
import type { Server, UpgraderServeOptions } from "../serve/serve.ts";
import type { NodeHttpServer, NodeServing, UpgraderServeNodeOptions } from "../serve/serve_node.ts";
import type { Addr, ExitReason, State } from "../types.ts";
import { Upgrades } from "./attempt.ts";
import type { UpgraderEvents, UpgraderHandler } from "./events.ts";
import { Exit } from "./exit.ts";
import { expose } from "./inside.ts";
import { Observer } from "./observer.ts";
import { resolveOptions, type UpgraderOptions } from "./options.ts";
import { Readiness } from "./ready.ts";
import { Shared } from "./shared.ts";
import { installSignals } from "./signals.ts";
import { Sockets } from "./sockets.ts";

/**
 * The lifecycle of one generation of a server.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create({ pidFile: "/run/app/app.pid" });
 * const listener = await up.listen({ port: 8080 });
 * (async () => {
 *   for await (const conn of listener) {
 *     conn.readable.pipeTo(conn.writable).catch(() => {});
 *   }
 * })();
 * await up.ready(); // the previous generation, if any, drains now
 * console.log("exiting because of", await up.exit);
 * ```
 */
export class Upgrader {
  /** This generation's number: 1 for a fresh start, then 2, 3, … */
  readonly generation: number;
  /** The pid of the generation that started this one, or `null`. */
  readonly parentPid: number | null;
  /** Resolves with the reason this generation must stop; draining starts at the same moment. */
  readonly exit: Promise<ExitReason>;
  /** Resolves once draining has finished and the `onDrained` hooks ran; the process exits after. */
  readonly drained: Promise<void>;

  #s: Shared;
  #sockets: Sockets;
  #upgrades: Upgrades;
  #ready: Readiness;
  #exit: Exit;
  #observer: Observer;
  #removeSignals: () => void = () => {};

  private constructor(s: Shared) {
    const endpoints = () => this.#sockets.registry.endpoints;
    const exit = (reason: ExitReason) => this.#exit.begin(reason);
    this.#s = s;
    this.generation = s.generation;
    this.parentPid = s.parentPid;
    this.#exit = new Exit(s, endpoints, () => this.#removeSignals());
    this.exit = this.#exit.reason;
    this.drained = this.#exit.drained;
    const systemd = Readiness.bridgeSystemd(s);
    const observer = this.#observer = Observer.of(s, endpoints, (h) => this.onDrained(h));
    const sockets = this.#sockets = new Sockets(s, observer);
    expose(this, s, () => sockets);
    const upgrades = this.#upgrades = new Upgrades({ shared: s, sockets, observer, exit });
    this.#ready = new Readiness({
      shared: s,
      sockets,
      exit,
      actions: () => upgrades.controlActions(),
      promoted: () => observer.promoted(),
    }, systemd);
  }

  /**
   * Starts the lifecycle. In a generation started by instar this reads the
   * previous generation's message and checks every fd it names; a malformed
   * message or a wrong fd throws `PROTOCOL_ERROR` (and tells the parent).
   */
  // deno-lint-ignore require-await -- async so that bad options reject rather than throw
  static async create(options: UpgraderOptions = {}): Promise<Upgrader> {
    const settings = resolveOptions(options);
    const up = new Upgrader(Shared.start(settings));
    up.#removeSignals = installSignals(settings.upgradeSignal, settings.stopSignals, {
      upgrade: () =>
        void up.#upgrades.fork("signal").catch(() => {/* reported through the events */}),
      stop: (count) => (count === 1 ? up.stop() : up.#exit.force()),
    });
    return up;
  }

  /** Where this generation is in its life. */
  get state(): State {
    return this.#s.state;
  }

  /** This process's pid. */
  get pid(): number {
    return host.pid();
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof UpgraderEvents>(event: K, handler: UpgraderHandler<K>): () => void {
    return this.#s.events.on(event, handler);
  }

  /**
   * Runs `hook` once this generation has drained, before the process exits;
   * hooks run in order and are awaited (close a database here).
   */
  onDrained(hook: () => void | Promise<void>): void {
    this.#exit.onDrained(hook);
  }

  /**
   * A listener for `spec`: the previous generation's socket when it passed
   * one for the same spec (port 0 keeps the port it got), systemd's when it
   * activated one by that name or address, a fresh one otherwise.
   */
  listen(spec: SocketSpec): Promise<Listener> {
    return this.#sockets.listen(spec);
  }

  /**
   * Serves HTTP with the runtime's own server (`Deno.serve` / `Bun.serve`, at
   * full speed) on a socket that survives upgrades, like
   * {@link Upgrader.listen}'s. One options object, like the runtime's own
   * server's: where to listen (`port` and `hostname`, or `path` with
   * `socketMode` for a Unix socket; `backlog`), the handler as `fetch` or
   * `handler`, the runtime's own options (typed with its own types) and
   * instar's (`mode`, `onFallback`, `drainDelayMs`, …). On a handover the
   * server stops accepting, reads what it accepted, and drains within the
   * Upgrader's `drainTimeout`: `drainTimeoutMs` is refused (`INVALID_ARGUMENT`).
   *
   * @typeParam WebSocketData Bun's `ws.data` type (as in `Bun.serve<WebSocketData>`).
   * @example
   * ```ts
   * import { Upgrader } from "@instar/instar";
   *
   * const up = await Upgrader.create();
   * await up.serve({ port: 8080, fetch: () => new Response("hello") });
   * await up.ready();
   * ```
   */
  serve<WebSocketData = undefined>(
    options: UpgraderServeOptions<WebSocketData>,
  ): Promise<Server> {
    // The old (listenOptions, options, handler) form fails here with the new form in the message.
    return this.#sockets.serve(options, arguments.length);
  }

  /**
   * A UDP or Unix datagram socket that survives upgrades: `{ hostname?, port }`
   * or `{ path, mode? }`. Iterate it for `{ data, addr }`, answer with
   * `send(data, addr)`. A new generation reads nothing before `ready()`; at
   * the handover the old one stops reading (datagrams wait in the shared
   * socket for the new one), hands out what it took, and can still send
   * until it exits. See docs/datagram.md.
   *
   * @example
   * ```ts
   * import { Upgrader } from "@instar/instar";
   *
   * const up = await Upgrader.create();
   * const sock = await up.listenDatagram({ hostname: "127.0.0.1", port: 5353 });
   * (async () => {
   *   for await (const { data, addr } of sock) await sock.send(data, addr);
   * })();
   * await up.ready();
   * ```
   */
  listenDatagram(spec: DatagramSpec): Promise<DatagramSocket> {
    return this.#sockets.listenDatagram(spec);
  }

  /**
   * Serves a `node:http` / `node:https` server that is not listening yet
   * (Express's `http.createServer(app)`, Fastify's `fastify.server`, Koa's
   * `http.createServer(app.callback())`) on a socket that survives upgrades,
   * at the runtime's native speed, draining like {@link Upgrader.serve}'s.
   *
   * @example
   * ```ts
   * import http from "node:http";
   * import { Upgrader } from "@instar/instar";
   *
   * const up = await Upgrader.create();
   * await up.serveNode(http.createServer((_req, res) => res.end("hello")), { port: 8080 });
   * await up.ready();
   * ```
   */
  serveNode(server: NodeHttpServer, options: UpgraderServeNodeOptions): Promise<NodeServing> {
    return this.#sockets.serveNode(server, options);
  }

  /**
   * Declares this generation ready: the PID file is written, unclaimed
   * inherited sockets are closed, accepting starts, and the previous
   * generation is told to drain. Everything that can fail runs before this
   * generation accepts a connection.
   */
  ready(): Promise<void> {
    return this.#ready.ready();
  }

  /**
   * Starts the next generation of the program as it now is on disk, hands it
   * the sockets, and resolves with its pid once it is ready; this generation
   * then drains. Rejects with an {@link UpgradeError} (and keeps serving) when
   * the new generation exits, is killed, is not ready in time, cannot be
   * executed, or breaks the protocol; with an `UpgradeRefusedError`
   * (nothing started) when an upgrade is in flight, `ready()` was not called,
   * this generation stops or is itself within its promotion window. With a
   * `promotionWindow` it resolves once the window has passed, and rejects
   * with reason `rolled-back` when the new generation exited or was declared
   * unhealthy within it (this generation then serves on).
   */
  upgrade(): Promise<number> {
    return this.#upgrades.fork("api");
  }

  /**
   * Stops this generation gracefully: stop accepting, drain, exit. Within a
   * promotion window, stopping the old generation stops the new one too;
   * stopping the new one hands the sockets back to the old one, which serves on.
   */
  stop(): void {
    this.#upgrades.cancel();
    const left = this.#s.probation?.leave("stopped within its promotion window") ?? false;
    this.#exit.begin(left ? "rolled-back" : "stop");
  }

  /**
   * Declares this new generation unhealthy within its promotion window: the
   * previous generation accepts again and serves on (it reports `rolled-back`
   * with `reason`), and this one drains what it accepted and exits. Resolves
   * once the previous generation has taken over. Rejects with
   * `NO_PROMOTION_WINDOW` when none is open (no `promotionWindow` on the
   * previous generation, the first generation, or the window has ended:
   * nobody can take over, so nothing changes), and `INVALID_ARGUMENT` for a
   * reason that is empty, longer than 1024 characters or has control characters.
   *
   * @example
   * ```ts
   * import { Upgrader } from "@instar/instar";
   *
   * const up = await Upgrader.create({ promotionWindow: 30_000 });
   * await up.ready();
   * const db = await fetch("http://127.0.0.1:5984/").catch(() => null);
   * if (!db?.ok) await up.unhealthy("database unreachable").catch((e) => console.error(e.message));
   * ```
   */
  unhealthy(reason: string): Promise<void> {
    return this.#ready.unhealthy(reason);
  }

  /** The addresses this generation listens and serves on. */
  addrs(): Addr[] {
    return this.#sockets.registry.endpoints.map((e) => e.addr);
  }

  /**
   * What this generation reports about itself (`instar status`). Counting the
   * HTTP servers' connections reads /proc/net/tcp: not for a hot path.
   */
  status(): Promise<StatusReport> {
    return this.#observer.status();
  }

  /**
   * This generation's metrics: state, open connections per endpoint (and of
   * the previous generation while it drains), requests or connections
   * accepted and upgrades by outcome since the first generation, the last
   * upgrade's report. Counting connections reads /proc off the event loop;
   * `metricsResponse(up)` serves it as Prometheus text.
   *
   * @example
   * ```ts
   * import { Upgrader } from "@instar/instar";
   *
   * const up = await Upgrader.create();
   * const m = await up.metrics();
   * console.log(m.generation, m.upgrades.succeeded);
   * ```
   */
  metrics(): Promise<Metrics> {
    return this.#observer.metrics();
  }
}
