/**
 * The steady-state cost of instar's metrics: hello world under `wrk -t1 -c50`
 * keep-alive against the runtime's own server (`bare`), instar's `serve()`
 * alone (`serve`: nothing counted), `up.serve()` of an Upgrader (`counted`:
 * one increment per request for `instar_requests_total`), and the same with
 * `up.metrics()` computed once a second (`scraped`: a 1 s Prometheus scrape
 * interval, /proc read off the event loop). Every variant once per round,
 * order alternating, rounds interleaved; medians of req/s and of the server's
 * CPU time per request, and each one's ratio to bare in the same round.
 *
 * Usage: deno run -A bench/metrics.ts [--rounds 7] [--seconds 5] [--runtime deno] [--runtime bun]
 *
 * Needs wrk. Only hits 127.0.0.1.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { ROOT } from "../tests/support/procs.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: "string", default: "7" },
    seconds: { type: "string", default: "5" },
    runtime: { type: "string", multiple: true },
  },
});
const rounds = Number(values.rounds), seconds = Number(values.seconds);
const commands: Record<string, string[]> = {
  deno: [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "--no-check"],
  bun: [join(ROOT, "node_modules/.bin/bun")],
};
const runtimes = Object.keys(commands).filter((k) => !values.runtime || values.runtime.includes(k));
const variants = ["bare", "serve", "counted", "scraped"];

/** CPU time (user + system, all threads) of a process in ms, from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

async function measure(rt: string, variant: string): Promise<{ rps: number; cpu: number }> {
  const [cmd, ...args] = commands[rt];
  const child = spawn(cmd, [...args, join(ROOT, "bench/metrics_server.ts"), variant], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        const m = /port=(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on("exit", (code) => reject(new Error(`${rt} ${variant} exited (${code}): ${out}`)));
    });
    const url = `http://127.0.0.1:${port}/`;
    spawnSync("wrk", ["-t1", "-c50", "-d1s", url]); // warm-up
    const cpu0 = cpuMs(child.pid!);
    const r = spawnSync("wrk", ["-t1", "-c50", `-d${seconds}s`, url], { encoding: "utf8" });
    const cpu = cpuMs(child.pid!) - cpu0;
    const rate = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout ?? "");
    const n = /(\d+) requests in/.exec(r.stdout ?? "");
    if (!rate || !n) throw new Error(`wrk printed no rate: ${r.stdout}${r.stderr}`);
    if (/Non-2xx|Socket errors/.test(r.stdout)) console.error(`  ${rt} ${variant}: wrk saw errors`);
    return { rps: Number(rate[1]), cpu: (cpu * 1000) / Number(n[1]) };
  } finally {
    child.kill("SIGKILL");
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const rps: Record<string, number[]> = {}, cpus: Record<string, number[]> = {};
for (let round = 1; round <= rounds; round++) {
  for (const rt of runtimes) {
    for (const v of round % 2 ? variants : [...variants].reverse()) {
      const m = await measure(rt, v);
      (rps[`${rt} ${v}`] ??= []).push(m.rps);
      (cpus[`${rt} ${v}`] ??= []).push(m.cpu);
      console.error(
        `round ${round}: ${rt} ${v} ${Math.round(m.rps)} req/s, ${m.cpu.toFixed(2)} µs CPU/req`,
      );
    }
  }
}

console.log(
  "\n| runtime | server | median req/s | per-round ratio to bare | CPU µs/req | per-round CPU ratio to bare |",
);
console.log("| --- | --- | --- | --- | --- | --- |");
for (const rt of runtimes) {
  for (const v of variants) {
    const k = `${rt} ${v}`, b = `${rt} bare`;
    const ratio = median(rps[k].map((x, i) => x / rps[b][i]));
    const cpuRatio = median(cpus[k].map((x, i) => x / cpus[b][i]));
    console.log(
      `| ${rt} | ${v} | ${Math.round(median(rps[k]))} | ${ratio.toFixed(3)}x | ${
        median(cpus[k]).toFixed(2)
      } | ${cpuRatio.toFixed(3)}x |`,
    );
  }
}
