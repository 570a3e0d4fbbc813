/**
 * Serving HTTP on a listening socket instar owns, with the runtime's own
 * server (`Deno.serve` on Deno, `Bun.serve` on Bun) at full speed.
 *
 * Neither `Deno.serve` nor `Bun.serve` can be started on an fd. {@link serve}
 * starts the native server on a throwaway address of the socket's family
 * (`127.0.0.1:0`, `[::1]:0`, or a Unix socket in the temp directory) and
 * {@link transplant}s the socket under it. When a precondition of the
 * transplant fails (e.g. a reactor instar does not know), `mode: "auto"`
 * falls back to a proxy: a `node:net` server accepts on the fd and pipes every
 * connection to the native server on its loopback port, so every feature
 * (WebSockets, streaming, routes) still works, at a lower speed. The fallback
 * is never silent: `onFallback` (or a console warning) says why.
 *
 * Shutting down drains without losing connections: stop accepting (the socket
 * stays open for whoever else listens on it), wait a moment so connections
 * accepted but not yet read are read, then the runtime's graceful shutdown;
 * WebSockets and streaming responses run until they end or `drainTimeoutMs`
 * passes.
 *
 * @module
 */

import { randomUUID } from "node:crypto";
import { unlinkSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { InstarError } from "../errors.ts";
import { dupCloexec, getsockname, runtimeName } from "../ffi/mod.ts";
import { type Addr, decode, type NetAddr } from "../ffi/sockaddr.ts";
import {
  type DedupeMethod,
  pauseAccepting,
  pauseSocket,
  resumeAccepting,
  transplant,
} from "../net/transplant.ts";
import type { TransplantInfo } from "../net/transplant.ts";
import { denoAdapter } from "../runtime/serve_deno.ts";
import { bunAdapter } from "../runtime/serve_bun.ts";

/** What a Deno handler gets besides the request (as `Deno.ServeHandlerInfo`). */
export interface ServeHandlerInfo {
  /** The client's address (the real one, also behind the fallback proxy). */
  readonly remoteAddr: NetAddr;
  /** Resolves when the response has been sent. */
  readonly completed: Promise<void>;
}

/** A Deno-style request handler. On Bun pass `fetch`/`routes` in the options instead. */
export type ServeHandler = (
  request: Request,
  info: ServeHandlerInfo,
) => Response | Promise<Response>;

/** How {@link serve} gets the native server onto the socket. */
export type ServeMode = "auto" | "transplant" | "fallback";

/** What {@link serve} accepts as the socket to serve on: an fd, or a listener with one. */
export type ServeTarget = number | { readonly fd: number };

/** instar's options of {@link serve}, next to the runtime's own server options. */
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
   * How long to keep reading connections already accepted before shutting down. Default 250 ms
   * (100 ms was measured to suffice on an idle machine; a CPU-starved one needs more).
   */
  drainDelayMs?: number;
  /** How long WebSockets and streaming responses may run on during a shutdown. Default 30 s. */
  drainTimeoutMs?: number;
  /** Forces the kcmp-free epoll dedupe of {@link transplant} (for tests). */
  dedupe?: DedupeMethod;
}

/**
 * A server started by {@link serve}. `addr`, `port` and `url` report the
 * socket really served (not the throwaway port); `native` is the runtime's own
 * server object.
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
  /** `transplant`, or `fallback` when serving through the proxy. */
  readonly mode: "transplant" | "fallback";
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

// ---------------------------------------------------------------- adapter seam

/** What a runtime adapter is told when starting its native server. */
export interface AdapterStart {
  /** The runtime's server options, instar's removed. */
  options: Record<string, unknown>;
  /** The Deno-style handler passed separately, if any. */
  handler: unknown;
  /** Where to start: a loopback address (port 0), or a Unix socket path. */
  listenOn: { hostname: string } | { path: string };
  /** The real address (what user callbacks must see). */
  real: () => { addr: Addr; url: URL };
  /** True once serving through the proxy: remote addresses must be looked up with `remoteOf`. */
  proxied: boolean;
  /** Through the proxy: the client's real address behind a proxied loopback port. */
  remoteOf: (loopbackPort: number) => NetAddr | undefined;
  /** Calls `shutdown()` of the instar server (for Deno's `signal` option). */
  shutdown: () => void;
}

/** A native server started by an adapter. */
export interface NativeServer {
  /** The runtime's server object. */
  native: unknown;
  /** The address it listens on (the throwaway). */
  throwaway: Addr;
  /** Whether TLS is on (for the URL scheme). */
  tls: boolean;
  /** Graceful shutdown, after accepting has stopped; long-lived connections get `timeoutMs`. */
  shutdown(timeoutMs: number): Promise<void>;
  /** Closes everything now. */
  close(): Promise<void>;
  /** Resolves when the native server has finished. */
  finished: Promise<void>;
  /** Reports the listening address to the user (Deno's onListen). */
  listening(addr: Addr, url: URL): void;
  ref(): void;
  unref(): void;
}

