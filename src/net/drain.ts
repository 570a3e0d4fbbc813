/**
 * The one drain, for every kind of {@link Endpoint}: stop accepting, give the
 * runtime a moment to deliver what it accepted but has not handed out yet
 * (closing at once would drop those: measured, 36 of ~500k connections lost
 * without the pause, 0 with it), let every connection finish within the
 * drain timeout, cut what is left, release the fds.
 *
 * @module
 */

import type { Addr, Endpoint, IdleConnections } from "../types.ts";
import { invalid } from "../errors.ts";
import { deadline, sleep } from "../timeout.ts";

/**
 * What a server decides in a drain: how it stops and starts accepting,
 * finishes gracefully and cuts what is left. Whoever owns the socket adds
 * the rest of its {@link Endpoint} (key, fd, counting, refusal, release):
 * the lifecycle for `up.serve()`, {@link drainAlone} for a standalone server.
 */
export type ServerDrain =
  & Pick<Endpoint, "pauseAccepting" | "resumeAccepting" | "finish" | "closeSpread" | "forceClose">
  // A server listening on its address itself (portable mode) refuses new connections itself;
  // one that tracks its connections (instar/auto's raw node:net servers) counts them itself.
  & Partial<Pick<Endpoint, "refuseNew" | "connections">>;

/**
 * How long a stopping generation lets its runtime deliver connections it
 * already accepted. 100 ms sufficed on an idle machine; a CPU-starved one needs more.
 */
export const DRAIN_DELAY_MS = 250;

/**
 * What a draining HTTP server does with idle keep-alive connections when the
 * application does not say (docs/design.md, "Idle keep-alive connections").
 */
export const DEFAULT_IDLE_CONNECTIONS: IdleConnections = "close-when-quiet";

/** `value` as an {@link IdleConnections} policy (absent: the default); `option` names it in the error. */
export function checkIdleConnections(option: string, value: unknown): IdleConnections {
  if (value === undefined) return DEFAULT_IDLE_CONNECTIONS;
  if (value !== "keep" && value !== "close-when-quiet") {
    invalid(option, value, '"keep" or "close-when-quiet"');
  }
  return value;
}

/** What {@link drain} reports. */
export interface DrainResult {
  /** Connections closed at the drain timeout. */
  forced: number;
  /** Whether the timeout was reached. */
  timedOut: boolean;
}

/** Options of {@link drain}. */
export interface DrainOptions {
  /** How long connections may take to finish after the pause. */
  timeoutMs: number;
  /** The pause between "stop accepting" and "finish" (default {@link DRAIN_DELAY_MS}). */
  delayMs?: number;
  /** Called with what went wrong on an endpoint; the drain goes on. */
  warn?: (message: string) => void;
  /** Nobody takes over (a stop): refuse new connections at once. */
  refuse?: boolean;
  /**
   * The last part of `timeoutMs` over which long-lived connections still
   * open are closed a few at a time ({@link Endpoint.closeSpread}) rather
   * than all at the timeout; at most `timeoutMs`. Default 0.
   */
  closeSpreadMs?: number;
}

/** Drains `endpoints` together; resolves when all are released. */
export async function drain(endpoints: readonly Endpoint[], o: DrainOptions): Promise<DrainResult> {
  const warn = o.warn ?? (() => {});
  const attempt = <T>(e: Endpoint, what: string, f: () => T): T | undefined => {
    try {
      return f();
    } catch (err) {
      warn(`${what} ${e.key}: ${(err as Error).message}`);
      return undefined;
    }
  };
  // A stop refuses first: connections already queued are taken before the socket closes.
  if (o.refuse) {
    await Promise.all(
      endpoints.map((e) =>
        e.refuseNew().catch((err) => warn(`closing ${e.key}: ${(err as Error).message}`))
      ),
    );
  }
  for (const e of endpoints) attempt(e, "pausing", () => e.pauseAccepting());
  if (endpoints.length) await sleep(o.delayMs ?? DRAIN_DELAY_MS);
  const window = Math.min(o.closeSpreadMs ?? 0, o.timeoutMs);
  const finished = endpoints.map((e) =>
    e.finish(window).catch((err) => warn(`finishing ${e.key}: ${(err as Error).message}`))
  );
  const all = Promise.all(finished);
  let inTime = await deadline(all, o.timeoutMs - window);
  if (!inTime.done && window > 0) {
    for (const e of endpoints) attempt(e, "closing", () => e.closeSpread?.(window));
    inTime = await deadline(all, window);
  }
  let forced = 0;
  if (!inTime.done) {
    const cut = await Promise.all(endpoints.map((e) => e.forceClose().catch(() => 0)));
    forced = cut.reduce((a, b) => a + b, 0);
  }
  for (const e of endpoints) attempt(e, "releasing", () => e.release());
  return { forced, timedOut: !inTime.done };
}

/**
 * Drains one server on a socket it does not own (a standalone `serve()` or
 * `serveNode()`): it refuses nothing, counts nothing and closes no fd;
 * `name` and `addr` only name it in warnings.
 */
export function drainAlone(
  name: string,
  addr: Addr,
  server: ServerDrain,
  o: DrainOptions,
): Promise<DrainResult> {
  const endpoint: Endpoint = {
    ...server,
    key: name,
    fd: -1,
    addr,
    connections: () => Promise.resolve(null),
    refuseNew: () => Promise.resolve(),
    release: () => {},
  };
  return drain([endpoint], o);
}
