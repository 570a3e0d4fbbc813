/**
 * CPU per request of an unmodified server under instar/auto against the same
 * server run bare, measured side by side: in each round both servers run at
 * the same time, each under its own h2load at the same fixed request rate
 * (`--rps`, keep-alive HTTP/1.1), so what the machine's other load and the
 * virtual CPUs' steal do to one they do to the other, and both serve the same
 * number of requests per second (a server's CPU per request depends on its
 * rate: at a higher rate one epoll wake-up carries more requests). Both
 * servers share CPU 0 and both clients CPU 1 (`taskset`), so that neither
 * server has a quieter core than the other. Reports each round's ratio
 * auto / bare and their median.
 *
 * Usage: deno run -A bench/auto_pair.ts [--runtime deno] [--app native]
 *        [--rounds 12] [--seconds 5] [--rate 6000] [--preload file]
 *
 * Needs h2load and taskset. Only hits 127.0.0.1.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { ROOT } from "../tests/support/procs.ts";
import { cpuMs, median, RUNTIME_COMMANDS } from "./wrk_run.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: "deno" },
    app: { type: "string", default: "native" },
    rounds: { type: "string", default: "12" },
    seconds: { type: "string", default: "5" },
    rate: { type: "string", default: "6000" },
    connections: { type: "string", default: "30" },
    // Another preload in place of instar/auto (to find what costs what).
    preload: { type: "string" },
  },
});
const rt = values.runtime as keyof typeof RUNTIME_COMMANDS;
const rounds = Number(values.rounds), seconds = Number(values.seconds);
const connections = Number(values.connections);
const perConnection = Math.max(1, Math.round(Number(values.rate) / connections));
const PRELOAD = values.preload ?? join(ROOT, "src/auto/preload.ts");
const APP = join(ROOT, "bench/auto_app.mjs");

/** A started server: its process and port. */
interface Server {
  child: ChildProcess;
  port: number;
}

function start(variant: "bare" | "auto"): Promise<Server> {
  const preload = variant === "auto" ? ["--preload", PRELOAD] : [];
  const argv = ["-c", "0", ...RUNTIME_COMMANDS[rt], ...preload, APP, values.app!];
  const child = spawn("taskset", argv, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /port=(\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.on("exit", (code) => reject(new Error(`${variant} exited (${code}): ${out}`)));
  });
}

/** h2load at the fixed rate for `s` seconds; resolves with the requests that succeeded. */
function h2load(port: number, s: number): Promise<number> {
  const argv = [
    "--h1",
    `-c${connections}`,
    `--rps=${perConnection}`,
    `-D${s}`,
    `http://127.0.0.1:${port}/`,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn("taskset", ["-c", "1", "h2load", ...argv], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => out += d);
    child.on("close", () => {
      const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/
        .exec(out);
      if (!m) return reject(new Error(`h2load printed no counts: ${out}`));
      if (Number(m[2])) console.error(`  h2load on ${port}: ${m[2]} failed`);
      resolve(Number(m[1]));
    });
  });
}

/** One round: both servers side by side; resolves with each one's CPU µs per request. */
async function round(n: number): Promise<{ bare: number; auto: number }> {
  // Started in turn, the first one alternating, so that neither is always the older process.
  const [bare, auto] = n % 2
    ? [await start("bare"), await start("auto")]
    : [await start("auto"), await start("bare")].reverse();
  try {
    await Promise.all([h2load(bare.port, 2), h2load(auto.port, 2)]); // warm-up: JIT, connections
    const c0 = [cpuMs(bare.child.pid!), cpuMs(auto.child.pid!)];
    const [nb, na] = await Promise.all([h2load(bare.port, seconds), h2load(auto.port, seconds)]);
    // Behind the rate, a server is measured at another rate than its pair: say so.
    const asked = perConnection * connections * seconds;
    for (const [name, got] of [["bare", nb], ["auto", na]] as const) {
      if (got < 0.98 * asked) console.error(`  round ${n}: ${name} answered ${got} of ${asked}`);
    }
    const us = (pid: number, c: number, reqs: number) => ((cpuMs(pid) - c) * 1000) / reqs;
    return { bare: us(bare.child.pid!, c0[0], nb), auto: us(auto.child.pid!, c0[1], na) };
  } finally {
    bare.child.kill("SIGKILL");
    auto.child.kill("SIGKILL");
  }
}

const ratios: number[] = [];
for (let n = 1; n <= rounds; n++) {
  const r = await round(n);
  ratios.push(r.auto / r.bare);
  console.error(
    `round ${n}: bare ${r.bare.toFixed(2)} µs/req, auto ${r.auto.toFixed(2)} µs/req, ` +
      `ratio ${(r.auto / r.bare).toFixed(3)}`,
  );
}
/** A 95 % interval of the median of `xs`: the median of 4,000 resamples (with replacement). */
function bootstrap(xs: number[]): [number, number] {
  const meds: number[] = [];
  for (let i = 0; i < 4000; i++) {
    meds.push(median(xs.map(() => xs[Math.floor(Math.random() * xs.length)])));
  }
  meds.sort((a, b) => a - b);
  return [meds[Math.floor(0.025 * meds.length)], meds[Math.floor(0.975 * meds.length)]];
}

const sorted = [...ratios].sort((a, b) => a - b);
const [lo, hi] = bootstrap(ratios);
console.log(
  `${rt} ${values.app} at ${
    perConnection * connections
  } req/s each: auto / bare CPU per request, ` +
    `median ${median(ratios).toFixed(3)} (95 % interval ${lo.toFixed(3)}–${hi.toFixed(3)}) ` +
    `over ${rounds} rounds (${sorted.map((x) => x.toFixed(3)).join(" ")})`,
);
