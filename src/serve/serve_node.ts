/**
 * Serving a `node:http` / `node:https` server (Express, Fastify, Koa, …) on a
 * listening socket instar owns, at the runtime's native speed, with the
 * draining of {@link serve}.
 *
 * The paths (see src/runtime/serve_node_*.ts for which one each runtime
 * takes): `transplant` starts the server on a throwaway address of the
 * socket's family and moves the socket under its fd (Bun, where node:http runs
 * on the native server and `listen({ fd })` listens elsewhere); `fd` is the
 * runtime's own `listen({ fd })` (Deno); `fallback` is a `node:net` proxy to
 * the server on its throwaway address, taken by `mode: "auto"` only when a
 * precondition of the transplant fails, and never silently.
 *
 * Draining (src/serve/node_drain.ts): stop accepting, answer every response
 * with `Connection: close`, wait until the server went quiet, close idle
 * connections, let requests and WebSockets run on until they end or the
 * drain timeout cuts them (WebSockets of the `ws` package get close code
 * 1012 first).
 *
 * @module
 */

import type * as https from "node:https";
import * as host from "../host.ts";
import { makeTempDirSync, removeTreeSync } from "../host.ts";
import { InstarError } from "../errors.ts";
import { close as closeFd, getsockname } from "../ffi/mod.ts";
import { type Addr, decode, type NetAddr } from "../ffi/sockaddr.ts";
import type { Socket } from "node:net";
import {
  checkIdleConnections,
  DEFAULT_IDLE_CONNECTIONS,
  drainAlone,
  type ServerDrain,
} from "../net/drain.ts";
import type { IdleConnections } from "../types.ts";
import { cutConnections } from "../net/connections.ts";
import {
  pauseAccepting,
  type PausedSocket,
  pauseSocket,
  resumeAccepting,
  resumeSocket,
  transplant,
  type TransplantInfo,
} from "../runtime/transplant.ts";
import { serveNodeAdapter } from "../runtime/mod.ts";
import { watchDeafness } from "../runtime/fd_watch.ts";
import { deadline } from "../timeout.ts";
import { openSocket } from "../net/listener.ts";
import { NodeDrain } from "./node_drain.ts";
import type { NodeHttpServer, NodeServeOptions, NodeServePath, NodeServing } from "./node_types.ts";
import { checkServeMode, QUIET_MAX_MS, QUIET_MS, targetFd, urlOf, WS_CLOSE_MS } from "./options.ts";
import type { DirectAddress, Serving } from "./serve.ts";
import { ConnectionProxy } from "./proxy.ts";
import type { ServeMode, ServeTarget } from "./types.ts";

export type {
  NodeHttpServer,
  NodeServeOptions,
  NodeServePath,
  NodeServing,
  UpgraderServeNodeOptions,
} from "./node_types.ts";
export { splitNodeOptions } from "./options.ts";

function checkServer(server: unknown): NodeHttpServer {
  const s = server as Partial<NodeHttpServer> | null;
  if (
    !s || typeof s !== "object" || typeof s.listen !== "function" ||
    typeof s.close !== "function" || typeof s.prependListener !== "function"
  ) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      "serveNode() needs a node:http or node:https Server (e.g. http.createServer(app))",
    );
  }
  if (s.listening) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      "the server given to serveNode() is already listening: pass it before calling listen()",
    );
  }
  return s as NodeHttpServer;
}

/**
 * A path for a Unix socket of the server's own, and how to remove it: as
 * serve(), in a fresh 0700 directory, never easier to reach than ours.
 */
function privateSocketPath(): { path: string; remove: () => void } {
  const dir = makeTempDirSync("instar-node-");
  return { path: `${dir}/s.sock`, remove: () => removeTreeSync(dir) };
}

/** Where the server starts before the transplant (or behind the proxy), and how to clean up. */
function throwawayFor(addr: Addr): { listen: object; remove: () => void } {
  if (addr.transport === "unix") {
    const { path, remove } = privateSocketPath();
    return { listen: { path }, remove };
  }
  const host = addr.hostname.includes(":") ? "::1" : "127.0.0.1";
  return { listen: { host, port: 0, exclusive: true }, remove: () => {} };
}

/** Starts `server` on `options`; resolves with the address it got. */
function listenOn(server: NodeHttpServer, options: object): Promise<Addr> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options, () => {
      server.off("error", reject);
      const a = server.address();
      if (typeof a === "string") resolve({ transport: "unix", path: a });
      else if (a) resolve({ transport: "tcp", hostname: a.address, port: a.port });
      else reject(new InstarError("SERVE_FAILED", "the node:http server has no address"));
    });
  });
}

