/**
 * The Bun side of {@link serve}: `Bun.serve` on a loopback port. The server
 * object (also what handlers get) reports the real socket's `port`,
 * `hostname` and `url` (and, behind the proxy, the real client's `requestIP`).
 * While draining, `server.reload()` swaps in handlers and routes that answer
 * with `Connection: close` (nothing is wrapped in steady state, so static
 * routes keep Bun's fastest path); WebSockets are tracked so that the last
 * ones get close code 1012.
 *
 * @module
 */

import type { AdapterStart, NativeServer, ServeAdapter } from "./serve_types.ts";
import { type ClosableSocket, QuietClock, WebSocketSet, withClose } from "./http_drain.ts";
import { nativeServe } from "./natives.ts";

type SocketAddress = { address: string; port: number; family: string };

interface BunServer {
  port: number;
  hostname: string;
  url: URL;
  requestIP(req: Request): SocketAddress | null;
  stop(closeActiveConnections?: boolean): Promise<void>;
  reload(options: Record<string, unknown>): void;
  ref(): void;
  unref(): void;
}

/** Starts `Bun.serve` for {@link serve}. */
export const bunAdapter: ServeAdapter = {
  start(s: AdapterStart): NativeServer {
    const opts: Record<string, unknown> = { ...s.options };
    // The socket decides where to listen.
    for (const k of ["fd", "reusePort", "ipv6Only"]) delete opts[k];
    // Given as `fetch` or as `handler` (Deno's name): on Bun it is `fetch(req, server)`.
    if (s.handler !== undefined) opts.fetch = s.count ? counting(s.handler, s.count) : s.handler;
    Object.assign(
      opts,
      "path" in s.listenOn
        ? { unix: s.listenOn.path }
        : { hostname: s.listenOn.hostname, port: s.listenOn.port ?? 0, reusePort: false },
    );

    const sockets = new WebSocketSet();
    const clock = new QuietClock();
    if (opts.websocket) opts.websocket = trackSockets(opts.websocket as WebSocketHandlers, sockets);
    // The runtime's own Bun.serve: instar/auto may have replaced the global.
    const server = nativeServe("Bun")(opts) as BunServer;
    // Handlers get this very object as `server`: own properties shadow the
    // prototype's getters, so port/hostname/url name the real socket (and,
    // behind the proxy, requestIP the real client) without wrapping a handler.
    const protoRequestIP = server.requestIP;
    const requestIP = (req: Request): SocketAddress | null => {
      const ip = protoRequestIP.call(server, req);
      if (!ip || !s.proxied) return ip;
      const real = s.remoteOf(ip.port);
      if (!real) return ip;
      return {
        address: real.hostname,
        port: real.port,
        family: real.hostname.includes(":") ? "IPv6" : "IPv4",
      };
    };
    const throwawayPort = server.port;
    Object.defineProperties(server, {
      port: {
        get: () => {
          const { addr } = s.real();
          return addr.transport === "tcp" ? addr.port : undefined;
        },
        configurable: true,
      },
      hostname: {
        get: () => {
          const { addr } = s.real();
          return addr.transport === "tcp" ? addr.hostname : undefined;
        },
        configurable: true,
      },
      url: { get: () => s.real().url, configurable: true },
      requestIP: { value: requestIP, configurable: true, writable: true },
    });

    let done: () => void = () => {};
    const finished = new Promise<void>((r) => (done = r));
    const stop = (force: boolean): Promise<void> => {
      const p = Promise.resolve(server.stop(force)).then(done);
      return p;
    };
    return {
      native: server,
      throwaway: "path" in s.listenOn
        ? { transport: "unix", path: s.listenOn.path }
        : { transport: "tcp", hostname: s.listenOn.hostname, port: throwawayPort },
      tls: opts.tls !== undefined && opts.tls !== null && opts.tls !== false,
      // Bun.serve speaks HTTP/1.1 only.
      multiplexed: false,
      draining: (on) => {
        // The quiet wait counts from the drain's start, not from the last answer before it.
        if (on) clock.mark();
        server.reload(on ? closing(opts, clock) : pick(opts));
      },
      quiet: (idleMs, maxMs) => clock.quiet(idleMs, maxMs),
      // Closes idle connections; in-flight requests, streams and WebSockets run until they end.
      finish: () => stop(false),
      closeWebSockets: (ms) => sockets.closeAll(ms),
      closeSpread: (windowMs) => void sockets.closeSpread(windowMs),
      close: () => stop(true),
      // Bun stops listening at once; requests in flight, idle connections and WebSockets go on.
      stopListening: () => void server.stop(false),
      finished,
      listening(): void {},
      ref: () => server.ref(),
      unref: () => server.unref(),
    };
  },
};

