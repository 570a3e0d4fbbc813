/**
 * The types of {@link serve} and `up.serve()`. The seam between serve.ts and
 * the runtime adapters (src/runtime/serve_deno.ts, serve_bun.ts) is in
 * src/runtime/serve_types.ts, below both.
 *
 * The runtime's own server options are read off the runtime's type
 * declarations when they are loaded: `typeof globalThis` has a `Deno` under
 * `deno check` and a `Bun` with bun-types. Naming `Deno.ServeTcpOptions` or
 * `Bun.Serve.Options` directly would not compile in the other runtime; a
 * conditional type over `typeof globalThis` gives the real types where they
 * exist and {@link PortableServeOptions} elsewhere.
 *
 * @module
 */

import type { InstarError } from "../errors.ts";
import type { Addr, NetAddr } from "../ffi/sockaddr.ts";
import type { DedupeMethod } from "../runtime/transplant.ts";
import type { IdleConnections } from "../types.ts";

// serve.ts reads the adapter contract from here with the option types.
export type { AdapterStart, NativeServer } from "../runtime/serve_types.ts";

// ---------------------------------------------------------------- the runtime's options

/**
 * What a Deno-style handler gets besides the request (as `Deno.ServeHandlerInfo`),
 * where Deno's own types are not loaded.
 *
 * @example
 * ```ts
 * import type { ServeHandlerInfo } from "@instar/instar";
 *
 * const log = (info: ServeHandlerInfo) => console.log(info.remoteAddr.hostname);
 * ```
 */
export interface ServeHandlerInfo {
  /** The client's address (the real one, also behind the fallback proxy). */
  readonly remoteAddr: NetAddr;
  /** Resolves when the response has been sent. */
  readonly completed: Promise<void>;
}

/**
 * A request handler where neither runtime's types are loaded: Deno calls it
 * with a {@link ServeHandlerInfo}, Bun with its server object.
 *
 * @example
 * ```ts
 * import type { ServeHandler } from "@instar/instar";
 *
 * const hello: ServeHandler = () => new Response("hello");
 * ```
 */
export type ServeHandler = (
  request: Request,
  // deno-lint-ignore no-explicit-any -- a Deno.ServeHandlerInfo or a Bun.Server: either runtime's
  infoOrServer: any,
) => Response | undefined | Promise<Response | undefined>;

/**
 * The runtime's server options where neither Deno's nor Bun's type
 * declarations are loaded: the handler (`fetch` or `handler`) and any other
 * option, passed on unchecked.
 *
 * @example
 * ```ts
 * import type { PortableServeOptions } from "@instar/instar";
 *
 * const options: PortableServeOptions = { fetch: () => new Response("hello") };
 * ```
 */
export interface PortableServeOptions {
  /** The request handler (Bun's and srvx's name); `handler` is Deno's. Pass one of them. */
  fetch?: ServeHandler;
  /** The request handler (Deno's name); `fetch` is Bun's. Pass one of them. */
  handler?: ServeHandler;
  /** Any other option of `Deno.serve` or `Bun.serve`. */
  [option: string]: unknown;
}

/**
 * `Deno.serve`'s options, read off Deno's declarations (never where they are
 * not loaded). Inference from an overloaded function uses its last overload,
 * which is Deno.serve's one-object form (tests/serve_types_test.ts fails if a
 * Deno release reorders them): `Deno.ServeTcpOptions` (with
 * `Deno.TlsCertifiedKeyPem` for TLS) and `Deno.ServeInit`, less what the
 * socket decides (`hostname`, `port`, `transport`, `reusePort`,
 * `tcpBacklog`). The handler is `handler` or `fetch`, both
 * `Deno.ServeHandler`s: `(request, info) => Response`. `onError`, `onListen`
 * (given the real address), `signal`, `cert`/`key` and the rest pass through.
 *
 * @example
 * ```ts
 * import type { DenoServeOptions } from "@instar/instar";
 *
 * const options: DenoServeOptions = {
 *   handler: (req, info) => new Response(`hello ${info.remoteAddr.hostname}`),
 *   onError: () => new Response("oops", { status: 500 }),
 * };
 * ```
 */
