/**
 * What `Bun.serve()` / `Deno.serve()` return under instar/auto. Both return
 * their server synchronously; serving through an Upgrader is asynchronous
 * (the socket is claimed, opened or adopted, and the native server moved
 * onto it). So the application gets a stand-in that forwards to instar's
 * `Server` (and, for what only the runtime's server has — Bun's `publish`,
 * `requestIP`, `reload` —, to its `native` server) once it exists. Before
 * that, `port`, `hostname`, `addr` and `url` name what was asked for (port 0
 * reads 0 for those few milliseconds), `finished` waits, and the methods
 * (`stop`, `shutdown`, `ref`, `unref`, `reload`, `publish`) run once the
 * server is up.
 *
 * @module
 */

import type { Server } from "../serve/types.ts";

/** The methods a stand-in queues until the server exists. */
const DEFERRED = new Set<PropertyKey>([
  "stop",
  "shutdown",
  "ref",
  "unref",
  "reload",
  "publish",
  Symbol.asyncDispose,
]);

/** What a stand-in answers before the server exists. */
export type Before = Record<string, unknown>;

/**
 * A server object for the application that forwards to the one `started`
 * resolves with, and answers from `before` until then.
 */
export function standIn(started: Promise<Server>, before: Before): unknown {
  let real: Server | undefined;
  const finished = started.then((s) => s.finished);
  finished.catch(() => {}); // a failed start is reported by the readiness, not here
  started.then((s) => (real = s), () => {});
  return new Proxy({}, {
    get(_target, prop) {
      if (real) return forward(real, prop);
      if (prop === "finished") return finished;
      if (typeof prop === "string" && prop in before) return before[prop];
      if (DEFERRED.has(prop)) {
        return (...args: unknown[]) =>
          started.then((s) => (forward(s, prop) as (...a: unknown[]) => unknown)(...args));
      }
      return undefined;
    },
    has(_target, prop) {
      return real ? prop in real || prop in Object(real.native) : typeof prop === "string" &&
        prop in before;
    },
  });
}

// instar's Server first, then the runtime's own server for what only it has.
function forward(s: Server, prop: PropertyKey): unknown {
  const owner = prop in s ? s : Object(s.native) as Record<PropertyKey, unknown>;
  const value = Reflect.get(owner, prop, owner);
  return typeof value === "function" ? value.bind(owner) : value;
}