type Handler = (...args: unknown[]) => unknown;

// `fetch` counting its calls in `count[0]`. Bun passes `(req, server)` whatever the handler's
// length, so the wrapper always passes both on (fixed parameters: no rest array per request).
function counting(fetch: (req: Request, server: never) => unknown, count: Float64Array): unknown {
  return function (this: unknown, req: Request, server: never) {
    count[0]++;
    return fetch.call(this, req, server);
  };
}
type SocketHandler = (socket: ClosableSocket, ...rest: unknown[]) => unknown;
type WebSocketHandlers = Record<string, unknown> & { open?: SocketHandler; close?: SocketHandler };

// The user's websocket handlers, with every socket counted from open to close.
function trackSockets(ws: WebSocketHandlers, set: WebSocketSet): WebSocketHandlers {
  return {
    ...ws,
    open(socket: ClosableSocket, ...rest: unknown[]) {
      set.add(socket);
      return ws.open?.(socket, ...rest);
    },
    close(socket: ClosableSocket, ...rest: unknown[]) {
      set.delete(socket);
      return ws.close?.(socket, ...rest);
    },
  };
}

// What server.reload() takes: the handlers and routes as the user gave them.
function pick(opts: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of ["fetch", "routes", "error"]) if (opts[k] !== undefined) out[k] = opts[k];
  return out;
}

const METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "PATCH",
  "OPTIONS",
  "CONNECT",
  "TRACE",
]);

// The same handlers and routes, answering with `Connection: close`.
function closing(opts: Record<string, unknown>, clock: QuietClock): Record<string, unknown> {
  const out = pick(opts);
  if (typeof out.fetch === "function") out.fetch = closingHandler(out.fetch as Handler, clock);
  if (out.routes && typeof out.routes === "object") {
    const routes: Record<string, unknown> = {};
    for (const [path, v] of Object.entries(out.routes)) routes[path] = closingRoute(v, clock);
    out.routes = routes;
  }
  return out;
}

// Bun calls handlers with `this` set to the server: kept, so `this.upgrade(req)` still works.
function closingHandler(h: Handler, clock: QuietClock): Handler {
  const answer = (r: unknown) => {
    clock.mark();
    return withClose(r as Response);
  };
  return function (this: unknown, ...args: unknown[]) {
    const res = h.apply(this, args);
    return res instanceof Promise ? res.then(answer) : answer(res);
  };
}

// A static Response, a handler, or handlers per method; anything else (an HTML
// bundle, `false`) is served as it is.
function closingRoute(v: unknown, clock: QuietClock): unknown {
  if (v instanceof Response) return closingHandler(() => v.clone(), clock);
  if (typeof v === "function") return closingHandler(v as Handler, clock);
  if (isMethodTable(v)) {
    return Object.fromEntries(Object.entries(v).map(([m, h]) => [m, closingRoute(h, clock)]));
  }
  return v;
}

// `{ GET: …, POST: … }`: a plain object whose keys are all HTTP methods. An HTML
// bundle or a Bun.file() has no own keys and is left as it is.
function isMethodTable(v: unknown): v is Record<string, unknown> {
  if (!v || typeof v !== "object" || Object.getPrototypeOf(v) !== Object.prototype) return false;
  const keys = Object.keys(v);
  return keys.length > 0 && keys.every((k) => METHODS.has(k));
}
