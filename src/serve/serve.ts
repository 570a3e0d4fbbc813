/**
 * Serving HTTP on a listening socket instar owns, with the runtime's own
 * server (`Deno.serve` on Deno, `Bun.serve` on Bun) at full speed.
 *
 * Neither `Deno.serve` nor `Bun.serve` can be started on an fd. {@link serve}
 * starts the native server on a throwaway address of the socket's family
 * (`127.0.0.1:0`, `[::1]:0`, or a Unix socket in a private temp directory) and
 * {@link transplant}s the socket under it. When a precondition of the
 * transplant fails (e.g. a reactor instar does not know), `mode: "auto"`
 * falls back to a proxy: a `node:net` server accepts on the fd and pipes every
 * connection to the native server on its throwaway address (a loopback port,
 * or for a Unix socket a Unix socket in a directory only this user can
 * enter), so every feature (WebSockets, streaming, routes) still works, at a
 * lower speed. The fallback
 * is never silent: `onFallback` (or a console warning) says why.
 *
 * One options object, like the runtime's own server's: the handler as `fetch`
 * (Bun's and srvx's name; on Deno it gets `(req, info)` like Deno's handler) or
 * `handler` (Deno's name; on Bun it is `fetch`), the runtime's other options,
 * typed with the runtime's own types (see src/serve/types.ts), and instar's.
 *
 * Shutting down drains without losing connections: stop accepting (the socket
 * stays open for whoever else listens on it), wait a moment so connections
 * accepted but not yet read are read, then the runtime's graceful shutdown;
 * WebSockets and streaming responses run until they end or `drainTimeoutMs`
 * passes.
 *
 * @module
 */

import { makeTempDirSync, removeTreeSync } from "../host.ts";
import { InstarError } from "../errors.ts";
import { getsockname } from "../ffi/mod.ts";
import { type Addr, decode } from "../ffi/sockaddr.ts";
import {
  pauseAccepting,
  pauseSocket,
  resumeAccepting,
  transplant,
  type TransplantInfo,
} from "../runtime/transplant.ts";
import { serveAdapter } from "../runtime/mod.ts";
import {
  type AnyHandler,
  checkOneObject,
  checkServeMode,
  QUIET_MAX_MS,
  QUIET_MS,
  refuseListenKeys,
  takeHandler,
  targetFd,
  urlOf,
  WS_CLOSE_MS,
} from "./options.ts";
import { checkIdleConnections, drainAlone, type ServerDrain } from "../net/drain.ts";
import { cutConnections, mayHoldConnection, noConnections } from "../net/connections.ts";
import type { IdleConnections } from "../types.ts";
import { deadline, sleep } from "../timeout.ts";
import type { ConnectionProxy } from "./proxy.ts";
import type {
  AdapterStart,
  InstarServeOptions,
  NativeServer,
  ServeMode,
  ServeOptions,
  Server,
  ServeTarget,
} from "./types.ts";

export type {
  bunServe,
  BunServeOptions,
  DenoServeOptions,
  InstarServeOptions,
  PortableServeOptions,
  RuntimeServeOptions,
  ServeHandler,
  ServeHandlerInfo,
  ServeListenOptions,
  ServeMode,
  ServeOptions,
  Server,
  ServeTarget,
  UpgraderServeOptions,
} from "./types.ts";

// ---------------------------------------------------------------- serve()

/** The throwaway address the native server starts on, and a way to remove what it left on disk. */
function throwawayFor(addr: Addr, mode: ServeMode): {
  listenOn: AdapterStart["listenOn"];
  remove: () => void;
} {
  if (addr.transport === "unix") {
    // Always a Unix socket, on either path: the transplant needs our socket's family, and the
    // proxy's upstream must be no easier to reach than our socket (a loopback port would let
    // any local user past the socket file's permissions). mkdtemp makes the directory 0700.
    const dir = makeTempDirSync("instar-serve-");
    const remove = () => removeTreeSync(dir);
    return { listenOn: { path: `${dir}/s.sock` }, remove };
  }
  // The throwaway must be of our socket's family for the transplant; the proxy only needs loopback.
  const v6 = addr.hostname.includes(":") && mode !== "fallback";
  return { listenOn: { hostname: v6 ? "::1" : "127.0.0.1" }, remove: () => {} };
}