export type DenoServeOptions = typeof globalThis extends
  { Deno: { serve(options: infer O): unknown } } ?
    & (O extends unknown ? Omit<
        O,
        "hostname" | "port" | "transport" | "reusePort" | "tcpBacklog" | "handler" | "fetch"
      >
      : never)
    & (O extends { handler: infer H }
      ? { handler: H; fetch?: never } | { fetch: H; handler?: never }
      : never)
  : never;

/**
 * `Bun.serve` as a type, for {@link BunServeOptions}: bun-types' generic
 * function where it is loaded. Bun.serve is generic in its WebSocket data;
 * inferring its parameter would fix that to `unknown` (and make `data`
 * required in `server.upgrade(req, { data })`), so the function is kept and
 * instantiated with `typeof bunServe<WebSocketData, string>`. Types only:
 * there is no such value at run time.
 *
 * @example
 * ```ts
 * import type { bunServe } from "@instar/instar";
 *
 * type Options = Parameters<typeof bunServe<{ user: string }, string>>[0];
 * ```
 */
export declare const bunServe: typeof globalThis extends { Bun: { serve: infer S } } ? S
  : <WebSocketData, R extends string>(options: never) => never;

/**
 * `Bun.serve`'s options, read off bun-types (never where they are not
 * loaded): `Bun.Serve.Options<WebSocketData>` for any route name, less what
 * the socket decides (`hostname`, `port`, `unix`, `reusePort`, `ipv6Only`).
 * The handler is `fetch` or `handler`, `(request, server) => Response`;
 * `routes`, `websocket`, `error`, `tls` and the rest pass through. Each
 * member of Bun's union says whether `fetch` is required (it is not when
 * `routes` is).
 *
 * @typeParam WebSocketData Bun's `ws.data` type (as in `Bun.serve<WebSocketData>`).
 * @example
 * ```ts
 * import type { BunServeOptions } from "@instar/instar";
 *
 * const options: BunServeOptions = {
 *   routes: { "/health": new Response("ok") },
 *   fetch: (req, server) => new Response(`hello ${server.requestIP(req)?.address}`),
 * };
 * ```
 */
export type BunServeOptions<WebSocketData = undefined> =
  Parameters<typeof bunServe<WebSocketData, string>>[0] extends infer O ? O extends unknown ?
        & Omit<O, "hostname" | "port" | "unix" | "reusePort" | "ipv6Only" | "fetch" | "handler">
        & (O extends { fetch: infer F }
          ? { fetch: F; handler?: never } | { handler: F; fetch?: never }
          : O extends { fetch?: infer F } ?
              | { fetch?: F; handler?: never }
              | { handler?: F; fetch?: never }
          : never)
    : never
    : never;

/**
 * The runtime's own server options, checked with the runtime's own types:
 * {@link DenoServeOptions} under Deno's types, {@link BunServeOptions} under
 * bun-types, {@link PortableServeOptions} under neither.
 *
 * @example
 * ```ts
 * import type { RuntimeServeOptions } from "@instar/instar";
 *
 * const options: RuntimeServeOptions = { fetch: () => new Response("hello") };
 * ```
 */
export type RuntimeServeOptions<WebSocketData = undefined> = [DenoServeOptions] extends [never]
  ? [BunServeOptions<WebSocketData>] extends [never] ? PortableServeOptions
  : BunServeOptions<WebSocketData>
  : DenoServeOptions;

// ---------------------------------------------------------------- instar's options

/**
 * How {@link serve} gets the native server onto the socket.
 *
 * @example
 * ```ts
 * import type { ServeMode } from "@instar/instar";
 *
 * const mode: ServeMode = "transplant"; // throw rather than fall back
 * ```
 */
