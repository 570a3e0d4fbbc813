/**
 * The types of `serveNode()` and `up.serveNode()`. What the runtime adapters
 * (src/runtime/serve_node_deno.ts, serve_node_bun.ts) implement is in
 * src/runtime/serve_types.ts.
 *
 * @module
 */

import type * as http from "node:http";
import type { InstarError } from "../errors.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import type { ServeListenOptions, ServeMode } from "./types.ts";
import type { DedupeMethod } from "../runtime/transplant.ts";
import type { IdleConnections } from "../types.ts";

/**
 * A `node:http` or `node:https` server that is not listening yet: Express's
 * `http.createServer(app)`, Fastify's `fastify.server` after
 * `await fastify.ready()`, Koa's `http.createServer(app.callback())`.
 *
 * @example
 * ```ts
 * import http from "node:http";
 * import type { NodeHttpServer } from "@instar/instar";
 *
 * const server: NodeHttpServer = http.createServer((_req, res) => res.end("hello"));
 * ```
 */
export type NodeHttpServer = http.Server;

/**
 * How a `node:http` server ended up on the socket: `transplant` (started on a
 * throwaway address, the socket moved under its fd: native speed), `fd` (the
 * runtime's own `listen({ fd })`: Deno), `fallback` (a `node:net` proxy to
 * the server on its throwaway address), `direct` (portable mode: the server
 * listens on the address itself).
 *
 * @example
 * ```ts
 * import type { NodeServePath } from "@instar/instar";
 *
 * const path: NodeServePath = "transplant";
 * ```
 */
export type NodeServePath = "transplant" | "fd" | "fallback" | "direct";

/**
 * instar's options of `serveNode()`.
 *
 * @example
 * ```ts
 * import type { NodeServeOptions } from "@instar/instar";
 *
 * const options: NodeServeOptions = { mode: "auto", drainTimeoutMs: 10_000 };
 * ```
 */
export interface NodeServeOptions {
  /**
   * `auto` (the default) takes the runtime's fastest path (Bun: transplant,
   * falling back to the proxy with a report; Deno: `listen({ fd })`);
   * `transplant` transplants or throws `TRANSPLANT_UNSUPPORTED`; `fallback`
   * proxies through `node:net`.
   */
  mode?: ServeMode;
  /** Called when `auto` falls back, with the reason. Without it instar warns on the console. */
  onFallback?: (reason: InstarError) => void;
  /**
   * Called (at most once per 10 s) when the server recovers from trouble: on Deno, a
   * `node:net` server that stopped accepting at the fd limit (EMFILE) listens anew. Without it
   * instar warns on the console; `up.serveNode()` reports it as a `warning` event.
   */
  onWarning?: (message: string) => void;
  /** How long to keep reading connections already accepted before closing. Default 250 ms. */
  drainDelayMs?: number;
  /**
   * How long requests and WebSockets may run on during a shutdown. Default 30 s.
   * `serveNode(fd)` only: `up.serveNode()` refuses it, its servers drain within the
   * Upgrader's `drainTimeout` (`Upgrader.create({ drainTimeout })`).
   */
  drainTimeoutMs?: number;
  /**
   * What the drain does with idle keep-alive connections ({@link IdleConnections}).
   * `up.serveNode()` takes the Upgrader's (`Upgrader.create({ idleConnections })`) unless given here.
   */
  idleConnections?: IdleConnections;
  /** Forces the kcmp-free epoll dedupe of the transplant (for tests). */
  dedupe?: DedupeMethod;
  /** The reactor event masks the transplant accepts (for tests: `{}` forces the fallback). */
  knownMasks?: Readonly<Record<number, string>>;
}

/**
 * The options of `up.serveNode()`: where to listen and instar's options,
 * except `drainTimeoutMs` (`INVALID_ARGUMENT`): the drain timeout is the
 * Upgrader's, `Upgrader.create({ drainTimeout })`.
 *
 * @example
 * ```ts
 * import type { UpgraderServeNodeOptions } from "@instar/instar";
 *
 * const options: UpgraderServeNodeOptions = { hostname: "127.0.0.1", port: 8080 };
 * ```
 */
export type UpgraderServeNodeOptions =
  & ServeListenOptions
  & Omit<NodeServeOptions, "drainTimeoutMs">;

/**
 * A `node:http` server that instar serves on a socket.
 *
 * @example
 * ```ts
 * import http from "node:http";
 * import { Upgrader, type NodeServing } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const s: NodeServing = await up.serveNode(http.createServer((_q, r) => r.end("hi")), { port: 8080 });
 * console.log(s.mode, s.url.href);
 * ```
 */
export interface NodeServing {
  /** The server that was given. */
  readonly server: NodeHttpServer;
  /** How it got onto the socket. */
  readonly mode: NodeServePath;
  /** Why `auto` fell back, or `undefined`. */
  readonly fallbackReason: InstarError | undefined;
  /** The socket's address (also what `server.address()` reports). */
  readonly addr: Addr;
  /** `http://…` or `https://…` (`http+unix://…` for a Unix socket). */
  readonly url: URL;
  /** Resolves once the server has closed and every connection ended. */
  readonly finished: Promise<void>;
  /** Stops accepting (connections queue in the kernel) and answers with `Connection: close`. */
  pauseAccepting(): boolean;
  /** Undoes {@link NodeServing.pauseAccepting}. */
  resumeAccepting(): boolean;
  /** Drains: stop accepting, finish what is in flight within the drain timeout, close. */
  shutdown(): Promise<void>;
}
