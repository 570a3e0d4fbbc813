/**
 * Throughput of instar's serve() against the runtime's own server: bare
 * Deno.serve vs serve() (Deno), bare Bun.serve vs serve() (Bun), plus the
 * node:net proxy fallback for reference. Hello world, `wrk -t1 -c50`
 * keep-alive, every variant once per round, rounds interleaved; reports the
 * median req/s per variant and the ratio to bare in the same run.
 *
 * Usage: deno run -A bench/serve.ts [--rounds 5] [--seconds 5] [--no-fallback] [--runtime deno]
 *        [--raw]   (adds transplant() without serve()'s handler wrapper)
 *
 * Needs wrk (installed with apt-get when missing). Only hits 127.0.0.1.
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
    "no-fallback": { type: "boolean", default: false },
    raw: { type: "boolean", default: false },
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

const commands = {
  deno: [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "--no-check"],
  bun: [join(ROOT, "node_modules/.bin/bun")],
};
type Runtime = keyof typeof commands;
const runtimes = Object.fromEntries(
  Object.entries(commands).filter(([k]) => !values.runtime || values.runtime.includes(k)),
) as Partial<typeof commands>;
const variants = [
  "bare",
  ...(values.raw ? ["raw"] : []),
  "transplant",
  ...(values["no-fallback"] ? [] : ["fallback"]),
];

/** CPU time (user + system, all threads) of a process in ms, from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in 100 Hz ticks
}

async function measure(
  rt: Runtime,
  variant: string,
  wrk: string,
): Promise<{ rps: number; cpuUsPerReq: number }> {
  const [cmd, ...args] = commands[rt];
  const child = spawn(cmd, [...args, join(ROOT, "bench/serve_server.ts"), variant], {
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
    // Warm-up (JIT, connection setup), then the measured run.
    spawnSync(wrk, ["-t1", `-c${connections}`, "-d1s", url]);
    const cpu0 = cpuMs(child.pid!);
    const r = spawnSync(wrk, ["-t1", `-c${connections}`, `-d${seconds}s`, url], {
      encoding: "utf8",
    });
    const cpu = cpuMs(child.pid!) - cpu0;
    const m = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout ?? "");
    const n = /(\d+) requests in/.exec(r.stdout ?? "");
    const errors = /Non-2xx|Socket errors/.exec(r.stdout ?? "");
    if (!m) throw new Error(`wrk printed no rate: ${r.stdout}${r.stderr}`);
    if (errors) console.error(`  ${rt} ${variant}: ${errors[0]} in wrk output`);
    return { rps: Number(m[1]), cpuUsPerReq: (cpu * 1000) / Number(n?.[1] ?? NaN) };
  } finally {
    child.kill("SIGKILL");
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const wrk = ensureWrk();
const results: Record<string, number[]> = {};
const cpus: Record<string, number[]> = {};
for (let round = 1; round <= rounds; round++) {
  for (const rt of Object.keys(runtimes) as Runtime[]) {
    // Alternate the order inside a round so neither variant always runs first.
    const order = round % 2 ? variants : [...variants].reverse();
    for (const v of order) {
      const { rps, cpuUsPerReq } = await measure(rt, v, wrk);
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
    const name = v === "bare" ? native : v === "raw" ? `${native} + transplant()` : `serve() ${v}`;
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