// `server.address()` names the socket, not the throwaway address.
function reportAddress(server: NodeHttpServer, addr: Addr): void {
  const value = addr.transport === "unix" ? addr.path : {
    address: addr.hostname,
    family: addr.hostname.includes(":") ? "IPv6" : "IPv4",
    port: addr.port,
  };
  Object.defineProperty(server, "address", { value: () => value, configurable: true });
}

/** How the server accepts on the socket: one of the three paths. */
interface Accepting {
  mode: NodeServePath;
  info?: TransplantInfo;
  proxy?: ConnectionProxy;
  fallbackReason?: InstarError;
  /** The fd the server listens on itself, if it is instar's (the fd watchdog reads it). */
  watchFd?: number;
  remove: () => void;
}

async function viaTransplant(
  server: NodeHttpServer,
  fd: number,
  addr: Addr,
  o: NodeServeOptions & { mode: ServeMode },
): Promise<Accepting> {
  if (o.mode === "fallback" && (await serveNodeAdapter()).auto === "fd") {
    return await viaOwnUpstream(server, fd, addr, o);
  }
  const throwaway = throwawayFor(addr);
  const at = await listenOn(server, throwaway.listen);
  if (o.mode !== "fallback") {
    try {
      const info = transplant({ throwaway: at, fd, dedupe: o.dedupe, knownMasks: o.knownMasks });
      throwaway.remove();
      return { mode: "transplant", info, remove: () => {} };
    } catch (err) {
      const unsupported = err instanceof InstarError && err.code === "TRANSPLANT_UNSUPPORTED";
      if (o.mode === "transplant" || !unsupported) {
        await new Promise((r) => server.close(r));
        throwaway.remove();
        throw err;
      }
      if (o.onFallback) o.onFallback(err);
      else console.warn(`instar: serving node:http through the node:net proxy: ${err.message}`);
      const a = await viaProxy(server, fd, at, throwaway.remove, o.onWarning);
      return { ...a, fallbackReason: err };
    }
  }
  return await viaProxy(server, fd, at, throwaway.remove, o.onWarning);
}

/**
 * The fallback where the runtime's `node:http` listens on an fd (Deno): the
 * server behind the proxy listens on a throwaway socket instar opened, so
 * that the fd watchdog can read its queue and have it listen anew when it
 * stopped accepting at EMFILE (it would stay deaf: Deno's node:net sends no
 * event). Closing the handle on its own port would reset the waiting connections.
 */
async function viaOwnUpstream(
  server: NodeHttpServer,
  fd: number,
  addr: Addr,
  o: NodeServeOptions,
): Promise<Accepting> {
  const unix = addr.transport === "unix" ? privateSocketPath() : undefined;
  const where = unix ? { path: unix.path } : { hostname: "127.0.0.1", port: 0 };
  let up: { fd: number; addr: Addr } | undefined;
  const remove = () => {
    if (up) closeFd(up.fd);
    up = undefined;
    unix?.remove();
  };
  try {
    up = await openSocket(where);
    await (await serveNodeAdapter()).listenOnFd(server, up.fd);
    const a = await viaProxy(server, fd, up.addr, remove, o.onWarning);
    return { ...a, watchFd: up.fd };
  } catch (err) {
    if (server.listening) await new Promise((r) => server.close(r));
    remove();
    throw err;
  }
}

const warnOnConsole = (message: string) => console.warn(`instar: warning: ${message}`);

async function viaProxy(
  server: NodeHttpServer,
  fd: number,
  upstream: Addr,
  remove: () => void,
  warn?: (message: string) => void,
): Promise<Accepting> {
  const proxy = new ConnectionProxy(fd, upstream, warn);
  await proxy.listen();
  if (upstream.transport === "tcp") server.prependListener("connection", realPeer(proxy));
  return { mode: "fallback", proxy, remove };
}

// Behind the proxy a connection comes from loopback: its socket reports the proxied client's
// address instead (read when asked: the proxy learns it once its upstream connection is up).
function realPeer(proxy: ConnectionProxy): (socket: Socket) => void {
  return (socket) => {
    const port = socket.remotePort;
    if (port === undefined) return;
    const before = { address: socket.remoteAddress, family: socket.remoteFamily };
    const define = (key: string, real: (a: NetAddr) => unknown, otherwise: unknown) =>
      Object.defineProperty(socket, key, {
        configurable: true,
        get: () => {
          const a = proxy.remoteOf(port);
          return a ? real(a) : otherwise;
        },
      });
    define("remoteAddress", (a) => a.hostname, before.address);
    define("remotePort", (a) => a.port, port);
    define("remoteFamily", (a) => (a.hostname.includes(":") ? "IPv6" : "IPv4"), before.family);
  };
}

