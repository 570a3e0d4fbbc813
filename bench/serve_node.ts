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

import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { ROOT } from "../tests/support/procs.ts";

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

const commands = {
  deno: [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "--no-check"],
  bun: [join(ROOT, "node_modules/.bin/bun")],
};
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

/** CPU time (user + system, all threads) of a process in ms, from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in 100 Hz ticks
}

type Sample = { rps: number; cpuUsPerReq: number; mode: string };

async function measure(rt: Runtime, app: string, variant: string): Promise<Sample> {
  const [cmd, ...args] = commands[rt];
  const script = join(ROOT, "bench/serve_node_server.ts");
  const child = spawn("taskset", ["-c", "0", cmd, ...args, script, app, variant], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [port, mode] = await new Promise<[number, string]>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        const m = /port=(\d+) mode=([\w+]+)/.exec(out);
        if (m) resolve([Number(m[1]), m[2]]);
      });
      child.on("exit", (code) => reject(new Error(`${rt} ${app} ${variant} exited (${code})`)));
    });
    const wrk = (s: number) =>
      spawnSync("taskset", [
        "-c",
        "1",
        "wrk",
        "-t1",
        `-c${connections}`,
        `-d${s}s`,
        `http://127.0.0.1:${port}/`,
      ], { encoding: "utf8" });
    wrk(1); // warm-up: JIT, connections
    const cpu0 = cpuMs(child.pid!);
    const r = wrk(seconds);
    const cpu = cpuMs(child.pid!) - cpu0;
    const m = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout ?? "");
    const n = /(\d+) requests in/.exec(r.stdout ?? "");
    const errors = /Non-2xx.*|Socket errors.*/.exec(r.stdout ?? "");
    if (!m) throw new Error(`wrk printed no rate: ${r.stdout}${r.stderr}`);
    if (errors) console.error(`  ${rt} ${app} ${variant}: ${errors[0]}`);
    return { rps: Number(m[1]), cpuUsPerReq: (cpu * 1000) / Number(n?.[1] ?? NaN), mode };
  } finally {
    child.kill("SIGKILL");
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

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