/** The runtime branch: starts the native server on a loopback port. */
export interface ServeAdapter {
  start(s: AdapterStart): NativeServer;
}

function adapter(): ServeAdapter {
  const rt = runtimeName();
  if (rt === "deno") return denoAdapter;
  if (rt === "bun") return bunAdapter;
  throw new InstarError("UNSUPPORTED_RUNTIME", "serve() runs on Deno and Bun");
}

// ---------------------------------------------------------------- proxy fallback

/** Accepts on a duplicate of the fd with node:net and pipes each connection to `upstream`. */
class ConnectionProxy {
  #server: net.Server | undefined;
  #pairs = new Set<net.Socket>();
  #remotes = new Map<number, NetAddr>();
  #closedAll: (() => void) | undefined;
  #refed = true;
  constructor(readonly fd: number, readonly upstream: Addr) {}

  /** Whether the accepting server keeps the process alive (like the native server's ref()). */
  ref(on: boolean): void {
    this.#refed = on;
    if (on) this.#server?.ref();
    else this.#server?.unref();
  }

  remoteOf(port: number): NetAddr | undefined {
    return this.#remotes.get(port);
  }

  /** Starts accepting; resolves once node:net listens. */
  listen(): Promise<void> {
    // node:net owns (and closes) the fd it listens on: give it a duplicate.
    const dup = dupCloexec(this.fd);
    const server = net.createServer({ allowHalfOpen: true }, (c) => this.#pipe(c));
    this.#server = server;
    if (!this.#refed) server.unref();
    return new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ fd: dup }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  }

  #pipe(client: net.Socket): void {
    const u = this.upstream;
    const up = u.transport === "unix"
      ? net.connect({ path: u.path, allowHalfOpen: true })
      : net.connect({ host: u.hostname, port: u.port, allowHalfOpen: true, noDelay: true });
    client.setNoDelay(true);
    this.#pairs.add(client);
    let localPort = 0;
    up.on("connect", () => {
      localPort = up.localPort ?? 0;
      const hostname = client.remoteAddress, port = client.remotePort;
      if (localPort && hostname !== undefined && port !== undefined) {
        this.#remotes.set(localPort, { transport: "tcp", hostname, port });
      }
    });
    client.pipe(up);
    up.pipe(client);
    // The pair is gone once both sockets have closed (their fds with them).
    let open = 2;
    const closed = () => {
      client.destroy();
      up.destroy();
      if (--open > 0) return;
      this.#remotes.delete(localPort);
      if (this.#pairs.delete(client) && this.#pairs.size === 0) this.#closedAll?.();
    };
    const failed = () => {
      client.destroy();
      up.destroy();
    };
    client.on("error", failed).once("close", closed);
    up.on("error", failed).once("close", closed);
  }

  get accepting(): boolean {
    return this.#server !== undefined;
  }

  /** Stops accepting (closes the duplicate fd); proxied connections go on. */
  stopAccepting(): boolean {
    const s = this.#server;
    if (!s) return false;
    this.#server = undefined;
    s.close();
    return true;
  }

  /** Resolves when every proxied connection has closed, or destroys them after `timeoutMs`. */
  async drained(timeoutMs: number): Promise<void> {
    if (this.#pairs.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((r) => (this.#closedAll = r)),
      new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
    ]);
    clearTimeout(timer);
    for (const c of [...this.#pairs]) c.destroy();
  }

  destroyAll(): void {
    for (const c of [...this.#pairs]) c.destroy();
  }
}

// ---------------------------------------------------------------- serve()

function targetFd(target: ServeTarget): number {
  const fd = typeof target === "number" ? target : target?.fd;
  if (!Number.isInteger(fd) || fd < 0) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `serve() target is ${String(fd)}; expected a listening fd or an object with an fd`,
    );
  }
  return fd;
}

function urlOf(addr: Addr, tls: boolean): URL {
  const scheme = tls ? "https" : "http";
  if (addr.transport === "unix") {
    return new URL(`${scheme}+unix://${encodeURIComponent(addr.path)}/`);
  }
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return new URL(`${scheme}://${host}:${addr.port}/`);
}

const INSTAR_KEYS = ["mode", "onFallback", "drainDelayMs", "drainTimeoutMs", "dedupe"] as const;

/**
 * Serves HTTP on a listening socket instar owns with the runtime's own server.
 * On Deno, `options` are `Deno.serve`'s and the handler is `(req, info) =>
 * Response`; on Bun, `options` are `Bun.serve`'s (`fetch`, `routes`,
 * `websocket`, …). `hostname`, `port` and `unix`/`path` are ignored: the
 * socket decides where the server listens. Resolves once the server accepts.
 *
 * @example
 * ```ts
 * import { serve } from "@instar/instar";
 *
 * const fd = 3; // a listening socket, e.g. inherited from the previous generation
 * const server = await serve(fd, {}, () => new Response("hello"));
 * console.log(server.url.href); // the real address of fd 3
 * Deno.addSignalListener("SIGTERM", () => server.shutdown());
 * ```
 */
export async function serve(
  target: ServeTarget,
  options: ServeHandler | (InstarServeOptions & Record<string, unknown>) = {},
  handler?: ServeHandler,
): Promise<Server> {
  if (typeof options === "function") [handler, options] = [options, {}];
  const fd = targetFd(target);
  // A Listener already accepts on its socket: from now on the HTTP server does.
  if (typeof target === "object" && typeof (target as { accept?: unknown }).accept === "function") {
    pauseSocket(fd);
  }
  const mode = options.mode ?? "auto";
  if (!["auto", "transplant", "fallback"].includes(mode)) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `mode is ${JSON.stringify(mode)}; expected "auto", "transplant" or "fallback"`,
    );
  }
  const drainDelayMs = options.drainDelayMs ?? 250;
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const rest: Record<string, unknown> = { ...options };
  for (const k of INSTAR_KEYS) delete rest[k];

