/**
 * Checking and splitting the one options object of {@link serve} and
 * `up.serve()`: where to listen, the handler (`fetch` or `handler`), instar's
 * options and the runtime's own; and what serve() and serveNode() share: the
 * target and mode checks, the server's URL, the drain's timings.
 *
 * @module
 */

import { InstarError, invalid } from "../errors.ts";
import { servesRoutesAlone } from "../runtime/mod.ts";
import type { SocketSpec } from "../net/specs.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import type { ServeMode, ServeOptions, ServeTarget, UpgraderServeOptions } from "./types.ts";
import type { NodeServeOptions, UpgraderServeNodeOptions } from "./node_types.ts";

/**
 * After the drain delay, a server waits until it answered nothing for this long
 * (at most `QUIET_MAX_MS`) before it closes idle connections: every busy
 * keep-alive connection has had its last answer by then, and a connection it
 * closes has been idle at least this long — a client that stalls for less (GC,
 * a starved CPU) and then sends on it is never cut. 100 ms lost requests of
 * stalled clients on a loaded 2-core machine; 1 s has not.
 */
export const QUIET_MS = 1_000;
/** The longest quiet wait (see {@link QUIET_MS}). */
export const QUIET_MAX_MS = 5_000;
/** How long WebSockets closed with 1012 get to answer the close before their connections are cut. */
export const WS_CLOSE_MS = 500;

/** The fd of a serve target (an fd, or an object with one); `who` names the caller in the error. */
export function targetFd(target: ServeTarget, who: string): number {
  const fd = typeof target === "number" ? target : target?.fd;
  if (!Number.isInteger(fd) || fd < 0) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `${who} target is ${String(fd)}; expected a listening fd or an object with an fd`,
    );
  }
  return fd;
}

/** Throws `INVALID_ARGUMENT` unless `mode` is a serve mode; absent is "auto". */
export function checkServeMode(mode: unknown): ServeMode {
  if (mode === undefined) return "auto";
  if (mode !== "auto" && mode !== "transplant" && mode !== "fallback") {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `mode is ${JSON.stringify(mode)}; expected "auto", "transplant" or "fallback"`,
    );
  }
  return mode;
}

/** The URL a server on `addr` answers at (`http+unix://…` for a Unix socket). */
export function urlOf(addr: Addr, tls: boolean): URL {
  const scheme = tls ? "https" : "http";
  if (addr.transport === "unix") {
    return new URL(`${scheme}+unix://${encodeURIComponent(addr.path)}/`);
  }
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return new URL(`${scheme}://${host}:${addr.port}/`);
}

/** A handler as the adapters take it: Deno calls it with the info, Bun with the server. */
export type AnyHandler = (request: Request, infoOrServer: never) => unknown;

const SERVE_FORM = 'serve(fd, { fetch: (req) => new Response("hi"), ...otherOptions })';
const UP_SERVE_FORM =
  'up.serve({ port: 8080, fetch: (req) => new Response("hi"), ...otherOptions })';

// Where the server listens: up.serve()'s to open the socket, meaningless to serve(fd).
const LISTEN_KEYS = ["hostname", "port", "path", "unix", "backlog", "socketMode", "name"] as const;

function wrongForm(call: string, form: string, why: string): never {
  throw new InstarError(
    "INVALID_ARGUMENT",
    `${call} takes one options object with the handler in it, ${form}; ${why}`,
  );
}

/**
 * Throws INVALID_ARGUMENT, showing the one-object form, for anything else:
 * a function, a missing object, or more arguments (the old
 * `(…, options, handler)` form).
 *
 * @example
 * ```ts
 * import { checkOneObject } from "./options.ts";
 *
 * checkOneObject("up.serve()", { port: 8080, fetch: () => new Response("hi") }, 1);
 * ```
 */
export function checkOneObject(
  call: "serve()" | "up.serve()",
  options: unknown,
  args: number,
): void {
  const form = call === "serve()" ? SERVE_FORM : UP_SERVE_FORM;
  const max = call === "serve()" ? 2 : 1;
  if (typeof options === "function") wrongForm(call, form, "it got a function");
  if (args > max) {
    wrongForm(call, form, `it got ${args} arguments (the handler is no longer a separate one)`);
  }
  if (options === null || typeof options !== "object") {
    wrongForm(call, form, `it got ${String(options)}`);
  }
}

/**
 * Takes the handler out of `options`: `fetch` (Bun's and srvx's name) or
 * `handler` (Deno's), never both; neither is allowed only with Bun's
 * `routes`, on the runtime that serves them alone (`runtime/mod.ts` says
 * which). Returns it and the other options.
 *
 * @example
 * ```ts
 * import { takeHandler } from "./options.ts";
 *
 * const { handler, rest } = takeHandler({ fetch: () => new Response("hi"), mode: "auto" });
 * ```
 */
export function takeHandler(
  options: Record<string, unknown>,
): { handler: AnyHandler | undefined; rest: Record<string, unknown> } {
  const routesAlone = servesRoutesAlone();
  const { fetch, handler, ...rest } = options;
  if (fetch !== undefined && handler !== undefined) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      "serve options have both `fetch` and `handler`; pass the request handler as one of them",
    );
  }
  const h = fetch ?? handler;
  const routes = routesAlone && rest.routes !== undefined;
  if (h === undefined && !routes) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      "serve options have no request handler; pass `fetch: (req) => Response` " +
        `(or \`handler\`, Deno's name)${routesAlone ? " or Bun's `routes`" : ""}`,
    );
  }
  if (h !== undefined && typeof h !== "function") {
    invalid(fetch !== undefined ? "fetch" : "handler", h, "a function (req) => Response");
  }
  return { handler: h as AnyHandler | undefined, rest };
}

