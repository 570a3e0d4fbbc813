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

import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { ROOT } from "../tests/support/procs.ts";
import { median, RUNTIME_COMMANDS, wrkRun } from "./wrk_run.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: "string", default: "7" },
    seconds: { type: "string", default: "5" },
    runtime: { type: "string", multiple: true },
  },
});
const rounds = Number(values.rounds), seconds = Number(values.seconds);
const commands = RUNTIME_COMMANDS;
const runtimes = (Object.keys(commands) as (keyof typeof commands)[]).filter((k) =>
  !values.runtime || values.runtime.includes(k)
);
const variants = ["bare", "serve", "counted", "scraped"];

function measure(
  rt: keyof typeof commands,
  variant: string,
): Promise<{ rps: number; cpu: number }> {
  return wrkRun({
    server: [...commands[rt], join(ROOT, "bench/metrics_server.ts"), variant],
    label: `${rt} ${variant}`,
    ready: /port=(\d+)/,
    connections: 50,
    seconds,
  }).then((m) => ({ rps: m.rps, cpu: m.cpuUsPerReq }));
}

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
