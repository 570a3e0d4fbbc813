/**
 * The lifecycle of one generation, as a small state machine: adopt the
 * sockets of the previous generation, tell it when this one is ready, start
 * the next one on demand, drain when this one must stop. Each step is a
 * module of its own; this file only orchestrates them.
 *
 * @module
 */

import process from "node:process";
import { InstarError, UpgradeError, type UpgradeRefusedError } from "../errors.ts";
import { close as closeFd } from "../ffi/mod.ts";
import { formatAddr } from "../ffi/sockaddr.ts";
import { listen, type Listener, openSocket } from "../net/listener.ts";
import { type DatagramSocket, type DatagramSocketControl, openDatagram } from "../net/datagram.ts";
import { checkOneObject, splitListenOptions } from "../serve/options.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../runtime/transplant.ts";
import { systemdNotifier } from "../systemd/notify.ts";
import type { StatusReport } from "../protocol/messages.ts";
import type { MessageSocket } from "../protocol/message_socket.ts";
import { serve, type Server, type UpgraderServeOptions } from "../serve/serve.ts";
import type { Addr, Endpoint, ExitReason, State } from "../types.ts";
import { type ParentLink, readHello, requestHandover } from "./child.ts";
import { ControlServer } from "./control.ts";
import { drain } from "./drain.ts";
import { forkUpgradeRefusal, handoverRefusal, initHazard } from "./init_check.ts";
import { listenerEndpoint, serverEndpoint, socketServerEndpoint } from "./endpoints.ts";
import {
  type NodeHttpServer,
  type NodeServing,
  nodeServingEndpoint,
  serveNode,
  splitNodeOptions,
  type UpgraderServeNodeOptions,
} from "../serve/serve_node.ts";
import { Emitter, refusal, runHooks, type UpgraderEvents, type UpgraderHandler } from "./events.ts";
import { type Attempt, awaitReady, handOver, type Passed, spawnGeneration } from "./generation.ts";
import { resolveOptions, type Settings, type UpgraderOptions } from "./options.ts";
import { removePidFileIfOurs, writePidFile } from "./pid_file.ts";
import { Probation, PromotionWindow, unhealthy } from "./promotion.ts";
import { Reaper } from "./reaper.ts";
import {
  activatedListeners,
  addressOf,
  type DatagramSpec,
  Registry,
  type SocketSpec,
} from "./registry.ts";
import { datagramEndpoint } from "./datagram_endpoint.ts";
import { statusReport } from "./status.ts";
import { installSignals } from "./signals.ts";
import { bridgeSystemd } from "./systemd_bridge.ts";
import { type Metrics, Observer } from "../observe/metrics.ts";

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

  #state: State = "starting";
  #settings: Settings;
  #link: ParentLink | null;
  #registry: Registry;
  #events = new Emitter();
  #reaper = new Reaper();
  #systemd: { ready(): void };
  #control: ControlServer | null = null;
  #paused: PausedSocket[] = [];
  #resumeOnReady: (() => void)[] = [];
  #readyCalled = false;
  #serving = false;
  #cancel: ((e: UpgradeError) => void) | null = null;
  #hooks: (() => void | Promise<void>)[] = [];
  #removeSignals: () => void = () => {};
  #window: PromotionWindow | null = null;
  #probation: Probation | null = null;
  // Detected once at start-up: PID 1 or a child of tini & co. refuses fork/exec upgrades.
  #initHazard = initHazard();
  #resolveExit!: (r: ExitReason) => void;
  #resolveDrained!: () => void;
  #observer: Observer;

  private constructor(settings: Settings, link: ParentLink | null) {
    this.#settings = settings;
    this.#link = link;
    this.generation = link?.hello.generation ?? 1;
    this.parentPid = link?.hello.pid ?? null;
    // Activated sockets belong to the first generation; later ones inherit through instar.
    const sd = settings.systemd !== false;
    const activated = !link && sd ? activatedListeners((m) => this.#events.warn(m)) : [];
    this.#registry = new Registry(link?.hello ?? null, activated);
    this.#systemd = bridgeSystemd(this.#events, systemdNotifier({ enabled: sd }));
    this.exit = new Promise((r) => (this.#resolveExit = r));
    this.drained = new Promise((r) => (this.#resolveDrained = r));
    this.#observer = new Observer({
      generation: this.generation,
      parentPid: this.parentPid,
      promotionWindow: link?.hello.promotionWindow ?? 0,
      carried: link?.hello.counters ?? null,
      state: () => this.#state,
      endpoints: () => this.#registry.endpoints,
      events: this.#events,
      onDrained: (hook) => this.onDrained(hook),
      controlPath: settings.controlSocket ?? null,
    });
  }

  /**
   * Starts the lifecycle. In a generation started by instar this reads the
   * previous generation's message and checks every fd it names; a malformed
   * message or a wrong fd throws `PROTOCOL_ERROR` (and tells the parent).
   */
  // deno-lint-ignore require-await -- async so that bad options reject rather than throw
  static async create(options: UpgraderOptions = {}): Promise<Upgrader> {
    const settings = resolveOptions(options);
    let link = readHello();
    if (!link && settings.controlSocket) link = requestHandover(settings.controlSocket);
    const up = new Upgrader(settings, link);
    up.#removeSignals = installSignals(settings.upgradeSignal, settings.stopSignals, {
      upgrade: () => void up.#upgrade("signal").catch(() => {/* reported through the events */}),
      stop: (count) => (count === 1 ? up.stop() : up.#forceExit()),
    });
    return up;
  }

  /** Where this generation is in its life. */
  get state(): State {
    return this.#state;
  }

  /** This process's pid. */
  get pid(): number {
    return process.pid;
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof UpgraderEvents>(event: K, handler: UpgraderHandler<K>): () => void {
    return this.#events.on(event, handler);
  }

  /**
   * Runs `hook` once this generation has drained, before the process exits;
   * hooks run in order and are awaited (close a database here).
   */
  onDrained(hook: () => void | Promise<void>): void {
    this.#hooks.push(hook);
  }

  /**
   * A listener for `spec`: the previous generation's socket when it passed
   * one for the same spec (port 0 keeps the port it got), systemd's when it
   * activated one by that name or address, a fresh one otherwise.
   */
  async listen(spec: SocketSpec): Promise<Listener> {
    const { key, fd, activated } = this.#registry.claim(spec);
    let listener: Listener;
    try {
      listener = await listen(fd === undefined ? addressOf(spec) : { fd });
    } catch (err) {
      this.#registry.unclaim(key);
      throw err;
    }
    if (fd !== undefined) this.#holdUntilReady(listener.fd);
    this.#registry.add(listenerEndpoint(key, listener, activated));
    this.#observer.countAccepts(key, listener);
    return listener;
  }

  /**
   * Serves HTTP with the runtime's own server (`Deno.serve` / `Bun.serve`, at
   * full speed) on a socket that survives upgrades, like
   * {@link Upgrader.listen}'s. One options object, like the runtime's own
   * server's: where to listen (`port` and `hostname`, or `path` with
   * `socketMode` for a Unix socket; `backlog`), the handler as `fetch` or
   * `handler`, the runtime's own options (typed with its own types) and
   * instar's (`mode`, `onFallback`, `drainTimeoutMs`, …). On a handover the
   * server stops accepting, reads what it accepted, and drains within the
   * drain timeout.
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
  async serve<WebSocketData = undefined>(
    options: UpgraderServeOptions<WebSocketData>,
  ): Promise<Server> {
    // The old (listenOptions, options, handler) form fails here with the new form in the message.
    checkOneObject("up.serve()", options, arguments.length);
    const { listen: spec, serve: serveOptions } = splitListenOptions(options);
    return await this.#onSocket(spec, async ({ key, fd, addr, activated }) => {
      const counted = this.#observer.countRequests(key, serveOptions);
      const settings = this.#serverSettings(addr, serveOptions.onFallback);
      const server = await serve(fd, { ...settings, ...counted, onFallback: settings.onFallback });
      return [server, serverEndpoint(key, fd, addr, server, activated)];
    });
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
  async listenDatagram(spec: DatagramSpec): Promise<DatagramSocket> {
    const { key, fd } = this.#registry.claimDatagram(spec);
    const hold = fd !== undefined && this.#state === "starting" && this.#link !== null;
    let sock: DatagramSocketControl;
    try {
      sock = await openDatagram(fd === undefined ? spec : { fd }, { paused: hold });
    } catch (err) {
      this.#registry.unclaim(key);
      throw err;
    }
    if (hold) this.#resumeOnReady.push(() => sock.resumeReceiving());
    this.#registry.add(datagramEndpoint(key, sock));
    return sock;
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
  async serveNode(
    server: NodeHttpServer,
    options: UpgraderServeNodeOptions,
  ): Promise<NodeServing> {
    const { listen: spec, node } = splitNodeOptions(options);
    return await this.#onSocket(spec, async ({ key, fd, addr, activated }) => {
      const settings = this.#serverSettings(addr, node.onFallback);
      const serving = await serveNode(fd, server, {
        ...settings,
        ...node,
        onFallback: settings.onFallback,
      });
      return [
        serving,
        socketServerEndpoint(key, fd, addr, nodeServingEndpoint(serving), activated),
      ];
    });
  }

  // Claims `spec`'s socket (inherited, activated or fresh), opens it and starts a server on it;
  // on failure the socket is closed and the claim released. An inherited socket is held until
  // ready(), and the server's endpoint joins the registry (passed on, drained).
  async #onSocket<T>(
    spec: SocketSpec,
    start: (s: { key: string; fd: number; addr: Addr; activated: boolean }) => Promise<
      [T, Endpoint]
    >,
  ): Promise<T> {
    const { key, fd: claimed, activated } = this.#registry.claim(spec);
    let socket: { fd: number; addr: Addr } | undefined;
    try {
      socket = await openSocket(claimed === undefined ? addressOf(spec) : { fd: claimed });
      const [server, endpoint] = await start({ key, ...socket, activated });
      if (claimed !== undefined) this.#holdUntilReady(socket.fd);
      this.#registry.add(endpoint);
      return server;
    } catch (err) {
      if (socket) closeFd(socket.fd);
      this.#registry.unclaim(key);
      throw err;
    }
  }

  // What every HTTP server gets from the lifecycle: the drain timeout, and fallbacks reported.
  // The application's own onFallback is told too: it does not silence the lifecycle's event.
  #serverSettings(
    addr: Addr,
    app: ((reason: InstarError) => void) | undefined,
  ): { drainTimeoutMs: number; onFallback(e: InstarError): void } {
    return {
      drainTimeoutMs: this.#settings.drainTimeout,
      onFallback: (reason) => {
        this.#events.emit("serve-fallback", { addr: formatAddr(addr), reason });
        app?.(reason);
      },
    };
  }

  // A new generation accepts nothing on a shared socket before it is ready: the
  // previous one serves until then, and a new version that dies before ready()
  // takes no connection with it. (Synchronous right after the runtime started
  // serving: its reactor has not run yet.)
  #holdUntilReady(fd: number): void {
    if (this.#state === "starting" && this.#link) this.#paused.push(pauseSocket(fd));
  }

  /**
   * Declares this generation ready: the PID file is written, unclaimed
   * inherited sockets are closed, accepting starts, and the previous
   * generation is told to drain. Everything that can fail runs before this
   * generation accepts a connection.
   */
  async ready(): Promise<void> {
    if (this.#state !== "starting" || this.#readyCalled) {
      throw new InstarError(
        "INVALID_STATE",
        `ready() called in state ${this.#state}; call it once`,
      );
    }
    this.#readyCalled = true;
    const path = this.#settings.controlSocket;
    if (path) this.#control = await ControlServer.open(path, this.#registry.takeControl(path));
    this.#stillStarting();
    this.#registry.closeUnclaimed((m) => this.#events.warn(m));
    await this.#control?.start(this.#controlActions());
    this.#stillStarting();
    if (this.#settings.pidFile) this.#writePidFile(this.#settings.pidFile);
    for (const p of this.#paused.splice(0)) resumeSocket(p);
    for (const resume of this.#resumeOnReady.splice(0)) resume();
    if (this.#link) {
      this.#probation = Probation.begin(
        this.#link,
        (reason) => {
          this.#events.warn(`the previous generation took over again: ${reason}`);
          this.#beginExit("rolled-back");
        },
        (m) => this.#events.warn(m),
        () => this.#observer.promoted(),
      );
    }
    this.#link = null;
    // A later generation is announced by the one it replaces (MAINPID + READY).
    if (this.generation === 1) this.#systemd.ready();
    this.#setState("ready");
  }

  // A stop() while ready() awaited: this generation must not start accepting or say ready.
  #stillStarting(): void {
    if (this.#state !== "starting") {
      throw new InstarError(
        "INVALID_STATE",
        `ready() interrupted: the generation is ${this.#state}`,
      );
    }
  }

  // Before anything accepts: if it fails, the control server stops again and nothing was said.
  #writePidFile(path: string): void {
    try {
      writePidFile(path, process.pid);
    } catch (err) {
      this.#control?.pauseAccepting();
      throw err;
    }
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
    return this.#upgrade("api");
  }

  #upgrade(trigger: string): Promise<number> {
    this.#observer.trigger(trigger);
    return this.#run(
      (generation, sockets) => spawnGeneration(this.#settings, generation, sockets, this.#reaper),
      forkUpgradeRefusal(this.#initHazard),
    );
  }

  /**
   * Stops this generation gracefully: stop accepting, drain, exit. Within a
   * promotion window, stopping the old generation stops the new one too;
   * stopping the new one hands the sockets back to the old one, which serves on.
   */
  stop(): void {
    this.#window?.stop();
    this.#cancel?.(new UpgradeError("cancelled", "this generation was told to stop"));
    const left = this.#probation?.leave("stopped within its promotion window") ?? false;
    this.#beginExit(left ? "rolled-back" : "stop");
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
    return unhealthy(this.#probation, reason);
  }

  /** The addresses this generation listens and serves on. */
  addrs(): Addr[] {
    return this.#registry.endpoints.map((e) => e.addr);
  }

  /**
   * What this generation reports about itself (`instar status`). Counting the
   * HTTP servers' connections reads /proc/net/tcp: not for a hot path.
   */
  async status(): Promise<StatusReport> {
    const s = await statusReport(
      this.generation,
      this.#state,
      this.parentPid,
      this.#registry.endpoints,
    );
    return { ...s, lastUpgrade: this.#observer.lastUpgrade() };
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

  #setState(state: State): void {
    this.#state = state;
    this.#events.emit("state", { state });
  }

  #controlActions() {
    return {
      status: () => this.status(),
      upgrade: (spawned: (pid: number) => void, trigger: string) => {
        const off = this.on("upgrade-spawned", ({ pid }) => spawned(pid));
        return this.#upgrade(trigger).finally(off);
      },
      lastReport: () => this.#observer.lastUpgrade(),
      report: (pid: number, report: unknown, counters: unknown) =>
        this.#observer.adopt(pid, report, counters),
      handover: (peer: MessageSocket, fd: number, pid: number) => {
        this.#observer.trigger("handover");
        return this.#run(
          (generation, sockets) => handOver(peer, fd, pid, generation, sockets),
          handoverRefusal(this.#initHazard, pid),
        );
      },
      warn: (m: string) => this.#events.warn(m),
    };
  }

  /** One upgrade, however the next generation comes to exist. This generation serves on whatever happens. */
  async #run(
    start: (generation: number, sockets: Passed) => Attempt,
    blocked: UpgradeRefusedError | null = null,
  ): Promise<number> {
    const refused = refusal(this.#state) ?? this.#probation?.refusal() ?? blocked;
    if (refused) {
      this.#events.emit("upgrade-refused", { error: refused });
      throw refused;
    }
    this.#setState("upgrading");
    this.#events.emit("upgrade-started", { generation: this.generation + 1 });
    const started = performance.now();
    let attempt: Attempt | undefined;
    const cancelled = new Promise<UpgradeError>((r) => (this.#cancel = r));
    try {
      const c = this.#control;
      attempt = start(this.generation + 1, {
        ...this.#registry.passable(c && { path: c.path, fd: c.fd }),
        promotionWindow: this.#settings.promotionWindow,
        counters: this.#observer.carry(),
      });
      this.#events.emit("upgrade-spawned", { pid: attempt.pid });
      await awaitReady(attempt, this.#settings.readyTimeout, cancelled);
    } catch (err) {
      await attempt?.abandon((err as UpgradeError).reason === "cancelled");
      return this.#failed(err);
    } finally {
      this.#cancel = null;
    }
    const ms = performance.now() - started;
    if (this.#settings.promotionWindow > 0) await this.#promote(attempt);
    attempt.release();
    this.#events.emit("upgrade-succeeded", { pid: attempt.pid, ms });
    this.#beginExit("upgrade");
    return attempt.pid;
  }

  // The promotion window (promotion.ts): returns once it passed; throws when this generation serves on.
  async #promote(attempt: Attempt): Promise<void> {
    const generation = this.generation + 1, ms = this.#settings.promotionWindow;
    this.#window = new PromotionWindow(attempt, {
      windowMs: ms,
      generation,
      endpoints: this.#registry.endpoints,
      controlFd: this.#control?.fd ?? null,
      reaper: this.#reaper,
      drainTimeout: this.#settings.drainTimeout,
      pidFile: this.#settings.pidFile,
      warn: (m) => this.#events.warn(m),
    });
    this.#events.emit("promotion-window", { pid: attempt.pid, generation, ms });
    const failed = await this.#window.outcome;
    this.#window = null;
    if (!failed) return;
    if (failed.error.reason === "cancelled") this.#failed(failed.error);
    this.#events.emit("rolled-back", { pid: attempt.pid, generation, reason: failed.reason });
    this.#setState("ready");
    throw failed.error;
  }

  #failed(err: unknown): never {
    const error = err instanceof UpgradeError
      ? err
      : new UpgradeError("protocol-error", (err as Error).message, {}, { cause: err });
    if (this.#state === "upgrading") this.#setState("ready");
    this.#events.emit("upgrade-failed", { error });
    throw error;
  }

  #beginExit(reason: ExitReason): void {
    if (this.#state === "draining" || this.#state === "stopped") return;
    // A generation still starting accepts nothing yet, and shares its sockets with the one
    // serving: it must never shut them down (only its own fds close).
    this.#serving = this.#state === "ready" || this.#state === "upgrading";
    this.#setState("draining");
    this.#resolveExit(reason);
    this.#events.emit("draining", { reason });
    void this.#drain(reason);
  }

  async #drain(reason: ExitReason): Promise<void> {
    const control = this.#control;
    this.#control = null;
    // The next generation answers the control socket from now on; on stop nobody does.
    const ending = control ? drain([control], { timeoutMs: 1000, delayMs: 0 }) : Promise.resolve();
    if (control && reason === "stop") control.unlink();
    const warn = (message: string) => this.#events.warn(message);
    const { forced } = await drain(this.#registry.endpoints, {
      timeoutMs: this.#settings.drainTimeout,
      warn,
      refuse: reason === "stop" && this.#serving,
    });
    await ending;
    if (reason === "stop" && this.#settings.pidFile) {
      removePidFileIfOurs(this.#settings.pidFile, process.pid);
    }
    this.#setState("stopped");
    this.#events.emit("drained", { forced });
    await runHooks(this.#hooks, (m) => this.#events.warn(m));
    this.#removeSignals();
    this.#resolveDrained();
    // Code after `await up.drained` runs first: it was queued when drained resolved.
    if (this.#settings.exitAfterDrain) setTimeout(() => process.exit(0), 0);
  }

  // A second stop signal: the operator does not want to wait for the drain.
  #forceExit(): void {
    const all = [...this.#registry.endpoints, ...(this.#control ? [this.#control] : [])];
    void Promise.all(all.map((e) => e.forceClose().catch(() => 0))).finally(() => process.exit(1));
  }
}
