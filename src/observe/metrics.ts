/**
 * What a generation measures about itself, for `up.metrics()` and the
 * Prometheus exposition: its state, the connections open on each endpoint
 * (its own and the draining previous generation's, counted from /proc off
 * the event loop), what each endpoint accepted, upgrades by outcome and the
 * last upgrade's report. The types and the counting live here; the observer
 * that follows a generation's events and fills them in is the lifecycle's
 * (src/lifecycle/observer.ts).
 *
 * @module
 */

import { socketInodesAsync } from "../proc.ts";
import { establishedByPort, openConnections } from "../net/sock_diag.ts";
import type { Endpoint, State } from "../types.ts";
import type { UpgradeCounts } from "./counters.ts";
import type { UpgradeReport } from "./report.ts";

/**
 * The open connections of one generation on one endpoint.
 *
 * @example
 * ```ts
 * import type { GenerationConnections } from "@instar/instar";
 *
 * const c: GenerationConnections = { pid: 4242, generation: 2, open: 17 };
 * ```
 */
export interface GenerationConnections {
  /** The generation's pid. */
  pid: number;
  /** Its number. */
  generation: number;
  /** Open connections; `null` when they cannot be counted (an HTTP server on a Unix socket). */
  open: number | null;
}

/**
 * One endpoint in {@link Metrics}.
 *
 * @example
 * ```ts
 * import { type EndpointMetrics, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const all: EndpointMetrics[] = (await up.metrics()).endpoints;
 * for (const e of all) console.log(e.addr, e.accepted, e.connections);
 * ```
 */
export interface EndpointMetrics {
  /** What the program asked for (`tcp:0.0.0.0:8080`, …). */
  key: string;
  /** The address it is bound to. */
  addr: string;
  /** `serve` (an HTTP server: `accepted` counts requests) or `listen` (`accepted` counts connections). */
  kind: "serve" | "listen";
  /** Requests (`serve`) or connections (`listen`) accepted since the first generation. */
  accepted: number;
  /** Open connections: this generation's, then the previous one's while it drains. */
  connections: GenerationConnections[];
}

/**
 * What `up.metrics()` returns.
 *
 * @example
 * ```ts
 * import { type Metrics, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const m: Metrics = await up.metrics();
 * console.log(m.generation, m.state, m.upgrades.succeeded, m.lastUpgrade?.readyMs);
 * ```
 */
export interface Metrics {
  /** This process's pid. */
  pid: number;
  /** This generation's number. */
  generation: number;
  /** Its lifecycle state. */
  state: State;
  /** Whether it serves and would answer a readiness probe with 200 (`ready` or `upgrading`). */
  ready: boolean;
  /** Its endpoints (the control socket is not one). */
  endpoints: EndpointMetrics[];
  /** Upgrades by outcome, since the first generation. */
  upgrades: UpgradeCounts;
  /** The last upgrade this generation ran, or the one that started it; `null` if none is known. */
  lastUpgrade: UpgradeReport | null;
}

/** Whether a generation in `state` serves (a readiness probe's answer). */
export function serving(state: State): boolean {
  return state === "ready" || state === "upgrading";
}

/** The open connections on one endpoint: this process's and the previous generation's. */
export interface OpenCount {
  /** This process's; `null` when they cannot be counted. */
  own: number | null;
  /** The previous generation's; `null` when there is none or they cannot be counted. */
  previous: number | null;
}

/**
 * Open connections on each endpoint, this process's and `previous`'s. A
 * listener (`countsItself(key)`) counts its own; the HTTP servers' are asked
 * of the kernel (sock_diag, one dump for every port) and matched to each
 * process's socket inodes; without sock_diag, read from /proc/net/tcp.
 */
export async function countOpen(
  endpoints: readonly Endpoint[],
  previous: number | null,
  countsItself: (key: string) => boolean,
): Promise<OpenCount[]> {
  const ports = endpoints.flatMap((e) => (e.addr.transport === "tcp" ? [e.addr.port] : []));
  const byPort = await establishedByPort([...new Set(ports)]);
  const inodes = (pid: number | "self") => socketInodesAsync(pid).catch(() => null);
  const [mine, theirs] = byPort
    ? await Promise.all([inodes("self"), previous === null ? null : inodes(previous)])
    : [null, null];
  const among = (port: number, held: Set<number> | null) => {
    if (!held || !byPort) return null;
    let n = 0;
    for (const inode of byPort.get(port) ?? []) if (held.has(inode)) n++;
    return n;
  };
  return await Promise.all(endpoints.map(async (e) => {
    const tcp = e.addr.transport === "tcp" ? e.addr.port : null;
    const listener = countsItself(e.key);
    const own = tcp === null || listener || !mine ? await e.connections() : among(tcp, mine);
    if (previous === null || tcp === null) return { own, previous: null };
    return { own, previous: theirs ? among(tcp, theirs) : await openConnections(tcp, previous) };
  }));
}
