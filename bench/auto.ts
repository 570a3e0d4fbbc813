/**
 * CPU per request and throughput of an unmodified server under instar/auto
 * (`--preload src/auto/preload.ts`) against the same server run bare, hello
 * world: the runtime's own server (`Bun.serve` / `Deno.serve`) and node:http
 * (bench/auto_app.mjs). `wrk -t1 -c50` keep-alive, the server pinned to CPU 0
 * and wrk to CPU 1, rounds interleaved (the order alternates); reports the
 * medians and the per-round ratios to `bare`.
 *
 * Usage: deno run -A bench/auto.ts [--rounds 5] [--seconds 5] [--runtime bun]
 *
 * Needs wrk and taskset. Only hits 127.0.0.1.
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
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "5" },
    runtime: { type: "string", multiple: true },
  },
});
const rounds = Number(values.rounds), seconds = Number(values.seconds);
type Runtime = keyof typeof RUNTIME_COMMANDS;
const rts = (Object.keys(RUNTIME_COMMANDS) as Runtime[]).filter((r) =>
  !values.runtime || values.runtime.includes(r)
);
const PRELOAD = join(ROOT, "src/auto/preload.ts");
const APP = join(ROOT, "bench/auto_app.mjs");

function command(rt: Runtime, app: string, variant: string): string[] {
  const base = RUNTIME_COMMANDS[rt];
  const preload = variant === "auto" ? ["--preload", PRELOAD] : [];
  return [...base, ...preload, APP, app];
}

const runs: Record<string, { rps: number; cpu: number }[]> = {};
for (let round = 1; round <= rounds; round++) {
  for (const rt of rts) {
    for (const app of ["native", "node"]) {
      for (const v of round % 2 ? ["bare", "auto"] : ["auto", "bare"]) {
        const m = await wrkRun({
          server: command(rt, app, v),
          label: `${rt} ${app} ${v}`,
          ready: /port=(\d+)/,
          connections: 50,
          seconds,
          pin: true,
        });
        (runs[`${rt} ${app} ${v}`] ??= []).push({ rps: m.rps, cpu: m.cpuUsPerReq });
        console.error(
          `round ${round}: ${rt} ${app} ${v} ${Math.round(m.rps)} req/s, ` +
            `${m.cpuUsPerReq.toFixed(2)} µs CPU/req`,
        );
      }
    }
  }
}

console.log("\n| runtime | server | run | median req/s | vs bare | CPU µs/req | vs bare |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const rt of rts) {
  for (const app of ["native", "node"]) {
    const bare = runs[`${rt} ${app} bare`];
    for (const v of ["bare", "auto"]) {
      const xs = runs[`${rt} ${app} ${v}`];
      const rps = median(xs.map((x) => x.rps)), cpu = median(xs.map((x) => x.cpu));
      const rr = median(xs.map((x, i) => x.rps / bare[i].rps));
      const cr = median(xs.map((x, i) => x.cpu / bare[i].cpu));
      console.log(
        `| ${rt} | ${
          app === "native" ? (rt === "bun" ? "Bun.serve" : "Deno.serve") : "node:http"
        } | ${v} | ` +
          `${Math.round(rps)} | ${rr.toFixed(3)}x | ${cpu.toFixed(2)} | ${cr.toFixed(3)}x |`,
      );
    }
  }
}
