/**
 * The contract between src/serve/ and the runtime adapters: what serve.ts
 * tells an adapter when it starts a native server (src/runtime/serve_deno.ts,
 * serve_bun.ts), what the adapter hands back, and what differs between the
 * runtimes' `node:http` (serve_node_deno.ts, serve_node_bun.ts). It lives in
 * runtime/ because the adapters implement it and serve/ sits above them.
 *
 * @module
 */

import type * as http from "node:http";
import type { Addr, NetAddr } from "../ffi/sockaddr.ts";

/** What a runtime adapter is told when starting its native server. */
export interface AdapterStart {
  /** The runtime's server options: instar's, the handler and the listen options removed. */
  options: Record<string, unknown>;
  /** The handler, given as `fetch` or as `handler` (undefined: Bun's `routes` alone). */
  handler: ((request: Request, infoOrServer: never) => unknown) | undefined;
  /**
   * Where to start: a loopback address (port 0), or a Unix socket path; in
   * portable mode the real address, port included (no socket is moved under it).
   */
  listenOn: { hostname: string; port?: number } | { path: string };
  /** The real address (what user callbacks must see). */
  real: () => { addr: Addr; url: URL };
  /** True once serving through the proxy: remote addresses must be looked up with `remoteOf`. */
  proxied: boolean;
  /** Through the proxy: the client's real address behind a proxied loopback port. */
  remoteOf: (loopbackPort: number) => NetAddr | undefined;
  /** Calls `shutdown()` of the instar server (for Deno's `signal` option). */
  shutdown: () => void;
  /**
   * Set by serve.ts once the server runs on the socket: moves the socket under
   * a native server restarted on `throwaway` (Deno's accept loop ends for good
   * at EMFILE). Throws when that is not possible (yet). Unset: no restart.
   */
  reattach?: (throwaway: Addr) => void;
  /**
   * Set by serve.ts for a Unix socket: the path a restarted native server
   * starts on (the first throwaway's directory is gone). Unset: `listenOn`.
   */
  restartOn?: () => string;
  /** Set by serve.ts behind the proxy: a restarted native server listens on the first one's address. */
  sameAddress?: boolean;
  /** Reports a recovery worth a log line (a `warning` event in the lifecycle). */
  warn: (message: string) => void;
  /**
   * Counts requests: one increment of element 0 each time the handler is
   * called, in the one wrapper the adapter puts around it (a second layer of
   * wrapping costs CPU per request on Deno). Unset: not counted.
   */
  count?: Float64Array;
}

/** A native server started by an adapter. */
export interface NativeServer {
  /** The runtime's server object. */
  native: unknown;
  /** The address it listens on (the throwaway). */
  throwaway: Addr;
  /** Whether TLS is on (for the URL scheme). */
  tls: boolean;
  /**
   * Whether a connection may speak HTTP/2, whose clients move to a new
   * connection only on GOAWAY (sent by the graceful end), never on `Connection: close`.
   */
  multiplexed: boolean;
  /**
   * From now on (`true`) every HTTP/1.1 response asks the client to close the
   * connection after it (`Connection: close`), so a keep-alive client never
   * has a request on its way when the connection closes; `false` undoes it.
   */
  draining(on: boolean): void;
  /** Resolves once no response went out for `idleMs` since draining began, or after `maxMs`. */
  quiet(idleMs: number, maxMs: number): Promise<void>;
  /**
   * Graceful end, after accepting has stopped: idle connections are closed,
   * in-flight requests, streams and WebSockets run until they end.
   */
  finish(): Promise<void>;
  /**
   * WebSockets still open get close code 1012 (Service Restart); resolves when
   * they closed or after `ms`, with how many closed.
   */
  closeWebSockets(ms: number): Promise<number>;
  /**
   * Starts closing the open WebSockets with 1012, spread over `windowMs`, so
   * that their clients reconnect a few at a time. HTTP/2 connections are not
   * spread: neither runtime's server sends GOAWAY to one connection alone
   * (Deno's graceful end sends it to all at once).
   */
  closeSpread(windowMs: number): void;
  /** Stops the native server now; its connections must already be cut. */
  close(): Promise<void>;
  /**
   * Closes the listening socket at once while every connection goes on
   * (Bun's `stop(false)`); absent where the runtime has no such step (Deno's
   * `shutdown()` also closes idle connections and WebSockets). Portable mode's
   * stop, where instar has no fd to refuse connections with.
   */
  stopListening?(): void;
  /** Resolves when the native server has finished. */
  finished: Promise<void>;
  /** Reports the listening address to the user (Deno's onListen). */
  listening(addr: Addr, url: URL): void;
  /** Keeps the process alive while the server runs. */
  ref(): void;
  /** Lets the process exit while the server runs. */
  unref(): void;
}

/** The runtime branch: starts the native server on a loopback port. */
export interface ServeAdapter {
  /** Starts the native server described by `s`. */
  start(s: AdapterStart): NativeServer;
}

/** What differs between the runtimes' `node:http` (src/runtime/serve_node_*.ts). */
export interface NodeServeAdapter {
  /** The path `mode: "auto"` takes first. */
  readonly auto: "transplant" | "fd";
  /** Listens on (a duplicate of) `fd` with the runtime's own `listen({ fd })`. */
  listenOnFd(server: http.Server, fd: number): Promise<void>;
}
