/**
 * Start-up of a generation: how long the minimal app (bench/idle_minimal.ts:
 * `Upgrader.create()`, `up.serve({ port, fetch })`, `up.ready()`) takes from
 * its spawn to its first answer, and the CPU it used by then, against the bare
 * server (bench/idle_bare.ts) of the same runtime. With `--checkout <dir>` the
 * minimal app of another checkout (e.g. a `git worktree` of the commit before a
 * change) runs too, interleaved round by round, so that both are measured on
 * the same machine at the same time (docs/benchmarks.md, "Start-up time of a
 * generation").
 *
 *   deno run -A bench/startup.ts [--runtime deno|bun|both] [--rounds 12] [--checkout <dir>]
 *
 * Ready: the first `GET /` answered (polled every 5 ms). CPU: utime + stime
 * from /proc/<pid>/stat read right after that answer, before the process is
 * killed. Medians per variant. Linux only; only 127.0.0.1 is used.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { freePort } from "../tests/support/helpers.ts";
import { ROOT, runtimeCmd, sleep } from "../tests/support/procs.ts";
import { cpuMs, median } from "./wrk_run.ts";

type Runtime = "deno" | "bun";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: "both" },
    rounds: { type: "string", default: "12" },
    checkout: { type: "string" },
  },
  strict: true,
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  throw new Error(`--rounds ${values.rounds}: a whole number ≥ 1`);
}
if (!["deno", "bun", "both"].includes(values.runtime)) {
  throw new Error(`--runtime ${values.runtime}: deno, bun or both`);
}
const runtimes: Runtime[] = values.runtime === "both"
  ? ["deno", "bun"]
  : [values.runtime as Runtime];

/** The scripts measured: label → file. */
const variants: Record<string, string> = {
  bare: join(ROOT, "bench/idle_bare.ts"),
  minimal: join(ROOT, "bench/idle_minimal.ts"),
};
if (values.checkout) {
  variants["minimal (--checkout)"] = join(values.checkout, "bench/idle_minimal.ts");
}

/** Starts `script` on a free port; resolves with ms to its first answer and CPU s by then. */
async function once(runtime: Runtime, script: string): Promise<{ ms: number; cpu: number }> {
  const port = await freePort();
  const [cmd, ...args] = runtimeCmd(runtime, script, [String(port)]);
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: "ignore" });
  try {
    for (;;) {
      if (performance.now() - t0 > 20_000) throw new Error(`${script} did not answer within 20 s`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/`);
        await res.body?.cancel();
        break;
      } catch {
        await sleep(5);
      }
    }
    return { ms: performance.now() - t0, cpu: cpuMs(child.pid!) / 1000 };
  } finally {
    child.kill("SIGKILL");
  }
}

for (const runtime of runtimes) {
  const got: Record<string, { ms: number[]; cpu: number[] }> = {};
  for (let r = 0; r < rounds; r++) {
    // Alternate the order per round: the first of a pair may find caches colder.
    const order = Object.entries(variants);
    if (r % 2) order.reverse();
    for (const [label, script] of order) {
      const { ms, cpu } = await once(runtime, script);
      (got[label] ??= { ms: [], cpu: [] }).ms.push(ms);
      got[label].cpu.push(cpu);
    }
  }
  console.log(`\n${runtime}, ${rounds} rounds (medians)`);
  console.log("| variant | ready ms | CPU s to ready |\n| --- | --- | --- |");
  for (const [label, v] of Object.entries(got)) {
    console.log(`| ${label} | ${median(v.ms).toFixed(0)} | ${median(v.cpu).toFixed(3)} |`);
  }
}
