/**
 * Throughput of instar's serve() against the runtime's own server: bare
 * Deno.serve vs serve() (Deno), bare Bun.serve vs serve() (Bun), plus the
 * node:net proxy fallback for reference. Hello world, `wrk -t1 -c50`
 * keep-alive, every variant once per round, rounds interleaved; reports the
 * median req/s per variant and the ratio to bare in the same run.
 *
 * Usage: deno run -A bench/serve.ts [--rounds 5] [--seconds 5] [--no-fallback] [--runtime deno]
 *        [--raw]   (adds transplant() without serve()'s handler wrapper)
 *        [--portable] (adds up.serve() in portable mode)  [--no-transplant]
 *        [--pin]   (server on CPU 0, wrk on CPU 1: CPU per request with less noise)
 *
 * Needs wrk (installed with apt-get when missing). Only hits 127.0.0.1.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
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
    connections: { type: "string", default: "50" },
    "no-fallback": { type: "boolean", default: false },
    raw: { type: "boolean", default: false },
    portable: { type: "boolean", default: false },
    "no-transplant": { type: "boolean", default: false },
    pin: { type: "boolean", default: false },
    runtime: { type: "string", multiple: true },
  },
});
const rounds = Number(values.rounds), seconds = Number(values.seconds);
const connections = Number(values.connections);

function ensureWrk(): string {
  if (spawnSync("wrk", ["--version"]).error === undefined) return "wrk";
  console.error("wrk is missing: apt-get install -y wrk");
  const r = spawnSync("sh", ["-c", "apt-get update -qq && apt-get install -y -qq wrk"], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error("could not install wrk; install it and run again");
  return "wrk";
}

const commands = RUNTIME_COMMANDS;
type Runtime = keyof typeof commands;
const runtimes = Object.fromEntries(
  Object.entries(commands).filter(([k]) => !values.runtime || values.runtime.includes(k)),
) as Partial<typeof commands>;
const variants = [
  "bare",
  ...(values.raw ? ["raw"] : []),
  ...(values["no-transplant"] ? [] : ["transplant"]),
  ...(values["no-fallback"] ? [] : ["fallback"]),
  ...(values.portable ? ["portable"] : []),
];

function measure(rt: Runtime, variant: string): Promise<{ rps: number; cpuUsPerReq: number }> {
  return wrkRun({
    server: [...commands[rt], join(ROOT, "bench/serve_server.ts"), variant],
    label: `${rt} ${variant}`,
    ready: /port=(\d+)/,
    connections,
    seconds,
    pin: values.pin,
  });
}

ensureWrk();
const results: Record<string, number[]> = {};
const cpus: Record<string, number[]> = {};
for (let round = 1; round <= rounds; round++) {
  for (const rt of Object.keys(runtimes) as Runtime[]) {
    // Alternate the order inside a round so neither variant always runs first.
    const order = round % 2 ? variants : [...variants].reverse();
    for (const v of order) {
      const { rps, cpuUsPerReq } = await measure(rt, v);
      (results[`${rt} ${v}`] ??= []).push(rps);
      (cpus[`${rt} ${v}`] ??= []).push(cpuUsPerReq);
      console.error(
        `round ${round}: ${rt} ${v} ${Math.round(rps)} req/s, ${cpuUsPerReq.toFixed(2)} µs CPU/req`,
      );
    }
  }
}

console.log(
  `\n| runtime | server | median req/s | vs bare | per-round ratio | CPU µs/req | vs bare | runs (req/s) |`,
);
console.log(`| --- | --- | --- | --- | --- | --- | --- | --- |`);
for (const rt of Object.keys(runtimes) as Runtime[]) {
  const bare = median(results[`${rt} bare`]);
  const bareCpu = median(cpus[`${rt} bare`]);
  for (const v of variants) {
    const xs = results[`${rt} ${v}`];
    const native = rt === "deno" ? "Deno.serve" : "Bun.serve";
    const name = v === "bare"
      ? native
      : v === "raw"
      ? `${native} + transplant()`
      : v === "portable"
      ? "up.serve() portable"
      : `serve() ${v}`;
    console.log(
      `| ${rt} | ${name} | ${Math.round(median(xs))} | ${(median(xs) / bare).toFixed(3)}x | ${
        // The median of each round's ratio to the bare run of that round: less exposed to drift.
        median(xs.map((x, i) => x / results[`${rt} bare`][i])).toFixed(3)}x | ${
        median(cpus[`${rt} ${v}`]).toFixed(2)
      } | ${(median(cpus[`${rt} ${v}`]) / bareCpu).toFixed(3)}x | ${
        xs.map((x) => Math.round(x / 1000) + "k").join(" ")
      } |`,
    );
  }
}