/**
 * Serves a `node:http` or `node:https` server that is not listening yet on
 * the listening socket `target` (an fd, or an object with one), at the
 * runtime's native speed, and drains it like {@link serve}'s servers: see the
 * module comment. `server.address()` reports the socket's address.
 *
 * Standalone, from `@instar/instar/unstable`: the server belongs to this
 * process alone and does not survive an upgrade. An application uses
 * `up.serveNode()` instead: the next generation inherits its socket.
 *
 * @example
 * ```ts
 * import http from "node:http";
 * import { serveNode } from "@instar/instar/unstable";
 *
 * const fd = 3; // a listening socket, e.g. inherited from the previous generation
 * const s = await serveNode(fd, http.createServer((_req, res) => res.end("hello")));
 * console.log(s.mode, s.url.href);
 * ```
 */
export async function serveNode(
  target: ServeTarget,
  server: NodeHttpServer,
  options: NodeServeOptions = {},
): Promise<NodeServing> {
  return (await startServeNode(target, server, options)).server;
}

/**
 * {@link serveNode}, for the lifecycle: also returns the server's part of the
 * drain, from which the lifecycle builds the endpoint of the socket it owns.
 */
export async function startServeNode(
  target: ServeTarget,
  server: NodeHttpServer,
  options: NodeServeOptions = {},
): Promise<Serving<NodeServing>> {
  const fd = targetFd(target, "serveNode()");
  checkServer(server);
  const o = {
    ...options,
    mode: checkServeMode(options.mode),
    idleConnections: checkIdleConnections("idleConnections", options.idleConnections),
  };
  const addr = decode(getsockname(fd));
  // A Listener already accepts on its socket: from now on the HTTP server does.
  if (typeof target === "object" && typeof (target as { accept?: unknown }).accept === "function") {
    pauseSocket(fd);
  }
  const drainer = new NodeDrain(server);
  const adapter = await serveNodeAdapter();
  let a: Accepting;
  if (o.mode === "auto" && adapter.auto === "fd") {
    await adapter.listenOnFd(server, fd);
    a = { mode: "fd", remove: () => {} };
  } else {
    a = await viaTransplant(server, fd, addr, o);
  }
  reportAddress(server, addr);
  const { handle, drain } = serving(server, drainer, fd, addr, a, o);
  return { server: Object.assign(handle, { url: urlOf(addr, isTls(server)) }), drain };
}

/**
 * {@link startServeNode} in portable mode (src/runtime/platform.ts): the
 * server listens on `where` itself (mode `direct`), with no fd of instar's;
 * it drains the same way and stops accepting when it closes.
 */
export async function startServeNodeAt(
  where: DirectAddress,
  server: NodeHttpServer,
  options: NodeServeOptions = {},
): Promise<Serving<NodeServing>> {
  checkServer(server);
  const o = {
    ...options,
    mode: checkServeMode(options.mode),
    idleConnections: checkIdleConnections("idleConnections", options.idleConnections),
  };
  const drainer = new NodeDrain(server);
  const at = "path" in where ? { path: where.path } : { host: where.hostname, port: where.port };
  const addr = await listenOn(server, at);
  const { handle, drain } = serving(server, drainer, -1, addr, { mode: "direct", remove() {} }, o);
  return { server: Object.assign(handle, { url: urlOf(addr, isTls(server)) }), drain };
}

// Either test: Bun's https.Server has no setSecureContext.
// node:https is loaded here, not at start-up, for the generations that never call serveNode().
function isTls(server: NodeHttpServer): boolean {
  return server instanceof (host.builtin("node:https") as typeof https).Server ||
    typeof (server as { setSecureContext?: unknown }).setSecureContext === "function";
}