/**
 * Throws INVALID_ARGUMENT if options of `serve(fd, …)` say where to listen:
 * the fd's socket decides that.
 *
 * @example
 * ```ts
 * import { refuseListenKeys } from "./options.ts";
 *
 * refuseListenKeys({ mode: "auto" }); // fine; { port: 8080 } throws
 * ```
 */
export function refuseListenKeys(options: Record<string, unknown>): void {
  for (const k of LISTEN_KEYS) {
    if (options[k] !== undefined) {
      throw new InstarError(
        "INVALID_ARGUMENT",
        `serve(fd, options) has \`${k}\`, but it serves on the fd's socket; ` +
          "say where to listen to up.serve() or listen()",
      );
    }
  }
}

/**
 * Throws INVALID_ARGUMENT when `up.serve()`'s or `up.serveNode()`'s options
 * have a `drainTimeoutMs`: a generation's servers drain together within the
 * Upgrader's `drainTimeout`, so a server's own would be ignored.
 *
 * @example
 * ```ts
 * import { refuseDrainTimeout } from "./options.ts";
 *
 * refuseDrainTimeout("up.serve()", { port: 8080 }); // fine; { drainTimeoutMs: 5000 } throws
 * ```
 */
export function refuseDrainTimeout(call: "up.serve()" | "up.serveNode()", options: object): void {
  const value = (options as { drainTimeoutMs?: unknown }).drainTimeoutMs;
  if (value === undefined) return;
  throw new InstarError(
    "INVALID_ARGUMENT",
    `${call} option drainTimeoutMs is ${String(value)}; a generation's servers drain within ` +
      "the Upgrader's drain timeout: pass Upgrader.create({ drainTimeout })",
  );
}

/**
 * Splits `up.serve()`'s options into where to listen (for `listen()` /
 * `openSocket()`: `port` and `hostname`, or `path` with `socketMode` as the
 * file's `mode`; `backlog`) and the options of {@link serve}, whose handler
 * it checks (see {@link takeHandler}) before any socket is opened.
 *
 * @example
 * ```ts
 * import { splitListenOptions } from "./options.ts";
 *
 * const { listen, serve } = splitListenOptions({ port: 8080, fetch: () => new Response("hi") });
 * // listen: { port: 8080 }; serve: { fetch }
 * ```
 */
export function splitListenOptions<WebSocketData = undefined>(
  options: UpgraderServeOptions<WebSocketData>,
): { listen: SocketSpec; serve: ServeOptions<WebSocketData> } {
  refuseDrainTimeout("up.serve()", options);
  const o = options as unknown as Record<string, unknown>;
  const { hostname, port, path, backlog, socketMode, name, ...rest } = o;
  const serve = rest as unknown as ServeOptions<WebSocketData>;
  // Checked before a socket is claimed: a bad handler must not cost an inherited socket.
  takeHandler(rest);
  if (path !== undefined && (port !== undefined || hostname !== undefined)) {
    invalid("up.serve() options", "`path` with `port`/`hostname`", "a TCP or a Unix socket");
  }
  if (path !== undefined) {
    return {
      listen: defined({ path, backlog, mode: socketMode, name } as unknown as SocketSpec),
      serve,
    };
  }
  if (port === undefined && typeof name === "string") return { listen: { name }, serve };
  if (port === undefined) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `up.serve() options have no \`port\` (TCP) or \`path\` (Unix socket): ${UP_SERVE_FORM}`,
    );
  }
  return { listen: defined({ hostname, port, backlog, name } as unknown as SocketSpec), serve };
}

// Listen options as a caller would write them: without the keys not given.
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

// Here rather than in serve_node.ts: up.serveNode() claims its socket before it loads serveNode().
const NODE_KEYS = new Set([
  "mode",
  "onFallback",
  "onWarning",
  "drainDelayMs",
  "idleConnections",
  "dedupe",
  "knownMasks",
]);
const NODE_LISTEN_KEYS = new Set(["hostname", "port", "path", "backlog", "socketMode", "name"]);

/**
 * Splits `up.serveNode()`'s options into where to listen and instar's
 * options; an unknown key or a TCP and Unix address together is
 * `INVALID_ARGUMENT`, before any socket is claimed.
 */
export function splitNodeOptions(
  options: UpgraderServeNodeOptions,
): { listen: SocketSpec; node: NodeServeOptions } {
  if (options === null || typeof options !== "object") {
    invalid("up.serveNode() options", options, "{ port, hostname? } or { path } and instar's");
  }
  refuseDrainTimeout("up.serveNode()", options);
  const listen: Record<string, unknown> = {}, node: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined) continue;
    if (NODE_LISTEN_KEYS.has(k)) listen[k === "socketMode" ? "mode" : k] = v;
    else if (NODE_KEYS.has(k)) node[k] = v;
    else {
      invalid(
        "up.serveNode() option",
        k,
        "hostname, port, path, backlog, socketMode, name, mode, onFallback, onWarning, drainDelayMs",
      );
    }
  }
  if (listen.path !== undefined && (listen.port !== undefined || listen.hostname !== undefined)) {
    invalid("up.serveNode() options", "`path` with `port`/`hostname`", "a TCP or a Unix socket");
  }
  if (listen.path === undefined && listen.port === undefined && listen.name === undefined) {
    invalid("up.serveNode() options", JSON.stringify(options), "a `port`, a `path` or a `name`");
  }
  return { listen: listen as SocketSpec, node: node as NodeServeOptions };
}
