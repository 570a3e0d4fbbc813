/**
 * {@link serve}'s fallback: a `node:net` server accepts on the socket and
 * pipes every connection to the native server on its loopback port, keeping
 * the client's real address for the handlers.
 *
 * @module
 */

import type * as net from "node:net";
import * as host from "../host.ts";
import { dupCloexec } from "../ffi/mod.ts";
import { onFdsRecovered } from "../runtime/fd_exhaustion.ts";
import { watchDeafness } from "../runtime/fd_watch.ts";
import type { Addr, NetAddr } from "../ffi/sockaddr.ts";

/**
 * Accepts on a duplicate of the fd with node:net and pipes each connection to `upstream`.
 *
 * @example
 * ```ts
 * import { ConnectionProxy } from "./proxy.ts";
 *
 * const proxy = new ConnectionProxy(3, { transport: "tcp", hostname: "127.0.0.1", port: 40123 });
 * await proxy.listen();
 * ```
 */
export class ConnectionProxy {
  // node:net is loaded by listen(), not at start-up: serve() seldom needs this fallback.
  #net: typeof net | undefined;
  #server: net.Server | undefined;
  #pairs = new Set<net.Socket>();
  #remotes = new Map<number, NetAddr>();
  #closedAll: (() => void) | undefined;
  #refed = true;
  #unhook: (() => void) | undefined;
  /** `warn` reports a recovery (its node:net server listening anew after EMFILE on Deno). */
  constructor(
    readonly fd: number,
    readonly upstream: Addr,
    readonly warn: (message: string) => void = (m) => console.warn(`instar: warning: ${m}`),
  ) {}

  /** Whether the accepting server keeps the process alive (like the native server's ref()). */
  ref(on: boolean): void {
    this.#refed = on;
    if (on) this.#server?.ref();
    else this.#server?.unref();
  }

  /** The client's address behind the proxied connection from loopback port `port`. */
  remoteOf(port: number): NetAddr | undefined {
    return this.#remotes.get(port);
  }

  /**
   * Deno's node:net stops accepting for good at EMFILE, without an event: once
   * an accept path of this process has fds again, listen anew.
   */
  #relisten(): void {
    if (!this.stopAccepting()) return;
    this.listen().catch((err) => {
      console.error(`instar: the proxy could not accept again: ${(err as Error).message}`);
    });
  }

  /** Starts accepting; resolves once node:net listens. */
  listen(): Promise<void> {
    this.#unhook?.();
    this.#unhook = onFdsRecovered(() => this.#relisten());
    // node:net owns (and closes) the fd it listens on: give it a duplicate.
    const dup = dupCloexec(this.fd);
    this.#net = host.builtin("node:net") as typeof net;
    const server = this.#net.createServer({ allowHalfOpen: true }, (c) => this.#pipe(c));
    this.#server = server;
    if (!this.#refed) server.unref();
    return new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ fd: dup }, () => {
        server.off("error", reject);
        // When no other accept path reports recovery: stops with the server (stopAccepting).
        watchDeafness(server, this.fd, { warn: this.warn });
        resolve();
      });
    });
  }

  #pipe(client: net.Socket): void {
    const u = this.upstream, { connect } = this.#net!;
    const up = u.transport === "unix"
      ? connect({ path: u.path, allowHalfOpen: true })
      : connect({ host: u.hostname, port: u.port, allowHalfOpen: true, noDelay: true });
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

  /** Whether the proxy accepts on the socket. */
  get accepting(): boolean {
    return this.#server !== undefined;
  }

  /** Stops accepting (closes the duplicate fd); proxied connections go on. */
  stopAccepting(): boolean {
    const s = this.#server;
    if (!s) return false;
    this.#unhook?.();
    this.#server = undefined;
    s.close();
    return true;
  }

  /** Resolves when every proxied connection has closed by itself (the drain bounds the wait). */
  drained(): Promise<void> {
    if (this.#pairs.size === 0) return Promise.resolve();
    return new Promise<void>((r) => (this.#closedAll = r));
  }

  /** Closes every proxied connection now. */
  destroyAll(): void {
    for (const c of [...this.#pairs]) c.destroy();
  }
}
