/**
 * `Bun.listen`, `Deno.listen` and `Deno.listenTls` under instar/auto: refused
 * at the call. A listener the application opens itself would run outside
 * instar: the next generation could not bind its address (EADDRINUSE) and
 * the listener's connections would be cut when the process ends, with nothing
 * saying so. Serving these through instar would need the application's own
 * accept loop to drain (a raw protocol has no `Connection: close`), which
 * `node:net` servers get (net_listen.ts) and these do not. So the call throws
 * an `InstarError` (`AUTO_UNSUPPORTED`) naming the API, the address and what
 * to use instead. Bun's own node:net runs on the global `Bun.listen`: its
 * calls pass through.
 *
 * @module
 */

import { unsupported } from "./settings.ts";

type Fn = (...args: unknown[]) => unknown;
type Options = Record<string, unknown>;

const INSTEAD = "cannot be upgraded (the next generation could not take its socket over, " +
  "and an upgrade would cut its connections): listen with node:net's " +
  "createServer().listen(), which instar/auto serves, or import instar and use up.listen()";

/** Where `options` asks to listen, as the refusal names it. */
export function rawWhere(options: unknown): string {
  if (options === null || typeof options !== "object") return typeof options;
  const o = options as Options;
  if (typeof o.unix === "string") return `unix:${o.unix}`;
  if (typeof o.path === "string") return `unix:${o.path}`;
  if (o.fd !== undefined) return `fd ${String(o.fd)}`;
  return `${String(o.hostname ?? "0.0.0.0")}:${String(o.port ?? 0)}`;
}

/** Whether the function that called the replacement is Bun's own node:net. */
function calledByNodeNet(): boolean {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 4; // an application may have set it to 0
  const stack = new Error().stack ?? "";
  Error.stackTraceLimit = limit;
  // [0] "Error", [1] this function, [2] the replacement, [3] its caller
  return /\(node:net:\d/.test(stack.split("\n")[3] ?? "");
}

/** Replaces `Bun.listen` (Bun) or `Deno.listen` and `Deno.listenTls` (Deno) with refusals. */
export function installRawListenRefusal(
  natives: { bunListen?: Fn },
  isInternal: () => boolean,
): void {
  const g = globalThis as unknown as {
    Bun?: Record<string, unknown>;
    Deno?: Record<string, unknown>;
  };
  if (g.Bun && natives.bunListen) {
    const own = natives.bunListen;
    g.Bun.listen = function listen(options: unknown): unknown {
      if (isInternal() || calledByNodeNet()) return own(options);
      return unsupported(`Bun.listen(${rawWhere(options)})`, INSTEAD);
    };
    return;
  }
  if (!g.Deno) return;
  for (const name of ["listen", "listenTls"] as const) {
    if (typeof g.Deno[name] !== "function") continue;
    g.Deno[name] = function listen(options: unknown): never {
      return unsupported(`Deno.${name}(${rawWhere(options)})`, INSTEAD);
    };
  }
}
