/**
 * `server.listen()` of `node:http` / `node:https` servers under instar/auto
 * (Express's `app.listen()`, Fastify, Koa, Next.js's standalone server all
 * end here): the server goes to `up.serveNode()` on the address the
 * arguments name. Node's argument forms: `(port?, host?, backlog?, cb?)`,
 * `(path, backlog?, cb?)`, `(options, cb?)`. Without a host Node listens on
 * `::` (both families) and falls back to `0.0.0.0` where IPv6 is missing; so
 * does this.
 *
 * A plain `node:net` server (raw TCP) goes to net_listen.ts the same way:
 * its own `listen({ fd })` on instar's socket.
 *
 * Passed through untouched: a server instar already serves (serveNode starts
 * it on a throwaway address first), and `listen({ fd })` / a handle, which
 * name a socket the application already has.
 *
 * @module
 */

import type * as http from "node:http";
import type * as https from "node:https";
import type * as net from "node:net";
import { SystemError } from "../errors.ts";
import * as host from "../host.ts";
import { insideOf } from "../lifecycle/inside.ts";
import type { Upgrader } from "../lifecycle/upgrader.ts";
import type { SocketSpec } from "../net/specs.ts";
import type { UpgraderServeNodeOptions } from "../serve/serve_node.ts";
import type { NodeHttpServer } from "../serve/node_types.ts";
import { type OriginalListen, serveNet } from "./net_listen.ts";
import type { AutoReadiness } from "./readiness.ts";
import type { Twin } from "./ready_url.ts";
import { unsupported } from "./settings.ts";

type Listen = (this: net.Server, ...args: unknown[]) => unknown;

/** Where a listen call asked to listen, and its callback. */
export interface NodeListen {
  /** `{ port, hostname? }` or `{ path }`, with `backlog`. */
  spec: { port?: number; hostname?: string; path?: string; backlog?: number };
  /** The `listening` callback, if given. */
  callback: (() => void) | undefined;
  /** `listen({ fd })` or a handle: not an address. */
  own: boolean;
}

/** Reads Node's `listen()` arguments. */
export function parseListen(args: unknown[]): NodeListen {
  const rest = [...args];
  const callback = typeof rest.at(-1) === "function" ? rest.pop() as () => void : undefined;
  const [first, second, third] = rest;
  const backlog = (v: unknown) => (typeof v === "number" ? { backlog: v } : {});
  if (first !== null && typeof first === "object") {
    const o = first as Record<string, unknown>;
    if ("fd" in o || "_handle" in o || "handle" in o) return { spec: {}, callback, own: true };
    // reusePort is dropped: instar's socket is the one socket on the port (see bun_serve.ts).
    if (typeof o.path === "string") {
      return { spec: { path: o.path, ...backlog(o.backlog) }, callback, own: false };
    }
    const spec = { port: port(o.port), ...hostOf(o.host), ...backlog(o.backlog) };
    return { spec, callback, own: false };
  }
  if (typeof first === "string" && !/^\d+$/.test(first)) {
    return { spec: { path: first, ...backlog(second) }, callback, own: false };
  }
  if (typeof second === "number") {
    return { spec: { port: port(first), backlog: second }, callback, own: false };
  }
  return {
    spec: { port: port(first), ...hostOf(second), ...backlog(third) },
    callback,
    own: false,
  };
}

function port(v: unknown): number {
  if (v === undefined || v === null) return 0;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    unsupported(`server.listen(${String(v)})`, "is not a port");
  }
  return n;
}

function hostOf(v: unknown): { hostname?: string } {
  return typeof v === "string" && v !== "" ? { hostname: v } : {};
}

function where(spec: NodeListen["spec"]): string {
  return spec.path !== undefined ? `unix:${spec.path}` : `${spec.hostname ?? "::"}:${spec.port}`;
}

function describe(spec: NodeListen["spec"]): string {
  return `listen(${where(spec)})`;
}

/** Whether a Bun.serve call comes from a node:http listen instar passed through (Bun runs node:http on it). */
let passing = 0;

/** True while a passed-through node `listen()` runs (Bun's node:http calls `Bun.serve` inside). */
export function insideNodeListen(): boolean {
  return passing > 0;
}

/** Replaces `listen()` on node:net's, node:http's and node:https's Server prototypes. */
export function installNodeListen(up: Upgrader, readiness: AutoReadiness): void {
  const netMod = host.builtin<typeof net>("node:net");
  const httpMod = host.builtin<typeof http>("node:http");
  const httpsMod = host.builtin<typeof https>("node:https");
  const taken = new WeakSet<object>();
  const isHttp = (s: object) => s instanceof httpMod.Server || s instanceof httpsMod.Server;
  const protos = [netMod.Server.prototype, httpMod.Server.prototype, httpsMod.Server.prototype];
  for (const proto of new Set(protos)) {
    if (!Object.hasOwn(proto, "listen")) continue; // inherits a replaced one
    const original = proto.listen as Listen;
    const pass = (server: net.Server, args: unknown[]) => {
      passing++;
      try {
        return original.apply(server, args);
      } finally {
        passing--;
      }
    };
    // node:http / node:https go to serveNode (with a twin for the ready URL); a raw node:net
    // server listens on instar's socket itself (net_listen.ts).
    const start = (server: net.Server, parsed: NodeListen) => {
      if (isHttp(server)) {
        const node = server as unknown as NodeHttpServer;
        const open = (spec: object) => up.serveNode(node, spec as UpgraderServeNodeOptions);
        return serve(readiness, server, parsed, open, twinOf(httpMod, taken, server));
      }
      const listen: OriginalListen = (options, cb) => pass(server, [options, cb]);
      const open = (spec: object) => serveNet(insideOf(up), server, spec as SocketSpec, listen);
      serve(readiness, server, parsed, open);
    };
    (proto as { listen: Listen }).listen = function listen(this: net.Server, ...args: unknown[]) {
      if (taken.has(this)) return pass(this, args);
      const parsed = parseListen(args);
      if (parsed.own) return pass(this, args);
      taken.add(this);
      start(this, parsed);
      return this;
    };
  }
}

/**
 * A plain `http.Server` with `server`'s `request` listeners (the application: Express's app,
 * Next.js's handler) on the Unix socket `path`, for the ready URL (ready_url.ts). Its
 * listen passes through (`taken`).
 */
function twinOf(httpMod: typeof http, taken: WeakSet<object>, server: net.Server): Twin {
  return (path) =>
    new Promise((resolve, reject) => {
      const twin = httpMod.createServer();
      for (const l of server.listeners("request")) twin.on("request", l as () => void);
      taken.add(twin);
      twin.once("error", reject);
      twin.listen(path, () => resolve(() => (twin.close(), twin.closeAllConnections?.())));
    });
}

// Serves `server` where `l` asks (through `open`), and runs the application's callback once
// it serves (a failure is the server's `error` event). `twin`: for the ready URL (HTTP only).
function serve(
  readiness: AutoReadiness,
  server: net.Server,
  l: NodeListen,
  open: (spec: object) => Promise<unknown>,
  twin?: Twin,
): void {
  const serving = l.spec.path !== undefined || l.spec.hostname !== undefined
    ? open(l.spec)
    : open({ ...l.spec, hostname: "::" }).catch((err) => {
      if (!(err instanceof SystemError) || !["EAFNOSUPPORT", "EADDRNOTAVAIL"].includes(err.code)) {
        throw err;
      }
      return open({ ...l.spec, hostname: "0.0.0.0" });
    });
  readiness.follow(describe(l.spec), serving, twin).then(
    () => l.callback?.call(server),
    (err) => server.emit("error", err),
  );
}
