/**
 * The Prometheus text exposition format (version 0.0.4) of {@link Metrics}:
 * a ready `GET /metrics` answer ({@link metricsResponse}, in mod.ts), and the
 * text and its Content-Type on their own (in unstable.ts).
 *
 * @module
 */

import type { State } from "../types.ts";
import type { Metrics } from "./metrics.ts";

/**
 * The Content-Type of the text exposition format (what
 * {@link metricsResponse} sends).
 *
 * @example
 * ```ts
 * import { PROMETHEUS_CONTENT_TYPE } from "@instar/instar/unstable";
 *
 * const headers = { "content-type": PROMETHEUS_CONTENT_TYPE };
 * ```
 */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const STATES: readonly State[] = ["starting", "ready", "upgrading", "draining", "stopped"];

// A label value with backslash, double quote and line feed escaped, as the format requires.
function esc(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(l: Record<string, string | number>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${esc(String(v))}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** Writes one metric family: HELP, TYPE and its samples. */
function family(
  out: string[],
  name: string,
  type: "gauge" | "counter",
  help: string,
  samples: [Record<string, string | number>, number][],
): void {
  if (!samples.length) return;
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  for (const [l, v] of samples) out.push(`${name}${labels(l)} ${v}`);
}

/**
 * Metrics `m` in the Prometheus text exposition format. Counters carried across
 * upgrades (`instar_upgrades_total`, `instar_requests_total`,
 * `instar_accepted_connections_total`) never restart at 0 on an upgrade.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 * import { prometheusText } from "@instar/instar/unstable";
 *
 * const up = await Upgrader.create();
 * console.log(prometheusText(await up.metrics()));
 * ```
 */
export function prometheusText(m: Metrics): string {
  const out: string[] = [];
  family(out, "instar_generation", "gauge", "This generation's number (1 for a fresh start).", [
    [{ pid: m.pid }, m.generation],
  ]);
  family(
    out,
    "instar_state",
    "gauge",
    "1 for the lifecycle state this generation is in.",
    STATES.map((s) => [{ state: s }, s === m.state ? 1 : 0]),
  );
  family(out, "instar_ready", "gauge", "1 while this generation serves (readiness).", [
    [{}, m.ready ? 1 : 0],
  ]);
  family(
    out,
    "instar_open_connections",
    "gauge",
    "Open connections per endpoint and generation (the draining previous one too).",
    m.endpoints.flatMap((e) =>
      e.connections.filter((c) => c.open !== null).map((c) =>
        [{ endpoint: e.key, addr: e.addr, generation: c.generation, pid: c.pid }, c.open!] as [
          Record<string, string | number>,
          number,
        ]
      )
    ),
  );
  const accepted = (kind: string) =>
    m.endpoints.filter((e) => e.kind === kind).map((e) =>
      [{ endpoint: e.key, addr: e.addr }, e.accepted] as [Record<string, string>, number]
    );
  family(
    out,
    "instar_requests_total",
    "counter",
    "HTTP requests handled by serve(), across generations.",
    accepted("serve"),
  );
  family(
    out,
    "instar_accepted_connections_total",
    "counter",
    "Connections accepted by listen(), across generations.",
    accepted("listen"),
  );
  upgrades(out, m);
  lastUpgrade(out, m);
  return out.join("\n") + "\n";
}

function upgrades(out: string[], m: Metrics): void {
  const u = m.upgrades;
  family(
    out,
    "instar_upgrades_total",
    "counter",
    "Upgrades by outcome and reason, across generations.",
    [
      [{ outcome: "succeeded", reason: "" }, u.succeeded],
      ...Object.entries(u.failed).map(([reason, n]) =>
        [{ outcome: "failed", reason }, n] as [Record<string, string>, number]
      ),
      ...Object.entries(u.refused).map(([reason, n]) =>
        [{ outcome: "refused", reason }, n] as [Record<string, string>, number]
      ),
      [{ outcome: "rolled-back", reason: "" }, u.rolledBack],
    ],
  );
}

function lastUpgrade(out: string[], m: Metrics): void {
  const r = m.lastUpgrade;
  if (!r) return;
  const l = { outcome: r.outcome, trigger: r.trigger, generation: r.new.generation };
  const seconds = (
    v: number | null | undefined,
  ) => (v == null ? [] : [[l, v / 1000]] as [typeof l, number][]);
  family(
    out,
    "instar_last_upgrade_timestamp_seconds",
    "gauge",
    "When the last upgrade was triggered.",
    [
      [l, Date.parse(r.startedAt) / 1000],
    ],
  );
  family(
    out,
    "instar_last_upgrade_spawn_seconds",
    "gauge",
    "Last upgrade: from the trigger until the new process existed.",
    seconds(r.spawnMs),
  );
  family(
    out,
    "instar_last_upgrade_ready_seconds",
    "gauge",
    "Last upgrade: from the trigger until the new generation was ready.",
    seconds(r.readyMs),
  );
  family(
    out,
    "instar_last_upgrade_drain_seconds",
    "gauge",
    "Last upgrade: how long the previous generation drained.",
    seconds(r.drain?.ms),
  );
  const d = r.drain;
  const conns: [Record<string, string | number>, number][] = [];
  if (d?.atHandover != null) conns.push([{ ...l, at: "handover" }, d.atHandover]);
  if (d?.drained != null) conns.push([{ ...l, at: "drained" }, d.drained]);
  if (d) conns.push([{ ...l, at: "forced" }, d.forced]);
  family(
    out,
    "instar_last_upgrade_connections",
    "gauge",
    "Last upgrade: connections open at the handover, of them finished by themselves, cut at the drain timeout.",
    conns,
  );
}

/**
 * A `GET /metrics` answer: `up`'s metrics in the Prometheus text format, with
 * its Content-Type and `Cache-Control: no-store`. Open connections are counted
 * from /proc off the event loop, hence a promise. `up` is an `Upgrader` (any
 * object with its `metrics()`).
 *
 * A fetch-style handler (Deno.serve, Bun.serve, Hono, `up.serve`) returns it
 * as is; any other server (node:http, a raw `up.listen()`) copies its
 * Content-Type and `await response.text()`.
 *
 * @example
 * ```ts
 * import { metricsResponse, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * await up.serve({
 *   port: 8080,
 *   fetch: (req) => new URL(req.url).pathname === "/metrics" ? metricsResponse(up) : new Response("hi"),
 * });
 * await up.ready();
 * ```
 *
 * @example node:http
 * ```ts
 * import http from "node:http";
 * import { metricsResponse, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * await up.serveNode(
 *   http.createServer(async (_req, res) => {
 *     const metrics = await metricsResponse(up);
 *     res.writeHead(200, { "content-type": metrics.headers.get("content-type")! });
 *     res.end(await metrics.text());
 *   }),
 *   { port: 8080 },
 * );
 * await up.ready();
 * ```
 */
export async function metricsResponse(
  up: { metrics(): Promise<Metrics> },
): Promise<Response> {
  const text = prometheusText(await up.metrics());
  return new Response(text, {
    headers: { "content-type": PROMETHEUS_CONTENT_TYPE, "cache-control": "no-store" },
  });
}
