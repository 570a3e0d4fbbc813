/**
 * Child-process helpers shared by the tests, the benchmarks (bench/) and the
 * demo (scripts/demo.ts), which import them from here: the pinned runtime
 * binaries, the command that runs a script under one, and liveness checks by
 * pid. Test support, not a test file: the test runners only run `*_test.ts`.
 *
 * @module
 */
import process from "node:process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT: string = fileURLToPath(new URL("../..", import.meta.url));

/** The pinned binary `name` from node_modules/.bin, or `name` on the PATH if it is not installed. */
export function bin(name: "deno" | "bun"): string {
  const local = join(ROOT, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
}

/** The command that runs `script` under `runtime` with all permissions. */
export function runtimeCmd(runtime: "deno" | "bun", script: string, args: string[] = []): string[] {
  return runtime === "deno"
    ? [bin("deno"), "run", "-A", "--no-check", script, ...args]
    : [bin("bun"), script, ...args];
}

/** Whether `pid` is alive (not a zombie): the lifecycle's own check. */
export { processRuns as alive } from "../../src/proc.ts";

/** Sends SIGKILL to every pid in `pids`, skipping those already gone. */
export function killAll(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
