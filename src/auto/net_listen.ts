/**
 * `listen()` of a plain `node:net` server (raw TCP, a Unix socket) under
 * instar/auto. The socket is claimed as `up.serve()`'s (inherited when the
 * previous generation had the same address, else opened fresh); the
 * application's own server accepts on it through `listen({ fd })` on a
 * close-on-exec duplicate, so its connections stay `net.Socket`s and instar
 * keeps its own fd to pass on.
 *
 * Its drain is a listener's: accepting pauses at the handover (every epoll
 * registration of the socket is removed, as for the other servers: the dup
 * and the application's handle stay as they are), the server then closes
 * its duplicate and the drain waits for its connections to end by
 * themselves (a raw protocol has no `Connection: close` to ask them), and
 * cuts the ones left at the drain timeout. The server counts what it
 * accepts and what is open, for `up.metrics()`.
 *
 * In portable mode (no libc: src/runtime/platform.ts) the server listens on
 * the address itself, as the runtime's HTTP servers do there; accepting
 * stops when a stop closes it, and the drain waits for its connections the
 * same way.
 *
 * @module
 */

import type * as net from "node:net";
import type { Inside } from "../lifecycle/inside.ts";
import type { ServerDrain } from "../net/drain.ts";
import type { DirectAddress } from "../serve/serve.ts";
import type { SocketSpec } from "../net/specs.ts";
import { listenOnDup } from "../runtime/serve_node_deno.ts";
import { watchDeafness } from "../runtime/fd_watch.ts";
import { accepting } from "../lifecycle/endpoints.ts";
import type { Addr } from "../types.ts";

/** The original `listen()` of the server (instar/auto's replacement passes it through). */
export type OriginalListen = (
  options: { fd: number } | { host: string; port: number } | { path: string },
  callback: () => void,
) => void;

/** A raw server served through instar: what it accepted and what is open. */
export interface NetServing {
  /** The address of the socket (port 0 resolved). */
  readonly addr: Addr;
  /** Connections accepted by this generation. */
  readonly accepted: number;
}

/** The connections of one `net.Server`, tracked from its `connection` event. */
class Connections {
  accepted = 0;
  #open = new Set<net.Socket>();
  #emptied: (() => void)[] = [];

  constructor(server: net.Server) {
    server.prependListener("connection", (socket: net.Socket) => {
      this.accepted++;
      this.#open.add(socket);
      socket.once("close", () => {
        this.#open.delete(socket);
        if (this.#open.size === 0) { for (const r of this.#emptied.splice(0)) r(); }
      });
    });
  }

  get open(): number {
    return this.#open.size;
  }

  /** Resolves once no connection is open. */
  ended(): Promise<void> {
    return this.#open.size === 0 ? Promise.resolve() : new Promise((r) => this.#emptied.push(r));
  }

  /** Destroys every open connection; returns how many. */
  cut(): number {
    const n = this.#open.size;
    for (const s of this.#open) s.destroy();
    return n;
  }
}

/**
 * Serves the application's `server` on the socket `spec` names, claimed
 * through `inside`; `listen` is the server's original `listen()`. Resolves
 * once the server listens (its `listening` event has run).
 */
export function serveNet(
  inside: Inside,
  server: net.Server,
  spec: SocketSpec,
  listen: OriginalListen,
): Promise<NetServing> {
  const conns = new Connections(server);
  return inside.serveCounted(spec, async (at, addr) => {
    const portable = typeof at !== "number";
    if (portable) await listenAt(server, at, listen);
    else await listenOnDup(server, at, listen);
    reportAddress(server, portable ? addressOf(server, addr) : addr);
    const serving: NetServing = {
      addr: portable ? addressOf(server, addr) : addr,
      get accepted() {
        return conns.accepted;
      },
    };
    return {
      server: serving,
      drain: portable ? directDrain(server, conns) : drainOf(server, at, conns, listen),
    };
  });
}

// Portable mode: the server listens on the address itself.
function listenAt(server: net.Server, at: DirectAddress, listen: OriginalListen): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    listen("path" in at ? { path: at.path } : { host: at.hostname, port: at.port }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

// The address the server got (port 0 resolved), read before reportAddress replaces address().
function addressOf(server: net.Server, asked: Addr): Addr {
  const a = server.address();
  if (a === null || typeof a === "string" || asked.transport !== "tcp") return asked;
  return { transport: "tcp", hostname: asked.hostname, port: a.port };
}

// Portable mode's drain: no libc to pause a reactor with, and no next generation to leave the
// socket's queue to: a stop closes the server, then waits for its connections.
function directDrain(server: net.Server, conns: Connections): ServerDrain {
  const close = () => {
    try {
      server.close();
    } catch { /* the application closed it already */ }
  };
  return {
    pauseAccepting: close,
    resumeAccepting: () => {},
    refuseNew: () => Promise.resolve(close()),
    finish: () => {
      close();
      return conns.ended();
    },
    forceClose: () => Promise.resolve(conns.cut()),
    connections: () => Promise.resolve(conns.open),
  };
}

// `server.address()` as the application expects it: the port it got for port 0, the path
// for a Unix socket (a server listening on an fd may not know them in every runtime).
function reportAddress(server: net.Server, addr: Addr): void {
  const value = addr.transport === "unix" ? addr.path : {
    address: addr.hostname,
    family: addr.hostname.includes(":") ? "IPv6" : "IPv4",
    port: addr.port,
  };
  Object.defineProperty(server, "address", { value: () => value, configurable: true });
}

/** The server's part of its endpoint's drain (src/net/drain.ts); the lifecycle owns `fd`. */
function drainOf(
  server: net.Server,
  fd: number,
  conns: Connections,
  listen: OriginalListen,
): ServerDrain {
  // Every reactor of this process stops accepting on the socket, the duplicate included.
  const pausing = accepting(fd);
  let paused = false;
  // Deno's node:net server stops accepting for good at EMFILE, without an event.
  watchDeafness(server, fd, {
    paused: () => paused,
    warn: (message) => console.warn(`instar: warning: ${message}`),
    listen,
  });
  return {
    pauseAccepting: () => {
      paused = true;
      pausing.pauseAccepting();
    },
    resumeAccepting: () => {
      pausing.resumeAccepting();
      paused = false;
    },
    finish: () => {
      // Closes the duplicate only; the connections it accepted go on until they end.
      try {
        server.close();
      } catch { /* the application closed it already */ }
      return conns.ended();
    },
    forceClose: () => Promise.resolve(conns.cut()),
    connections: () => Promise.resolve(conns.open),
  };
}
