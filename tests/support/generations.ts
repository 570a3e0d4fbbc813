/**
 * Starting an example server as generations that report their state through
 * a control socket and a PID file, and upgrading it with SIGHUP. Test
 * support, not a test file.
 *
 * @module
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { type Leftovers, RUNTIME, runtimeCmd, type ServerProcess, startServer } from "./helpers.ts";
import type { LoadResult } from "./load_client.ts";
import { nextPidInPidFile, portOf, readyGeneration } from "./status.ts";

/** A server started by {@link startGenerations}. */
export interface Generations {
  /** The process (every generation it starts is killed after the tests). */
  server: ServerProcess;
  /** The port generation 1 reported. */
  port: number;
  /** Its PID file. */
  pidFile: string;
  /** Its control socket. */
  ctl: string;
}

/**
 * Starts `script` under `runtime` (default: this one) on a free port with a
 * control socket and a PID file in a new temporary directory, plus `args`;
 * resolves once generation 1 reports itself ready on the control socket.
 */
export async function startGenerations(
  left: Leftovers,
  script: string,
  args: string[] = [],
  timeoutMs = 60_000,
  runtime: "deno" | "bun" = RUNTIME,
): Promise<Generations> {
  const dir = left.tempDir("instar-gen-");
  const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
  const server = startServer(
    runtimeCmd(runtime, script, ["--port", "0", "--control", ctl, "--pid-file", pidFile, ...args]),
  );
  left.servers.push(server);
  const ready = await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs, log: server.lines });
  return { server, port: portOf(ready), pidFile, ctl };
}

/** Sends SIGHUP to `pid`; resolves with the next generation's pid once it wrote the PID file. */
export async function upgradeByHup(g: Generations, pid: number): Promise<number> {
  process.kill(pid, "SIGHUP");
  const next = await nextPidInPidFile(g.pidFile, pid, { timeoutMs: 60_000, log: g.server.lines });
  g.server.pids.add(next); // killed after the tests even if it has not logged yet
  return next;
}

/**
 * Upgrades `g` by SIGHUP; resolves with the new pid once the old generation said it drains: it
 * stopped accepting in the same tick, so a new connection reaches the new generation from then on.
 */
export async function upgradeAndDrain(g: Generations, oldPid: number): Promise<number> {
  const from = g.server.lines.length;
  const newPid = await upgradeByHup(g, oldPid);
  await g.server.waitFor(new RegExp(`pid=${oldPid} gen=\\d+\\] draining`), 30_000, from);
  return newPid;
}

/** Asserts that every named load failed no request and got more than 100 answers. */
export function assertLoadsAnswered(loads: Record<string, LoadResult>): void {
  for (const [name, r] of Object.entries(loads)) {
    assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    assert.ok(r.ok > 100, `${name}: only ${r.ok} responses`);
  }
}

/**
 * Asserts that the `--stats-file` at `stats` has one `<pid> <POST bodies read>`
 * line per generation (`generations` of them, each appended once it drained) and
 * that together they read exactly the `answered` POSTs the client got answers to.
 */
export function assertPostsRead(stats: string, generations: number, answered: number): void {
  const lines = readFileSync(stats, "utf8").trim().split("\n");
  assert.equal(lines.length, generations, `one line per generation: ${lines.join(" | ")}`);
  const read = lines.reduce((n, l) => n + Number(l.split(" ")[1]), 0);
  assert.equal(read, answered, "the servers read exactly the POSTs the client got answers to");
}
