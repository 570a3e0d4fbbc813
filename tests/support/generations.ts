/**
 * Starting an example server as generations that report their state through
 * a control socket and a PID file, and upgrading it with SIGHUP. Test
 * support, not a test file.
 *
 * @module
 */
import { join } from "node:path";
import process from "node:process";
import { type Leftovers, RUNTIME, runtimeCmd, type ServerProcess, startServer } from "./helpers.ts";
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
 * Starts `script` under this runtime on a free port with a control socket and
 * a PID file in a new temporary directory, plus `args`; resolves once
 * generation 1 reports itself ready on the control socket.
 */
export async function startGenerations(
  left: Leftovers,
  script: string,
  args: string[] = [],
  timeoutMs = 60_000,
): Promise<Generations> {
  const dir = left.tempDir("instar-gen-");
  const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
  const server = startServer(
    runtimeCmd(RUNTIME, script, ["--port", "0", "--control", ctl, "--pid-file", pidFile, ...args]),
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
