/**
 * `Bun.serve()` under instar/auto: the application's options become
 * `up.serve()`'s. Bun's `export default { fetch, port }` entry goes through
 * here too: Bun 1.4.5 starts it by calling the global `Bun.serve`.
 *
 * @module
 */

import * as host from "../host.ts";
import type { Upgrader } from "../lifecycle/upgrader.ts";
import type { UpgraderServeOptions } from "../serve/serve.ts";
import type { AutoReadiness } from "./readiness.ts";
import type { Twin } from "./ready_url.ts";
import { unsupported } from "./settings.ts";
import { standIn } from "./stand_in.ts";

type Options = Record<string, unknown>;

/** `Bun.serve`'s default port: `$BUN_PORT`, `$PORT`, `$NODE_PORT`, else 3000. */
function defaultPort(): number {
  for (const name of ["BUN_PORT", "PORT", "NODE_PORT"]) {
    const v = host.getEnv(name);
    if (v && /^\d+$/.test(v)) return Number(v);
  }
  return 3000;
}

/** `Bun.serve`'s options as `up.serve()` takes them; what instar cannot serve throws. */
export function bunServeOptions(options: unknown): UpgraderServeOptions & Options {
  if (options === null || typeof options !== "object") {
    unsupported(`Bun.serve(${typeof options})`, "needs an options object");
  }
  // reusePort is dropped (Elysia sets it by default): instar's socket is the one socket on
  // the port, passed from generation to generation; a socket someone else binds there fails.
  const { unix, reusePort: _reusePort, fd, ...rest } = options as Options;
  if (fd !== undefined) unsupported("Bun.serve({ fd })", "is not served: give a port or unix path");
  if (typeof unix === "string") return { ...rest, path: unix } as UpgraderServeOptions & Options;
  const port = rest.port === undefined ? defaultPort() : Number(rest.port);
  const hostname = (rest.hostname as string | undefined) ?? "0.0.0.0";
  return { ...rest, port, hostname } as UpgraderServeOptions & Options;
}

/** The same server on the Unix socket `path`, in plain HTTP, for the ready URL (ready_url.ts). */
function twin(native: (options: unknown) => unknown, o: Options): Twin {
  const { port: _port, hostname: _hostname, path: _path, tls: _tls, ...rest } = o;
  return (path) => {
    const server = native({ ...rest, unix: path }) as { stop(force: boolean): unknown };
    return Promise.resolve(() => void server.stop(true));
  };
}

function describe(o: Options): string {
  return o.path !== undefined ? `Bun.serve(unix:${o.path})` : `Bun.serve(${o.hostname}:${o.port})`;
}

/** Replaces `Bun.serve` so that it serves through `up`; `isInternal()` calls pass through. */
export function installBunServe(
  up: Upgrader,
  readiness: AutoReadiness,
  native: (options: unknown) => unknown,
  isInternal: () => boolean,
): void {
  const bun = (globalThis as unknown as { Bun: { serve: unknown } }).Bun;
  bun.serve = function serve(options: unknown): unknown {
    // Bun's node:http runs on Bun.serve: a node server instar is already serving passes through.
    if (isInternal()) return native(options);
    const o = bunServeOptions(options);
    const started = readiness.follow(describe(o), up.serve(o), twin(native, o));
    const port = (o.port as number | undefined) ?? 0;
    const hostname = (o.hostname as string | undefined) ?? (o.path as string);
    return standIn(started, {
      port,
      hostname,
      url: new URL(o.path !== undefined ? "http://localhost/" : `http://${hostname}:${port}/`),
      protocol: o.tls ? "https" : "http",
      development: false,
      pendingRequests: 0,
      pendingWebSockets: 0,
    });
  };
}