export type ServeMode = "auto" | "transplant" | "fallback";

/**
 * What {@link serve} accepts as the socket to serve on: an fd, or a listener with one.
 *
 * @example
 * ```ts
 * import { listen, type ServeTarget } from "@instar/instar/unstable";
 *
 * const target: ServeTarget = await listen({ port: 8080 });
 * ```
 */
export type ServeTarget = number | { readonly fd: number };

/**
 * instar's options of {@link serve}, next to the runtime's own server options.
 *
 * @example
 * ```ts
 * import { type InstarServeOptions, Upgrader } from "@instar/instar";
 *
 * const instar = { mode: "transplant", drainDelayMs: 500 } satisfies InstarServeOptions;
 * const up = await Upgrader.create();
 * await up.serve({ port: 8080, ...instar, fetch: () => new Response("hello") });
 * ```
 */
export interface InstarServeOptions {
  /**
   * `transplant` runs the native server on the socket itself (full speed) and
   * throws `TRANSPLANT_UNSUPPORTED` when it cannot; `fallback` proxies through
   * `node:net`; `auto` (the default) transplants, or falls back and says why.
   */
  mode?: ServeMode;
  /** Called when `auto` falls back, with the reason. Without it instar warns on the console. */
  onFallback?: (reason: InstarError) => void;
  /**
   * Called (at most once per 10 s) when the server recovers from trouble, e.g. Deno's accept
   * loop ending at the fd limit (EMFILE) and the server restarted on the same socket. Without
   * it instar warns on the console; `up.serve()` reports it as a `warning` event.
   */
  onWarning?: (message: string) => void;
  /**
   * How long to keep reading connections already accepted before shutting down. Default 250 ms
   * (100 ms was measured to suffice on an idle machine; a CPU-starved one needs more).
   */
  drainDelayMs?: number;
  /**
   * How long WebSockets and streaming responses may run on during a shutdown. Default 30 s.
   * `serve(fd)` only: `up.serve()` refuses it, its servers drain within the Upgrader's
   * `drainTimeout` (`Upgrader.create({ drainTimeout })`).
   */
  drainTimeoutMs?: number;
  /**
   * What the drain does with idle keep-alive connections ({@link IdleConnections}).
   * `up.serve()` takes the Upgrader's (`Upgrader.create({ idleConnections })`) unless given here.
   * A server that may speak HTTP/2 (Deno with TLS) always closes them when quiet: its
   * clients move only on GOAWAY, which Deno sends as it closes idle connections.
   */
  idleConnections?: IdleConnections;
  /** Forces the kcmp-free epoll dedupe of {@link transplant} (for tests). */
  dedupe?: DedupeMethod;
  /** The reactor event masks the transplant accepts (for tests: `{}` forces the fallback). */
  knownMasks?: Readonly<Record<number, string>>;
}

/**
 * The one options object of the standalone {@link serve} (unstable): the
 * runtime's own server options (with the handler as `fetch` or `handler`) and
 * instar's. `up.serve()` takes {@link UpgraderServeOptions}.
 *
 * @example
 * ```ts
 * import { listen, serve, type ServeOptions } from "@instar/instar/unstable";
 *
 * const options: ServeOptions = { mode: "auto", fetch: () => new Response("hello") };
 * const server = await serve(await listen({ port: 8080 }), options);
 * ```
 */
export type ServeOptions<WebSocketData = undefined> =
  & RuntimeServeOptions<WebSocketData>
  & InstarServeOptions;

