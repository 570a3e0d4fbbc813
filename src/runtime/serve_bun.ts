/**
 * The Bun side of {@link serve}: `Bun.serve` on a loopback port. The server
 * object (also what handlers get) reports the real socket's `port`,
 * `hostname` and `url` (and, behind the proxy, the real client's `requestIP`).
 *
 * @module
 */

import type { AdapterStart, NativeServer, ServeAdapter } from "../serve/types.ts";

type SocketAddress = { address: string; port: number; family: string };

interface BunServer {
  port: number;
  hostname: string;
  url: URL;
  requestIP(req: Request): SocketAddress | null;
  stop(closeActiveConnections?: boolean): Promise<void>;
  ref(): void;
  unref(): void;
}

interface BunServeNs {
  serve(options: Record<string, unknown>): BunServer;
}

/** Starts `Bun.serve` for {@link serve}. */
export const bunAdapter: ServeAdapter = {
  start(s: AdapterStart): NativeServer {
    const B = (globalThis as unknown as { Bun: BunServeNs }).Bun;
    const opts: Record<string, unknown> = { ...s.options };
    // The socket decides where to listen.
    for (const k of ["fd", "reusePort", "ipv6Only"]) delete opts[k];
    // Given as `fetch` or as `handler` (Deno's name): on Bun it is `fetch(req, server)`.
    if (s.handler !== undefined) opts.fetch = s.handler;
    Object.assign(
      opts,
      "path" in s.listenOn
        ? { unix: s.listenOn.path }
        : { hostname: s.listenOn.hostname, port: 0, reusePort: false },
    );

    const server = B.serve(opts);
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
      async shutdown(timeoutMs: number): Promise<void> {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const graceful = stop(false);
        // WebSockets and streams run on until they end or the timeout closes them.
        await Promise.race([
          graceful,
          new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
        ]);
        clearTimeout(timer);
        await stop(true);
        await graceful;
      },
      close: () => stop(true),
      finished,
      listening(): void {},
      ref: () => server.ref(),
      unref: () => server.unref(),
    };
  },
};
