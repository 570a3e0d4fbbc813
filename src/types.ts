/**
 * Types shared across instar's folders, in a file that imports nothing.
 *
 * @module
 */

/**
 * A TCP address, shaped like `Deno.NetAddr`.
 *
 * @example
 * ```ts
 * import type { NetAddr } from "@instar/instar";
 *
 * const a: NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 8080 };
 * ```
 */
export interface NetAddr {
  /** Always `"tcp"`. */
  transport: "tcp";
  /** Numeric IPv4 or IPv6 address. */
  hostname: string;
  /** Port number. */
  port: number;
}

/**
 * A Unix socket address, shaped like `Deno.UnixAddr`.
 *
 * @example
 * ```ts
 * import type { UnixAddr } from "@instar/instar";
 *
 * const a: UnixAddr = { transport: "unix", path: "/run/app/http.sock" };
 * ```
 */
export interface UnixAddr {
  /** Always `"unix"`. */
  transport: "unix";
  /** Filesystem path, `@name` for the abstract namespace, or `""` when unnamed. */
  path: string;
}

/**
 * Any address instar listens on.
 *
 * @example
 * ```ts
 * import { type Addr, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
 * const addr: Addr = listener.addr;
 * console.log(addr.transport === "tcp" ? addr.port : addr.path);
 * ```
 */
export type Addr = NetAddr | UnixAddr;

/**
 * Why a generation stops: a newer one took over (`"upgrade"`), it was told to
 * stop (`"stop"`), or it was a new generation in its promotion window and the
 * previous generation took the sockets back (`"rolled-back"`: it drains what it
 * accepted and never shuts the shared sockets down).
 *
 * @example
 * ```ts
 * import { type ExitReason, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const why: ExitReason = await up.exit; // "upgrade", "stop" or "rolled-back"
 * ```
 */
export type ExitReason = "upgrade" | "stop" | "rolled-back";

/**
 * What a draining HTTP server does with keep-alive connections that are idle
 * (no request in flight). `"keep"`: they stay open; the next request on each
 * is answered with `Connection: close`, and they close when the client closes
 * them or at the drain timeout (cut). A client that reuses an idle connection
 * without checking whether the server closed it (Python's `http.client`, an
 * upstream keep-alive pool) never sends into a closed connection, but the old
 * generation lives until its clients leave (at most the drain timeout).
 * `"close-when-quiet"`: once the server answered nothing for a second, they
 * are closed (the old generation ends within seconds; such a client may lose
 * the request it sends at that moment). docs/design.md weighs the two.
 *
 * @example
 * ```ts
 * import { type IdleConnections, Upgrader } from "@instar/instar";
 *
 * const idleConnections: IdleConnections = "keep";
 * const up = await Upgrader.create({ idleConnections });
 * ```
 */
export type IdleConnections = "keep" | "close-when-quiet";

/**
 * Where a generation is in its life, for readiness probes and `instar status`.
 *
 * @example
 * ```ts
 * import { type State, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const state: State = up.state; // e.g. answer a readiness probe with 200 only when "ready"
 * ```
 */
export type State = "starting" | "ready" | "upgrading" | "draining" | "stopped";

/**
 * Why an upgrade that was started did not succeed.
 *
 * @example
 * ```ts
 * import { type UpgradeFailure, UpgradeError, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * await up.upgrade().catch((err) => {
 *   if (err instanceof UpgradeError) {
 *     const reason: UpgradeFailure = err.reason;
 *     console.error(reason);
 *   }
 * });
 * ```
 */
export type UpgradeFailure =
  | "exited"
  | "killed"
  | "ready-timeout"
  | "exec-failed"
  | "protocol-error"
  // This process or the system ran out of fds (EMFILE/ENFILE) while starting the next generation.
  | "no-fds"
  | "cancelled"
  // The new generation exited or was declared unhealthy within the promotion window: this one serves on.
  | "rolled-back";

/**
 * Why a trigger did not start an upgrade at all.
 *
 * @example
 * ```ts
 * import { type UpgradeRefusal, UpgradeRefusedError, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * await up.upgrade().catch((err) => {
 *   if (err instanceof UpgradeRefusedError) {
 *     const reason: UpgradeRefusal = err.reason; // "not-ready" here: ready() was not called
 *     console.log(reason);
 *   }
 * });
 * ```
 */
export type UpgradeRefusal =
  | "in-progress"
  | "not-ready"
  | "stopping"
  // This generation is in its promotion window: the previous one may still take over again.
  | "promotion-window"
  // fork/exec upgrades only (src/lifecycle/init_check.ts): this generation is PID 1 of its pid
  // namespace, or its parent is an init that exits with its only child (tini, dumb-init, …)
  | "pid-1"
  | "init-parent"
  // Portable mode (src/runtime/platform.ts: off Linux, Deno without -A, INSTAR_PORTABLE=1): no socket
  // can be passed to a next generation, so every trigger is refused and this one serves on.
  | "unsupported-platform";

/**
 * Everything a generation serves on a socket it passes on: a listener, an
 * HTTP server, the control socket. The lifecycle drains every endpoint the
 * same way (see `src/net/drain.ts`): pause, let the runtime deliver
 * what it accepted, finish gracefully within the drain timeout, force-close
 * what is left, release the fd.
 */
export interface Endpoint {
  /** What the program asked for (`tcp:0.0.0.0:8080`, `unix:/run/app.sock`, `name:web`, `control`). */
  readonly key: string;
  /** instar's own close-on-exec fd of the listening socket: what the next generation gets. */
  readonly fd: number;
  /** The address the socket is bound to. */
  readonly addr: Addr;
  /** Open connections; `null` when unknown. Counting may read /proc: not for a hot path. */
  connections(): Promise<number | null>;
  /** Stops accepting; connections stay queued in the kernel for whoever else listens. */
  pauseAccepting(): void;
  /** Accepts again after {@link Endpoint.pauseAccepting}. */
  resumeAccepting(): void;
  /**
   * No successor will serve the socket (a stop): the connections already in
   * the accept queue are taken (briefly), then accepting stops and new
   * connections are refused from then on (`shutdown(2)` of the listening
   * socket), unless systemd activated it: its socket keeps queueing for the
   * next start.
   */
  refuseNew(): Promise<void>;
  /**
   * Stops for good and resolves when every connection has ended by itself.
   * `spreadMs` (the drain's close spread): connections told to go at once
   * otherwise (a `node:http2` server's GOAWAY) are told a few at a time over it.
   */
  finish(spreadMs?: number): Promise<void>;
  /**
   * Starts closing its long-lived connections (WebSockets: 1012) spread over
   * `windowMs`, ahead of {@link Endpoint.forceClose} at the drain timeout, so
   * that their clients reconnect a few at a time. Absent: nothing to spread.
   */
  closeSpread?(windowMs: number): void;
  /** Closes the connections that are still open; resolves with how many it cut. */
  forceClose(): Promise<number>;
  /** Closes instar's fds of the socket (never `shutdown(2)`: the next generation may use it). */
  release(): void;
}
