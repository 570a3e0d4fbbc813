/**
 * The naive keep-alive client (naive_client.ts) against examples/http_server.ts
 * through upgrades, with one idle-connections policy: what the client lost and
 * how long each old generation drained. Shared by tests/idle_keep_test.ts and
 * bench/idle_keep.ts. Test support, not a test file.
 *
 * @module
 */
import { join } from "node:path";
import process from "node:process";
import type { Leftovers } from "./helpers.ts";
import { ROOT, stopped } from "./helpers.ts";
import { startGenerations, upgradeAndDrain } from "./generations.ts";
import { type NaiveResult, runNaiveClient } from "./naive_client.ts";

/** A run of {@link idleThroughUpgrades}. */
export interface IdleRun {
  /** `--idle-connections` of the example. */
  policy: "keep" | "close-when-quiet";
  /** `--serve-mode` of the example. */
  mode: "auto" | "transplant" | "fallback";
  /** Upgrades, one every `everyMs`. */
  upgrades: number;
  everyMs: number;
  /** The example under examples/ (default http_server.ts; express.ts serves through up.serveNode()). */
  example?: string;
  /** The client's pool size and idle range. */
  connections: number;
  idleMinMs: number;
  idleMaxMs: number;
  /** `--drain-timeout` of the example (ms). */
  drainTimeoutMs: number;
}

/** What {@link idleThroughUpgrades} measured. */
export interface IdleOutcome {
  client: NaiveResult;
  /** Per old generation: ms from its `draining` line to its `drained` line. */
  drainMs: number[];
}

/** Runs the client through `r.upgrades` upgrades; resolves once every old generation drained. */
export async function idleThroughUpgrades(left: Leftovers, r: IdleRun): Promise<IdleOutcome> {
  const example = join(ROOT, "examples", r.example ?? "http_server.ts");
  const g = await startGenerations(left, example, [
    "--serve-mode",
    r.mode,
    "--idle-connections",
    r.policy,
    "--drain-timeout",
    String(r.drainTimeoutMs),
  ]);
  // The client starts first and runs past the last upgrade by one idle period at most.
  const duration = r.idleMaxMs + r.upgrades * r.everyMs + r.idleMaxMs;
  const client = runNaiveClient({
    port: g.port,
    connections: r.connections,
    idleMinMs: r.idleMinMs,
    idleMaxMs: r.idleMaxMs,
    durationMs: duration,
  });
  await new Promise((res) => setTimeout(res, r.idleMaxMs));
  const drains: Promise<number>[] = [];
  let pid = g.server.pid;
  for (let i = 0; i < r.upgrades; i++) {
    const from = g.server.lines.length;
    const old = pid;
    pid = await upgradeAndDrain(g, old);
    const began = performance.now();
    drains.push(
      g.server.waitFor(
        new RegExp(`pid=${old} gen=\\d+\\] drained`),
        r.drainTimeoutMs + 30_000,
        from,
      )
        .then(() => performance.now() - began),
    );
    await new Promise((res) => setTimeout(res, r.everyMs));
  }
  const result = await client;
  const drainMs = await Promise.all(drains);
  process.kill(pid, "SIGTERM");
  await stopped(pid);
  return { client: result, drainMs };
}
