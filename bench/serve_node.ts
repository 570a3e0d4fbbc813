/**
 * Throughput and CPU per request of instar's serveNode() against the
 * framework's own listen(), hello world: a bare node:http handler and
 * Express, on each runtime (`own` = the server's own `listen()` on a port;
 * `auto` = serveNode() on an instar socket, the path the runtime takes by
 * default: Bun transplant, Deno listen({ fd }); with --paths also `own+drain`
 * (own listen() with instar's drain listeners: their steady-state cost alone),
 * serveNode's `transplant` on Deno and the `fallback` proxy). `wrk -t1 -c50` keep-alive,
 * the server pinned to CPU 0 and wrk to CPU 1 (taskset), every variant once
 * per round, rounds interleaved (the order alternates); reports median req/s,
 * median CPU µs per request, and both as ratios to `own` of the same round.
 *
 * Usage: deno run -A bench/serve_node.ts [--rounds 5] [--seconds 5] [--runtime bun] [--app node]
 *        [--paths]
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
    connections: { type: "string", default: "50" },
    runtime: { type: "string", multiple: true },
    app: { type: "string", multiple: true },
    paths: { type: "boolean", default: false },
  },
});
const rounds = Number(values.rounds), seconds = Number(values.seconds);
const connections = Number(values.connections);

const commands = RUNTIME_COMMANDS;
type Runtime = keyof typeof commands;
const rts = (Object.keys(commands) as Runtime[]).filter((r) =>
  !values.runtime || values.runtime.includes(r)
);
const apps = values.app ?? ["node", "express"];
const variantsOf = (rt: Runtime) => [
  "own",
  "auto",
  ...(values.paths ? ["own+drain", ...(rt === "deno" ? ["transplant"] : []), "fallback"] : []),
];

type Sample = { rps: number; cpuUsPerReq: number; mode: string };

async function measure(rt: Runtime, app: string, variant: string): Promise<Sample> {
  const m = await wrkRun({
    server: [...commands[rt], join(ROOT, "bench/serve_node_server.ts"), app, variant],
    label: `${rt} ${app} ${variant}`,
    ready: /port=(\d+) mode=([\w+]+)/,
    connections,
    seconds,
    pin: true,
  });
  return { rps: m.rps, cpuUsPerReq: m.cpuUsPerReq, mode: m.match[2] };
}

const runs: Record<string, Sample[]> = {};
for (let round = 1; round <= rounds; round++) {
  for (const rt of rts) {
    for (const app of apps) {
      const vs = variantsOf(rt);
      for (const v of round % 2 ? vs : [...vs].reverse()) {
        const s = await measure(rt, app, v);
        (runs[`${rt} ${app} ${v}`] ??= []).push(s);
        console.error(
          `round ${round}: ${rt} ${app} ${v} (${s.mode}) ${Math.round(s.rps)} req/s, ` +
            `${s.cpuUsPerReq.toFixed(2)} µs CPU/req`,
        );
      }
    }
  }
}

console.log(
  "\n| runtime | app | server | path | median req/s | vs own (per-round median) | CPU µs/req | vs own (per-round median) |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (const rt of rts) {
  for (const app of apps) {
    const own = runs[`${rt} ${app} own`];
    for (const v of variantsOf(rt)) {
      const xs = runs[`${rt} ${app} ${v}`];
      const rps = median(xs.map((x) => x.rps)), cpu = median(xs.map((x) => x.cpuUsPerReq));
      const rpsRatio = median(xs.map((x, i) => x.rps / own[i].rps));
      const cpuRatio = median(xs.map((x, i) => x.cpuUsPerReq / own[i].cpuUsPerReq));
      const name = v === "own"
        ? "own listen()"
        : v === "own+drain"
        ? "own listen() + drain listeners"
        : `serveNode() ${v}`;
      console.log(
        `| ${rt} | ${app} | ${name} | ${xs[0].mode} | ${Math.round(rps)} | ${
          rpsRatio.toFixed(3)
        }x | ${cpu.toFixed(2)} | ${cpuRatio.toFixed(3)}x |`,
      );
    }
  }
}
