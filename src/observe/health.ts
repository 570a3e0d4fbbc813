/**
 * The readiness answer: 200 while the generation serves, 503 while it is
 * starting or draining, for a Kubernetes readiness probe or a load balancer's
 * health check.
 *
 * @module
 */

import type { State } from "../types.ts";
import { serving } from "./metrics.ts";

/**
 * A `GET /healthz` answer for `up`: 200 `ready` while it serves (`ready`, or
 * `upgrading`: it serves until the new generation is ready), 503 with the
 * state (`starting`, `draining`, `stopped`) otherwise. Synchronous and free:
 * it reads the state. `up` is an `Upgrader` (any object with its `state`).
 *
 * @example
 * ```ts
 * import { healthResponse, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * await up.serve({
 *   port: 8080,
 *   fetch: (req) => new URL(req.url).pathname === "/healthz" ? healthResponse(up) : new Response("hi"),
 * });
 * await up.ready();
 * ```
 */
export function healthResponse(up: { readonly state: State }): Response {
  const ok = serving(up.state);
  return new Response(`${ok ? "ready" : up.state}\n`, {
    status: ok ? 200 : 503,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}
