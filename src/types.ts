/**
 * Types shared across instar's folders, in a file that imports nothing.
 *
 * @module
 */

/** A TCP address, shaped like `Deno.NetAddr`. */
export interface NetAddr {
  /** Always `"tcp"`. */
  transport: "tcp";
  /** Numeric IPv4 or IPv6 address. */
  hostname: string;
  /** Port number. */
  port: number;
}

/** A Unix socket address, shaped like `Deno.UnixAddr`. */
export interface UnixAddr {
  /** Always `"unix"`. */
  transport: "unix";
  /** Filesystem path, `@name` for the abstract namespace, or `""` when unnamed. */
  path: string;
}

/** Any address instar listens on. */
export type Addr = NetAddr | UnixAddr;

/** Why a generation stops: a newer one took over, or it was told to stop. */
export type ExitReason = "upgrade" | "stop";

/** Where a generation is in its life, for readiness probes and `instar status`. */
export type State = "starting" | "ready" | "upgrading" | "draining" | "stopped";

/** Why an upgrade that was started did not succeed. */
export type UpgradeFailure =
  | "exited"
  | "killed"
  | "ready-timeout"
  | "exec-failed"
  | "protocol-error"
  | "cancelled";

/** Why a trigger did not start an upgrade at all. */
export type UpgradeRefusal = "in-progress" | "not-ready" | "stopping";

/**
 * Everything a generation serves on a socket it passes on: a listener, an
 * HTTP server, the control socket. The lifecycle drains every endpoint the
 * same way (see `src/lifecycle/drain.ts`): pause, let the runtime deliver
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
   * No successor will serve the socket (a stop): new connections are refused
   * from now on (`shutdown(2)` of the listening socket), unless systemd
   * activated it, whose socket keeps queueing for the next start.
   */
  refuseNew(): void;
  /** Stops for good and resolves when every connection has ended by itself. */
  finish(): Promise<void>;
  /** Closes the connections that are still open; resolves with how many it cut. */
  forceClose(): Promise<number>;
  /** Closes instar's fds of the socket (never `shutdown(2)`: the next generation may use it). */
  release(): void;
}
