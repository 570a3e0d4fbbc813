/**
 * `Deno.serve()` under instar/auto, in its three forms — `(handler)`,
 * `(options, handler)`, `({ ...options, handler })` — and `deno serve`'s
 * `export default { fetch }` (through `src/auto/deno_serve_main.ts`, since
 * `deno serve --preload` does not run the preload on Deno 2.9.6).
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

/** `Deno.serve`'s arguments as `up.serve()`'s options; what instar cannot serve throws. */
export function denoServeOptions(a: unknown, b: unknown): UpgraderServeOptions & Options {
  let options: Options;
  if (typeof a === "function") options = { handler: a };
  else if (a !== null && typeof a === "object") {
    options = typeof b === "function" ? { ...a as Options, handler: b } : { ...a as Options };
  } else return unsupported(`Deno.serve(${typeof a})`, "needs a handler or an options object");
  // reusePort is dropped: instar's socket is the one socket on the port (see bun_serve.ts).
  const { transport, reusePort: _reusePort, path, ...rest } = options;
  if (transport === "unix" || (path !== undefined && transport === undefined)) {
    return { ...rest, path } as UpgraderServeOptions & Options;
  }
  if (transport !== undefined && transport !== "tcp") {
    unsupported(`Deno.serve({ transport: ${JSON.stringify(transport)} })`, "is not served");
  }
  const port = rest.port === undefined ? 8000 : Number(rest.port);
  const hostname = (rest.hostname as string | undefined) ?? "0.0.0.0";
  return { ...rest, port, hostname } as UpgraderServeOptions & Options;
}

/** The same server on the Unix socket `path`, in plain HTTP, for the ready URL (ready_url.ts). */
function twin(native: (options: unknown) => unknown, o: Options): Twin {
  const { port: _p, hostname: _h, path: _x, cert: _c, key: _k, onListen: _l, signal: _s, ...rest } =
    o;
  return (path) => {
    const options = { ...rest, path, transport: "unix", onListen() {} };
    const server = native(options) as { shutdown(): Promise<void> };
    return Promise.resolve(() => void server.shutdown().catch(() => {}));
  };
}

/**
 * `DENO_SERVE_ADDRESS` as the options it stands for, or `null` when unset.
 * Deno 2.9.6 serves the process's first `Deno.serve` there instead of where
 * its options say (measured; later ones where they say): `tcp:<host>:<port>`,
 * `unix:<path>`. What instar cannot serve throws: `vsock:` (no such socket
 * here), `duplicate,…` (two servers, the second not on an inherited socket).
 */
export function serveAddressOverride(value: string | undefined): Options | null {
  if (value === undefined || value === "") return null;
  const what = `DENO_SERVE_ADDRESS=${value}`;
  if (value.startsWith("unix:") && value.length > 5) return { path: value.slice(5) };
  const m = /^tcp:\[?([^\]]*?)\]?:(\d{1,5})$/.exec(value);
  if (m && m[1] !== "" && Number(m[2]) <= 65535) {
    return { hostname: m[1], port: Number(m[2]) };
  }
  return unsupported(what, "is not served: give tcp:<host>:<port> or unix:<path>");
}

/** `o` served where `override` says instead (TCP address or Unix path). */
function overridden(o: Options, override: Options): UpgraderServeOptions & Options {
  const { port: _port, hostname: _hostname, path: _path, ...rest } = o;
  return { ...rest, ...override } as UpgraderServeOptions & Options;
}

/** Replaces `Deno.serve` so that it serves through `up` (`native` is the runtime's own). */
export function installDenoServe(
  up: Upgrader,
  readiness: AutoReadiness,
  native: (options: unknown) => unknown,
): void {
  const deno = (globalThis as unknown as { Deno: { serve: unknown } }).Deno;
  // Taken out of the environment: instar's own Deno.serve calls (a throwaway server to
  // transplant under, the ready URL's twin) must not be moved there instead.
  const value = host.getEnv("DENO_SERVE_ADDRESS");
  let override = serveAddressOverride(value);
  if (value !== undefined) host.deleteEnv("DENO_SERVE_ADDRESS");
  deno.serve = function serve(a: unknown, b?: unknown): unknown {
    let o = denoServeOptions(a, b);
    if (override) [o, override] = [overridden(o, override), null];
    const what = o.path !== undefined
      ? `Deno.serve(unix:${o.path})`
      : `Deno.serve(${o.hostname}:${o.port})`;
    const started = readiness.follow(what, up.serve(o), twin(native, o));
    const addr = o.path !== undefined
      ? { transport: "unix", path: o.path }
      : { transport: "tcp", hostname: o.hostname, port: o.port };
    return standIn(started, { addr });
  };
}
