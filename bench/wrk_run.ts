/**
 * What the wrk benchmarks (bench/serve.ts, bench/serve_node.ts,
 * bench/metrics.ts) share: the runtimes' commands, one measured wrk run
 * against a freshly started server (requests/s and the server's CPU time per
 * request), and the median.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../tests/support/procs.ts";

/** How to run a script under each runtime (the pinned binaries of node_modules). */
export const RUNTIME_COMMANDS: { deno: string[]; bun: string[] } = {
  deno: [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "--no-check"],
  bun: [join(ROOT, "node_modules/.bin/bun")],
};

/** CPU time (user + system, all threads) of a process in ms, from /proc/<pid>/stat. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in 100 Hz ticks
}

/** The median of `xs`. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** One measurement: the server's command, what it prints once it listens, and wrk's settings. */
export interface WrkRun {
  /** The server's argv. */
  server: string[];
  /** For messages: "deno transplant". */
  label: string;
  /** Matches the server's stdout once it listens; group 1 is the port. */
  ready: RegExp;
  connections: number;
  seconds: number;
  /** Pin the server to CPU 0 and wrk to CPU 1 (`taskset`). */
  pin?: boolean;
}

/**
 * Starts the server, runs wrk 1 s (warm-up: JIT, connections) and then
 * `seconds`, and kills the server. Resolves with requests/s, the server's CPU
 * µs per request and the ready line's match; wrk's errors are printed.
 */
export async function wrkRun(
  o: WrkRun,
): Promise<{ rps: number; cpuUsPerReq: number; match: RegExpExecArray }> {
  const [cmd, ...args] = o.pin ? ["taskset", "-c", "0", ...o.server] : o.server;
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const match = await new Promise<RegExpExecArray>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        const m = o.ready.exec(out);
        if (m) resolve(m);
      });
      child.on("exit", (code) => reject(new Error(`${o.label} exited (${code}): ${out}`)));
    });
    const wrk = (s: number) => {
      const argv = ["-t1", `-c${o.connections}`, `-d${s}s`, `http://127.0.0.1:${match[1]}/`];
      const [w, ...wa] = o.pin ? ["taskset", "-c", "1", "wrk", ...argv] : ["wrk", ...argv];
      return spawnSync(w, wa, { encoding: "utf8" });
    };
    wrk(1);
    const cpu0 = cpuMs(child.pid!);
    const r = wrk(o.seconds);
    const cpu = cpuMs(child.pid!) - cpu0;
    const rate = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout ?? "");
    const n = /(\d+) requests in/.exec(r.stdout ?? "");
    const errors = /Non-2xx.*|Socket errors.*/.exec(r.stdout ?? "");
    if (!rate) throw new Error(`wrk printed no rate: ${r.stdout}${r.stderr}`);
    if (errors) console.error(`  ${o.label}: ${errors[0]}`);
    return { rps: Number(rate[1]), cpuUsPerReq: (cpu * 1000) / Number(n?.[1] ?? NaN), match };
  } finally {
    child.kill("SIGKILL");
  }
}