/**
 * Where `up.serve()` listens: TCP (`port`, with `hostname`), or a Unix socket
 * (`path`, with `socketMode` for the socket file's permissions: `mode` is the
 * serve mode). `backlog` is the kernel's accept queue length (default 4096, `SOMAXCONN`).
 * `name` claims the socket systemd passed under that `FileDescriptorName=`
 * (then the address is only a fallback, and may be left out).
 *
 * @example
 * ```ts
 * import type { ServeListenOptions } from "@instar/instar";
 *
 * const tcp: ServeListenOptions = { hostname: "0.0.0.0", port: 8080 };
 * const unix: ServeListenOptions = { path: "/run/app/http.sock", socketMode: 0o660 };
 * ```
 */
export type ServeListenOptions =
  | {
    hostname?: string;
    port: number;
    backlog?: number;
    name?: string;
    path?: never;
    socketMode?: never;
  }
  | {
    path: string;
    socketMode?: number;
    backlog?: number;
    name?: string;
    hostname?: never;
    port?: never;
  }
  | { name: string; hostname?: never; port?: never; path?: never };

/**
 * The one options object of `up.serve()`: where to listen, the runtime's own
 * server options and instar's, except `drainTimeoutMs`: every server of a
 * generation drains within the Upgrader's `drainTimeout`, so `up.serve()`
 * rejects the key (`INVALID_ARGUMENT`); set `Upgrader.create({ drainTimeout })`.
 *
 * @example
 * ```ts
 * import { Upgrader, type UpgraderServeOptions } from "@instar/instar";
 *
 * const options: UpgraderServeOptions = { port: 8080, fetch: () => new Response("hello") };
 * const up = await Upgrader.create();
 * await up.serve(options);
 * ```
 */
export type UpgraderServeOptions<WebSocketData = undefined> =
  & RuntimeServeOptions<WebSocketData>
  & Omit<InstarServeOptions, "drainTimeoutMs">
  & {
    /** Not taken: the drain timeout is the Upgrader's (`Upgrader.create({ drainTimeout })`). */
    drainTimeoutMs?: never;
  }
  & ServeListenOptions;

/**
 * A server started by {@link serve}. `addr`, `port` and `url` report the
 * socket really served (not the throwaway port); `native` is the runtime's own
 * server object.
 *
 * @example
 * ```ts
 * import { type Server, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const server: Server = await up.serve({ port: 8080, fetch: () => new Response("hello") });
 * console.log(server.url.href, server.mode);
 * ```
 */
export interface Server {
  /** The address the socket listens on. */
  readonly addr: Addr;
  /** The TCP port (0 for a Unix socket). */
  readonly port: number;
  /** The host name or address (the socket path for a Unix socket). */
  readonly hostname: string;
  /** `http://host:port/` (or `https://` with TLS). */
  readonly url: URL;
  /**
   * `transplant`, `fallback` when serving through the proxy, or `direct` in
   * portable mode (the runtime's server listens on the address itself: docs/portable.md).
   */
  readonly mode: "transplant" | "fallback" | "direct";
  /** Why `auto` fell back, if it did. */
  readonly fallbackReason: InstarError | undefined;
  /** The runtime's server: a `Deno.HttpServer` or a `Bun.Server`. */
  readonly native: unknown;
  /** Resolves when the server has shut down. */
  readonly finished: Promise<void>;
  /** Stops accepting new connections; they stay queued on the socket. Returns false if already paused. */
  pauseAccepting(): boolean;
  /** Accepts again after {@link Server.pauseAccepting}. Returns false if not paused. */
  resumeAccepting(): boolean;
  /** Stops accepting, drains and shuts the native server down gracefully. The fd stays open. */
  shutdown(): Promise<void>;
  /** Bun's spelling: `stop(true)` closes active connections at once, `stop()` is {@link Server.shutdown}. */
  stop(closeActiveConnections?: boolean): Promise<void>;
  /** Lets the process exit while the server runs (`unref`) or not (`ref`). */
  ref(): void;
  /** See {@link Server.ref}. */
  unref(): void;
  /** {@link Server.shutdown}. */
  [Symbol.asyncDispose](): Promise<void>;
}
