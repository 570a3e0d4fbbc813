/**
 * The sockets of one generation (in the spirit of tableflip's `fds.go`), in
 * one place: each is claimed from the registry (inherited, then activated by
 * systemd, else fresh), opened, held until `ready()` while this generation
 * is still starting, served (a listener, an HTTP server, a datagram socket),
 * and recorded as its one `Endpoint`, which the registry passes on and the
 * drain drains. A socket that fails to open or serve is closed and its
 * claim released.
 *
 * @module
 */

import type { InstarError } from "../errors.ts";
import { close as closeFd } from "../ffi/mod.ts";
import { formatAddr } from "../ffi/sockaddr.ts";
import type { DatagramSocket, DatagramSocketControl } from "../net/datagram.ts";
import { type Listener, openListener, openListenerAt, openSocket } from "../net/listener.ts";
import { addressOf, type DatagramSpec, type SocketSpec } from "../net/specs.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../runtime/transplant.ts";
import { checkOneObject, splitListenOptions, splitNodeOptions } from "../serve/options.ts";
import {
  type DirectAddress,
  REQUEST_COUNTER,
  type Server,
  type Serving,
  startServe,
  startServeAt,
  type UpgraderServeOptions,
} from "../serve/serve.ts";
import type { NodeHttpServer, NodeServing, UpgraderServeNodeOptions } from "../serve/serve_node.ts";
import type { Addr, IdleConnections } from "../types.ts";
import { listenerEndpoint, serverEndpoint } from "./endpoints.ts";
import type { Observer } from "./observer.ts";
import { activatedListeners, Registry } from "./registry.ts";
import type { Shared } from "./shared.ts";

// serveNode(), datagram sockets and portable mode are imported by the first call that needs them,
// so that a generation that uses none of them never loads them (memory: docs/benchmarks.md, "A
// minimal app's memory"). Applications open their sockets at start-up: none of these imports is on
// an upgrade's path, where the files on disk may already be the next version's.

/** What a server started on a claimed socket gets from the lifecycle. */
type ServerSettings = {
  drainTimeoutMs: number;
  idleConnections: IdleConnections;
  onFallback(e: InstarError): void;
  onWarning(message: string): void;
};

/** The application's own hooks on `up.serve()` / `up.serveNode()`. */
type AppHooks = {
  onFallback?: (e: InstarError) => void;
  onWarning?: (message: string) => void;
};

/** Opens, serves and records the sockets of one generation. */
export class Sockets {
  /** What was claimed and is served: passed on at an upgrade, drained at the end. */
  readonly registry: Registry;
  #s: Shared;
  #observer: Observer;
  #paused: PausedSocket[] = [];
  #resumeOnReady: (() => void)[] = [];

  /** The sockets of `s`'s generation; `observer` counts what they accept. */
  constructor(s: Shared, observer: Observer) {
    this.#s = s;
    this.#observer = observer;
    // Activated sockets belong to the first generation; later ones inherit through instar.
    const sd = s.settings.systemd !== false && !s.portable;
    const activated = !s.link && sd ? activatedListeners(s.warn) : [];
    this.registry = new Registry(s.link?.hello ?? null, activated);
  }

  /** `up.listen()`: a listener that counts what it accepts. */
  async listen(spec: SocketSpec): Promise<Listener> {
    const portable = this.#s.portable ? await import("./portable.ts") : undefined;
    const { key, fd, activated } = this.registry.claim(spec);
    let listener: Listener;
    try {
      // What the accept loop recovers from (EMFILE) is a warning event, named by the socket's key.
      const warn = (message: string) => this.#s.warn(`${key}: ${message}`);
      listener = portable
        ? await openListenerAt(portable.portableAddress(spec))
        : await openListener(fd === undefined ? addressOf(spec) : { fd }, "auto", warn);
    } catch (err) {
      this.registry.unclaim(key);
      throw err;
    }
    if (fd !== undefined) this.#holdUntilReady(listener.fd);
    this.registry.add(
      portable
        ? portable.portableListenerEndpoint(key, listener)
        : listenerEndpoint(key, listener, activated),
    );
    this.#observer.countAccepts(key, listener);
    return listener;
  }