  const addr = decode(getsockname(fd));
  // The throwaway must be of our socket's family for the transplant; the proxy only needs loopback.
  const unixPath = addr.transport === "unix" && mode !== "fallback"
    ? join(tmpdir(), `instar-serve-${process.pid}-${randomUUID().slice(0, 8)}.sock`)
    : undefined;
  const loopback = addr.transport === "tcp" && addr.hostname.includes(":") && mode !== "fallback"
    ? "::1"
    : "127.0.0.1";
  const removeThrowawayPath = () => {
    if (unixPath === undefined) return;
    try {
      unlinkSync(unixPath);
    } catch {
      // already gone
    }
  };

  let proxy: ConnectionProxy | undefined;
  let info: TransplantInfo | undefined;
  let fallbackReason: InstarError | undefined;
  let tls = false;
  let shutdownPromise: Promise<void> | undefined;
  const real = () => ({ addr, url: urlOf(addr, tls) });
  const self = {} as Server;
  const start: AdapterStart = {
    options: rest,
    handler,
    listenOn: unixPath !== undefined ? { path: unixPath } : { hostname: loopback },
    real,
    proxied: false,
    remoteOf: (port) => proxy?.remoteOf(port),
    shutdown: () => void self.shutdown(),
  };
  const native = adapter().start(start);
  tls = native.tls;

  if (mode !== "fallback") {
    try {
      info = transplant({ throwaway: native.throwaway, fd, dedupe: options.dedupe });
      // The throwaway socket is closed now; its name on disk is left.
      removeThrowawayPath();
    } catch (err) {
      if (
        mode === "transplant" || !(err instanceof InstarError) ||
        // TRANSPLANT_FAILED: the socket may be half moved, not safe to go on.
        err.code !== "TRANSPLANT_UNSUPPORTED"
      ) {
        await native.close();
        removeThrowawayPath();
        throw err;
      }
      fallbackReason = err;
      if (options.onFallback) options.onFallback(err);
      else console.warn(`instar: serving through the node:net proxy: ${err.message}`);
    }
  }
  if (!info) {
    proxy = new ConnectionProxy(fd, native.throwaway);
    start.proxied = true;
    try {
      await proxy.listen();
    } catch (err) {
      await native.close();
      removeThrowawayPath();
      throw err;
    }
  }
  const url = urlOf(addr, tls);
  native.listening(addr, url);

  const pause = (): boolean => (info ? pauseAccepting(info) : proxy!.stopAccepting());
  const resume = (): boolean => {
    if (info) return resumeAccepting(info);
    if (proxy!.accepting) return false;
    proxy!.listen().catch((err) => {
      console.error(`instar: the proxy could not accept again: ${(err as Error).message}`);
    });
    return true;
  };
  const shutdown = (): Promise<void> => {
    shutdownPromise ??= (async () => {
      pause();
      // Connections the server accepted but has not read yet would be closed by the
      // runtime's shutdown; give it a moment to read them.
      await new Promise((r) => setTimeout(r, drainDelayMs));
      await native.shutdown(drainTimeoutMs);
      if (proxy) await proxy.drained(drainTimeoutMs);
      removeThrowawayPath();
    })();
    return shutdownPromise;
  };
  const finished = native.finished.then(async () => {
    if (proxy) {
      proxy.stopAccepting();
      await proxy.drained(drainTimeoutMs);
    }
  });
  Object.assign(self, {
    addr,
    port: addr.transport === "tcp" ? addr.port : 0,
    hostname: addr.transport === "tcp" ? addr.hostname : addr.path,
    url,
    mode: info ? "transplant" : "fallback",
    fallbackReason,
    native: native.native,
    finished,
    pauseAccepting: pause,
    resumeAccepting: resume,
    shutdown,
    async stop(closeActiveConnections = false): Promise<void> {
      if (!closeActiveConnections) return await shutdown();
      pause();
      proxy?.destroyAll();
      await native.close();
      removeThrowawayPath();
    },
    ref: () => {
      native.ref();
      proxy?.ref(true);
    },
    unref: () => {
      native.unref();
      proxy?.ref(false);
    },
    [Symbol.asyncDispose]: shutdown,
  });
  return self;
}