// Stops and restarts accepting on whichever path the server took.
function acceptControl(fd: number, a: Accepting) {
  let paused: PausedSocket | undefined;
  return {
    /** Whether the drain paused the socket under the server. */
    paused: (): boolean => paused !== undefined,
    // Direct (portable mode): the server stops accepting when it closes; nothing pauses it before.
    pause(): boolean {
      if (a.mode === "direct") return false;
      if (a.info) return pauseAccepting(a.info);
      if (a.proxy) return a.proxy.stopAccepting();
      if (paused) return false;
      paused = pauseSocket(fd);
      return true;
    },
    resume(): boolean {
      if (a.mode === "direct") return false;
      if (a.info) return resumeAccepting(a.info);
      if (a.proxy) {
        if (a.proxy.accepting) return false;
        a.proxy.listen().catch((err) => {
          console.error(`instar: the proxy could not accept again: ${(err as Error).message}`);
        });
        return true;
      }
      if (!paused) return false;
      resumeSocket(paused);
      paused = undefined;
      return true;
    },
  };
}

type AcceptControl = ReturnType<typeof acceptControl>;

/** What the server decides in a drain (src/net/drain.ts). */
function serverDrain(
  d: NodeDrain,
  accept: AcceptControl,
  addr: Addr,
  a: Accepting,
  idle: IdleConnections,
): ServerDrain {
  return {
    pauseAccepting: () => {
      // Accepting stops first: a failure to switch the answers cannot keep it accepting.
      accept.pause();
      d.draining(true);
    },
    resumeAccepting: () => {
      d.draining(false);
      accept.resume();
    },
    finish: async (spreadMs?: number) => {
      if (idle === "keep") {
        // server.close() would close idle connections: each goes when its client closes
        // it (its next request answered with Connection: close), or is cut at the timeout.
        await d.noConnections();
      } else if (a.mode === "direct" || d.connections > 0) {
        // Busy keep-alive connections get their last answer, with Connection: close, first.
        await d.quiet(QUIET_MS, QUIET_MAX_MS);
      }
      // Otherwise the server holds no connection (it stopped accepting before the drain
      // delay): nothing is left to answer or to close. Portable mode still accepts: it waits.
      await d.finish(spreadMs);
      await a.proxy?.drained();
      a.remove();
    },
    closeSpread: (windowMs) => void d.closeSpread(windowMs),
    forceClose: async () => {
      const closed = await d.closeWebSockets(WS_CLOSE_MS);
      // At the socket, on every path: a response that never ends cannot hold the runtime.
      const cut = closed + (a.mode === "direct" ? 0 : cutConnections(addr));
      a.proxy?.destroyAll();
      d.closeAll();
      await deadline(d.finish(), 1000);
      a.remove();
      return cut;
    },
  };
}

/**
 * Deno's node:net server stops accepting for good at EMFILE, without an event:
 * the watchdog reads `fd`, the socket it listens on, until the server closes or
 * the returned path's `remove()` runs (before the fd is closed). Behind the
 * proxy (`watchFd`) the drain pauses the proxy, never the server: `paused`
 * stays false there.
 */
function watchServer(
  server: NodeHttpServer,
  fd: number | undefined,
  a: Accepting,
  accept: AcceptControl,
  o: NodeServeOptions,
): Accepting {
  if (fd === undefined) return a;
  const stop = watchDeafness(server, fd, {
    paused: accept.paused,
    warn: o.onWarning ?? warnOnConsole,
  });
  return {
    ...a,
    remove: () => {
      stop();
      a.remove();
    },
  };
}

function serving(
  server: NodeHttpServer,
  d: NodeDrain,
  fd: number,
  addr: Addr,
  a: Accepting,
  o: NodeServeOptions,
): { handle: Omit<NodeServing, "url"> & { url?: URL }; drain: ServerDrain } {
  const accept = acceptControl(fd, a);
  const watched = watchServer(server, a.mode === "fd" ? fd : a.watchFd, a, accept, o);
  const drain = serverDrain(
    d,
    accept,
    addr,
    watched,
    o.idleConnections ?? DEFAULT_IDLE_CONNECTIONS,
  );
  let shutdownPromise: Promise<void> | undefined;
  const handle = {
    server,
    mode: a.mode,
    fallbackReason: a.fallbackReason,
    addr,
    finished: new Promise<void>((r) => server.once("close", () => r())),
    pauseAccepting: () => {
      const p = accept.pause();
      d.draining(true);
      return p;
    },
    resumeAccepting: () => {
      d.draining(false);
      return accept.resume();
    },
    shutdown: (): Promise<void> =>
      shutdownPromise ??= drainAlone("serveNode", addr, drain, {
        timeoutMs: o.drainTimeoutMs ?? 30_000,
        delayMs: o.drainDelayMs,
      }).then(() => {}),
  };
  return { handle, drain };
}