/**
 * Serves HTTP on a listening socket instar owns with the runtime's own server.
 * `options` is one object, like the runtime's server's: the handler as `fetch`
 * or `handler` (on Deno `(req, info)`, on Bun `(req, server)`), the runtime's
 * own options (Deno's `onError`, `onListen`, `signal`, `cert`/`key`; Bun's
 * `routes`, `websocket`, `error`, `tls`, …) typed with its own types, and
 * instar's {@link InstarServeOptions}. The socket decides where the server
 * listens: `hostname`, `port`, `path` and `unix` are refused. Resolves once
 * the server accepts.
 *
 * Standalone, from `@instar/instar/unstable`: the server belongs to this
 * process alone and does not survive an upgrade. An application uses
 * `up.serve()` instead: the next generation inherits its socket.
 *
 * @typeParam WebSocketData Bun's `ws.data` type (as in `Bun.serve<WebSocketData>`).
 * @example
 * ```ts
 * import { serve } from "@instar/instar/unstable";
 *
 * const fd = 3; // a listening socket, e.g. inherited from the previous generation
 * const server = await serve(fd, { fetch: () => new Response("hello") });
 * console.log(server.url.href); // the real address of fd 3
 * Deno.addSignalListener("SIGTERM", () => server.shutdown());
 * ```
 */
export async function serve<WebSocketData = undefined>(
  target: ServeTarget,
  options: ServeOptions<WebSocketData>,
): Promise<Server> {
  // The old serve(fd, options, handler) form fails here with the new form in the message.
  checkOneObject("serve()", options, arguments.length);
  return (await startServe(target, options)).server;
}

/** A started server and what it decides in a drain. */
export interface Serving<S> {
  /** The server, as {@link serve} returns it. */
  server: S;
  /** What the owner of its socket builds the socket's endpoint from (src/lifecycle/endpoints.ts). */
  drain: ServerDrain;
}

/**
 * {@link serve}, for the lifecycle: also returns the server's part of the
 * drain, from which the lifecycle builds the endpoint of the socket it owns.
 */
export async function startServe<WebSocketData = undefined>(
  target: ServeTarget,
  options: ServeOptions<WebSocketData>,
): Promise<Serving<Server>> {
  const fd = targetFd(target, "serve()");
  const { instar, handler, rest } = splitServe(options);
  // A Listener already accepts on its socket: from now on the HTTP server does.
  if (typeof target === "object" && typeof (target as { accept?: unknown }).accept === "function") {
    pauseSocket(fd);
  }
  return await start(fd, instar, handler, rest);
}

/** Where the runtime's own server listens in portable mode: an address, not an fd. */
export type DirectAddress = { hostname: string; port: number } | { path: string };

/**
 * {@link startServe} in portable mode (src/runtime/platform.ts): the
 * runtime's own server listens on `where` itself, with no fd of instar's
 * under it; it drains the same way (`Connection: close`, the quiet wait,
 * WebSockets 1012 at the timeout), and stops accepting when it shuts down.
 */