  /** `up.serve()` (called with `args` arguments): the runtime's own HTTP server, counting requests. */
  async serve<WebSocketData = undefined>(
    options: UpgraderServeOptions<WebSocketData>,
    args: number,
  ): Promise<Server> {
    checkOneObject("up.serve()", options, args);
    const { listen: spec, serve: serveOptions } = splitListenOptions(options);
    return await this.#onSocket(spec, (key, at, addr) => {
      const settings = this.#serverSettings(addr, serveOptions);
      const o = {
        ...settings,
        ...serveOptions,
        [REQUEST_COUNTER]: this.#observer.requestCounter(key),
        onFallback: settings.onFallback,
        onWarning: settings.onWarning,
      };
      return typeof at === "number" ? startServe(at, o) : startServeAt(at, o);
    });
  }

  /** `up.serveNode()`: a `node:http` server on the socket. */
  async serveNode(server: NodeHttpServer, options: UpgraderServeNodeOptions): Promise<NodeServing> {
    const { listen: spec, node } = splitNodeOptions(options);
    const loaded = import("../serve/serve_node.ts");
    loaded.catch(() => {}); // awaited below, once the socket is claimed: a failure rejects there
    return await this.#onSocket(spec, async (_key, at, addr) => {
      const { startServeNode, startServeNodeAt } = await loaded;
      const settings = this.#serverSettings(addr, node);
      const o = {
        ...settings,
        ...node,
        onFallback: settings.onFallback,
        onWarning: settings.onWarning,
      };
      return typeof at === "number"
        ? startServeNode(at, server, o)
        : startServeNodeAt(at, server, o);
    });
  }

  /**
   * instar/auto's raw `node:net` servers: `start` serves the claimed socket
   * (its fd, which the lifecycle keeps and closes; in portable mode the
   * address, where the server listens itself) and returns what it decides in
   * a drain; what it accepts is counted as `listen()`'s listeners are.
   */
  async serveCounted<T extends { addr: Addr; readonly accepted: number }>(
    spec: SocketSpec,
    start: (at: number | DirectAddress, addr: Addr) => Promise<Serving<T>>,
  ): Promise<T> {
    return await this.#onSocket(spec, async (key, at, addr) => {
      const started = await start(at, addr);
      this.#observer.countAccepts(key, started.server);
      return started;
    });
  }

  /** `up.listenDatagram()`: a datagram socket that reads nothing before `ready()` if adopted. */
  async listenDatagram(spec: DatagramSpec): Promise<DatagramSocket> {
    // Claimed at once, as before ready() closes what is unclaimed; the modules are loaded after.
    const { key, fd } = this.registry.claimDatagram(spec);
    const hold = fd !== undefined && this.#s.holding;
    let sock: DatagramSocketControl;
    let endpoint: typeof import("./datagram_endpoint.ts").datagramEndpoint;
    try {
      endpoint = (await import("./datagram_endpoint.ts")).datagramEndpoint;
      sock = this.#s.portable
        ? await (await import("../net/datagram_portable.ts")).openDatagramAt(spec)
        : await (await import("../net/datagram.ts")).openDatagram(
          fd === undefined ? spec : { fd },
          { paused: hold },
        );
    } catch (err) {
      this.registry.unclaim(key);
      throw err;
    }
    if (hold) this.#resumeOnReady.push(() => sock.resumeReceiving());
    this.registry.add(endpoint(key, sock));
    return sock;
  }

  /** At `ready()`: the sockets held until now accept and read. */
  resume(): void {
    for (const p of this.#paused.splice(0)) resumeSocket(p);
    for (const resume of this.#resumeOnReady.splice(0)) resume();
  }

  // Claims `spec`'s socket (inherited, activated or fresh), opens it and starts a server on it;
  // on failure the socket is closed and the claim released. The server's endpoint is built here
  // from what the server decides in a drain, and joins the registry (passed on, drained).
  async #onSocket<T extends { addr: Addr }>(
    spec: SocketSpec,
    start: (key: string, at: number | DirectAddress, addr: Addr) => Promise<Serving<T>>,
  ): Promise<T> {
    if (this.#s.portable) {
      return await (await import("./portable.ts")).serveDirect(this.registry, spec, start);
    }
    const { key, fd: claimed, activated } = this.registry.claim(spec);
    let socket: { fd: number; addr: Addr } | undefined;
    try {
      socket = await openSocket(claimed === undefined ? addressOf(spec) : { fd: claimed });
      const { fd, addr } = socket;
      const { server, drain } = await start(key, fd, addr);
      if (claimed !== undefined) this.#holdUntilReady(fd);
      this.registry.add(serverEndpoint(key, fd, addr, drain, activated));
      return server;
    } catch (err) {
      if (socket) closeFd(socket.fd);
      this.registry.unclaim(key);
      throw err;
    }
  }

  // What every HTTP server gets from the lifecycle: the drain timeout, and fallbacks reported.
  // The application's own onFallback is told too: it does not silence the lifecycle's event.
  /**
   * The lifecycle's settings for a server on `addr`, and the application's
   * `onFallback` / `onWarning` wrapped so that the lifecycle hears them first.
   */
  #serverSettings(addr: Addr, app: AppHooks): ServerSettings {
    return {
      drainTimeoutMs: this.#s.settings.drainTimeout,
      idleConnections: this.#s.settings.idleConnections,
      onFallback: (reason) => {
        this.#s.events.emit("serve-fallback", { addr: formatAddr(addr), reason });
        app.onFallback?.(reason);
      },
      onWarning: (message) => {
        this.#s.warn(`${formatAddr(addr)}: ${message}`);
        app.onWarning?.(message);
      },
    };
  }

  // (Synchronous right after the runtime started serving: its reactor has not run yet.)
  #holdUntilReady(fd: number): void {
    if (this.#s.holding) this.#paused.push(pauseSocket(fd));
  }
}