// deno-lint-ignore require-await -- async so that bad options reject, as startServe()'s do
export async function startServeAt<WebSocketData = undefined>(
  where: DirectAddress,
  options: ServeOptions<WebSocketData>,
): Promise<Serving<Server>> {
  const { instar, handler, rest } = splitServe(options);
  const self = {} as Server;
  // Known once the server listens (the port 0 asked for is chosen then); read only after that.
  const real: { addr?: Addr; url?: URL } = {};
  const native = serveAdapter().start({
    options: rest,
    handler,
    listenOn: where,
    real: () => ({ addr: real.addr!, url: real.url! }),
    proxied: false,
    remoteOf: () => undefined,
    shutdown: () => void self.shutdown(),
    warn: instar.onWarning ?? ((message) => console.warn(`instar: warning: ${message}`)),
    count: instar.count,
  });
  const addr = real.addr = native.throwaway;
  const url = real.url = urlOf(addr, native.tls);
  native.listening(addr, url);
  const { server, drain } = wrap(
    native,
    { info: undefined, proxy: undefined },
    addr,
    instar,
    () => {},
  );
  const port = addr.transport === "tcp" ? addr.port : 0;
  const hostname = addr.transport === "tcp" ? addr.hostname : addr.path;
  Object.assign(self, server, { addr, url, fallbackReason: undefined, port, hostname });
  return { server: self, drain };
}

/**
 * The key of an options field the lifecycle sets for `up.serve()`: a
 * `Float64Array` whose element 0 counts the requests (the adapter's
 * `AdapterStart.count`). Not part of the public options.
 */
export const REQUEST_COUNTER: unique symbol = Symbol("instar.requestCounter");

// The options object split into instar's (checked), the handler and the runtime's own.
function splitServe(options: ServeOptions<unknown>): {
  instar: Instar;
  handler: AnyHandler | undefined;
  rest: Record<string, unknown>;
} {
  const {
    mode,
    onFallback,
    onWarning,
    drainDelayMs,
    drainTimeoutMs,
    idleConnections,
    dedupe,
    knownMasks,
    [REQUEST_COUNTER]: count,
    ...runtimeOptions
  } = options as unknown as InstarServeOptions & Record<string, unknown> & {
    [REQUEST_COUNTER]?: Float64Array;
  };
  const instar = {
    mode: checkServeMode(mode),
    idleConnections: checkIdleConnections("idleConnections", idleConnections),
    onFallback,
    onWarning,
    drainDelayMs,
    drainTimeoutMs,
    dedupe,
    knownMasks,
    count,
  };
  refuseListenKeys(runtimeOptions);
  return { instar, ...takeHandler(runtimeOptions) };
}

type Instar = InstarServeOptions & {
  mode: ServeMode;
  idleConnections: IdleConnections;
  count: Float64Array | undefined;
};

/** Starts the native server, then moves it onto `fd` (or proxies to it). */
async function start(
  fd: number,
  instar: Instar,
  handler: AnyHandler | undefined,
  options: Record<string, unknown>,
): Promise<Serving<Server>> {
  const addr = decode(getsockname(fd));
  const throwaway = throwawayFor(addr, instar.mode);
  let proxy: ConnectionProxy | undefined;
  let tls = false;
  const self = {} as Server;
  const s: AdapterStart = {
    options,
    handler,
    listenOn: throwaway.listenOn,
    real: () => ({ addr, url: urlOf(addr, tls) }),
    proxied: false,
    remoteOf: (port) => proxy?.remoteOf(port),
    shutdown: () => void self.shutdown(),
    warn: instar.onWarning ?? ((message) => console.warn(`instar: warning: ${message}`)),
    count: instar.count,
  };
  const native = serveAdapter().start(s);
  tls = native.tls;
  const fail = async (err: unknown): Promise<never> => {
    await native.close();
    throwaway.remove();
    throw err;
  };

  let info: TransplantInfo | undefined;
  let fallbackReason: InstarError | undefined;
  let restarts: { next: () => string; remove: () => void } | undefined;
  if (instar.mode !== "fallback") {
    try {
      const { dedupe, knownMasks } = instar;
      info = transplant({ throwaway: native.throwaway, fd, dedupe, knownMasks });
      // The throwaway socket is closed now; its name on disk is left.
      throwaway.remove();
      s.reattach = (at) => reattach(paths, { throwaway: at, fd, dedupe, knownMasks });
      // A Unix throwaway's directory is gone by now: a restart starts in a directory of its own.
      if (addr.transport === "unix") {
        restarts = unixRestarts();
        s.restartOn = restarts.next;
      }
    } catch (err) {
      // TRANSPLANT_FAILED: the socket may be half moved, not safe to go on.
      const unsupported = err instanceof InstarError && err.code === "TRANSPLANT_UNSUPPORTED";
      if (instar.mode === "transplant" || !unsupported) return await fail(err);
      fallbackReason = err;
      if (instar.onFallback) instar.onFallback(err);
      else console.warn(`instar: serving through the node:net proxy: ${err.message}`);
    }
  }
  if (!info) {
    // The fallback's proxy is loaded only by a server that needs it (memory, as its node:net).
    const { ConnectionProxy } = await import("./proxy.ts");
    proxy = new ConnectionProxy(fd, native.throwaway, instar.onWarning);
    s.proxied = true;
    s.sameAddress = true;
    await proxy.listen().catch(fail);
  }
  const url = urlOf(addr, tls);
  native.listening(addr, url);
  const paths: Paths = { info, proxy };
  const remove = () => {
    throwaway.remove();
    restarts?.remove();
  };
  const { server, drain } = wrap(native, paths, addr, instar, remove);
  Object.assign(
    self,
    server,
    { addr, url, fallbackReason },
    {
      port: addr.transport === "tcp" ? addr.port : 0,
      hostname: addr.transport === "tcp" ? addr.hostname : addr.path,
    },
  );
  return { server: self, drain };
}

/**
 * Where a native server restarted on a Unix socket starts (its accept loop
 * ended at the fd limit): a fresh name in one private directory, made at the
 * first restart and removed with the server (a transplant leaves the name).
 */
function unixRestarts(): { next: () => string; remove: () => void } {
  let dir: string | undefined;
  let n = 0;
  return {
    next: () => `${(dir ??= makeTempDirSync("instar-serve-"))}/r${++n}.sock`,
    remove: () => {
      if (dir) removeTreeSync(dir);
      dir = undefined;
    },
  };
}

/**
 * Moves the socket under a restarted native server (its accept loop ended at
 * the fd limit), paused again if the drain had paused the one before.
 */
function reattach(paths: Paths, options: Parameters<typeof transplant>[0]): void {
  const info = transplant(options);
  if (paths.paused) pauseAccepting(info);
  paths.info = info;
}

/** What the drain does with a server, beyond its public methods. */
interface ServerParts {
  /** Stops accepting and starts answering with `Connection: close`. */
  pause(): boolean;
  /** Undoes {@link ServerParts.pause}. */
  resume(): boolean;
  /** Ends gracefully: idle connections closed, in-flight ones run until they end. */
  finish(): Promise<void>;
  /** Starts closing the WebSockets with 1012, spread over `windowMs`. */
  closeSpread(windowMs: number): void;
  /** Closes WebSockets with 1012, cuts every connection, stops the native server; resolves with how many were cut. */
  forceClose(): Promise<number>;
  /** Direct (portable mode): a stop closes the listening socket now, where the runtime can. */
  refuseNew?(): Promise<void>;
}

function drainParts(
  native: NativeServer,
  paths: Paths,
  addr: Addr,
  idle: IdleConnections,
  removeThrowaway: () => void,
): ServerParts {
  const { proxy } = paths;
  // Portable mode: the native server listens itself, stops accepting when it finishes, and
  // instar has no fd to count or cut connections at (so "keep" has nothing to wait on).
  const direct = !paths.info && !proxy;
  // HTTP/2 clients move only on the GOAWAY of the graceful end: kept, they would stay.
  const keep = idle === "keep" && !native.multiplexed && !direct;
  const resumeProxy = (): boolean => {
    if (proxy!.accepting) return false;
    proxy!.listen().catch((err) => {
      console.error(`instar: the proxy could not accept again: ${(err as Error).message}`);
    });
    return true;
  };
  // A drain pauses more than once (a stop refuses, then drains): the answers switch once.
  let draining = false;
  const answers = (on: boolean) => {
    if (on !== draining) native.draining(on);
    draining = on;
  };
  return {
    pause: () => {
      // Accepting stops first: a failure to switch the answers cannot keep the server accepting.
      paths.paused = true;
      const paused = paths.info ? pauseAccepting(paths.info) : !direct && proxy!.stopAccepting();
      answers(true);
      return paused;
    },
    resume: () => {
      answers(false);
      paths.paused = false;
      return paths.info ? resumeAccepting(paths.info) : !direct && resumeProxy();
    },
    finish: async () => {
      if (keep) {
        // Every connection goes when its client closes it, after a last answer with
        // Connection: close or without one; what stays past the drain timeout is cut.
        await noConnections(addr);
      } else if (direct || mayHoldConnection(addr, true)) {
        // Busy keep-alive connections get their last answer, with Connection: close, first.
        // A direct server that still accepts (Deno) is never quiet under load: one grace then.
        await native.quiet(QUIET_MS, direct ? QUIET_MS : QUIET_MAX_MS);
      }
      // Otherwise this process holds no socket accepted on the listener, in any state (it stopped
      // accepting before the drain delay): nothing is left to answer or to close, so no quiet wait.
      await native.finish();
      await proxy?.drained();
      removeThrowaway();
    },
    // Busy keep-alive clients get a last answer with Connection: close first, so that the
    // runtime's close of idle connections with the listener finds them between requests.
    refuseNew: direct && native.stopListening
      ? async () => {
        answers(true);
        await sleep(LAST_ANSWER_MS);
        native.stopListening!();
      }
      : undefined,
    closeSpread: (windowMs) => native.closeSpread(windowMs),
    forceClose: async () => {
      const closed = await native.closeWebSockets(WS_CLOSE_MS);
      // At the socket, on either path: a response that never ends cannot hold the runtime.
      const cut = closed + (direct ? 0 : cutConnections(addr));
      proxy?.destroyAll();
      await deadline(native.close(), 1000);
      removeThrowaway();
      return cut;
    },
  };
}

/** Portable mode's stop: how long busy keep-alive connections get to hear Connection: close. */
const LAST_ANSWER_MS = 100;

type Paths = {
  info: TransplantInfo | undefined;
  proxy: ConnectionProxy | undefined;
  /** Whether the drain paused accepting (a restarted native server must start paused too). */
  paused?: boolean;
};

function wrap(
  native: NativeServer,
  paths: Paths,
  addr: Addr,
  instar: Instar,
  removeThrowaway: () => void,
): {
  server: Omit<Server, "addr" | "url" | "port" | "hostname" | "fallbackReason">;
  drain: ServerDrain;
} {
  const p = drainParts(native, paths, addr, instar.idleConnections, removeThrowaway);
  const drain: ServerDrain = {
    pauseAccepting: () => void p.pause(),
    resumeAccepting: () => void p.resume(),
    finish: p.finish,
    closeSpread: p.closeSpread,
    forceClose: p.forceClose,
    refuseNew: p.refuseNew,
  };
  let shutdownPromise: Promise<void> | undefined;
  // The standalone server drains like every endpoint of the lifecycle.
  const shutdown = (): Promise<void> =>
    shutdownPromise ??= drainAlone("serve", addr, drain, {
      timeoutMs: instar.drainTimeoutMs ?? 30_000,
      delayMs: instar.drainDelayMs,
    }).then(() => {});
  const finished = native.finished.then(() => paths.proxy?.drained());
  const server = {
    mode: paths.info
      ? "transplant" as const
      : paths.proxy
      ? "fallback" as const
      : "direct" as const,
    native: native.native,
    finished,
    pauseAccepting: p.pause,
    resumeAccepting: p.resume,
    shutdown,
    async stop(closeActiveConnections = false): Promise<void> {
      if (!closeActiveConnections) return await shutdown();
      p.pause();
      await p.forceClose();
    },
    ref: () => {
      native.ref();
      paths.proxy?.ref(true);
    },
    unref: () => {
      native.unref();
      paths.proxy?.ref(false);
    },
    [Symbol.asyncDispose]: shutdown,
  };
  return { server, drain };
}
