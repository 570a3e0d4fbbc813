/**
 * Where a minimal app's memory goes, step by step inside one process: a bare
 * server first (`Deno.serve` / `Bun.serve`, as bench/idle_bare.ts), then each
 * step in order, with resident memory (VmRSS) and the JavaScript heap read
 * after a forced garbage collection at every step. A module step imports that
 * module (and what it imports that is not loaded yet), so its figure is what
 * it adds on top of the steps before it; `libc` opens the FFI backend,
 * `create`, `serve` and `ready` run the minimal app of bench/idle_minimal.ts.
 *
 *   deno run -A bench/idle_steps.ts [--runtime deno|bun|both] [--rounds 5] [step …]
 *   bun bench/idle_steps.ts …
 *
 * Each round is a fresh process per runtime; the table has the median of each
 * step's growth (MB) over the rounds. Linux only; the servers listen on
 * 127.0.0.1 and get no traffic.
 *
 * @module
 */

/** The default steps: the layers of mod.ts's graph in import order, then the app's calls. */
const STEPS = [
  "bare",
  "src/ffi/mod.ts",
  "libc",
  "src/host.ts",
  "src/lifecycle/start_info.ts",
  "src/runtime/transplant.ts",
  "src/runtime/mod.ts",
  "src/net/listener.ts",
  "src/serve/serve.ts",
  "src/observe/counter_region.ts",
  "src/observe/report.ts",
  "src/protocol/messages.ts",
  "src/protocol/validate.ts",
  "src/lifecycle/control.ts",
  "src/lifecycle/generation.ts",
  "src/lifecycle/promotion.ts",
  "src/lifecycle/upgrader.ts",
  "mod.ts",
  "create",
  "serve",
  "ready",
];

type G = {
  Deno?: {
    args: string[];
    readTextFileSync(p: string): string;
    memoryUsage(): { heapUsed: number };
    serve(o: Record<string, unknown>, h: () => Response): unknown;
    exit(code: number): never;
  };
  Bun?: {
    argv: string[];
    file(p: string): { text(): Promise<string> };
    gc(full: boolean): void;
    serve(o: Record<string, unknown>): unknown;
  };
  gc?: () => void;
  process?: { exit(code: number): never };
};
const g = globalThis as unknown as G;
const ROOT = new URL("../", import.meta.url);

/** VmRSS and the JS heap in use, in MB, after a full collection (no node: module is loaded for it). */
async function reading(): Promise<{ rss: number; heap: number }> {
  let heap: number;
  if (g.Deno) {
    g.gc?.();
    heap = g.Deno.memoryUsage().heapUsed;
  } else {
    g.Bun!.gc(true);
    heap = (await import("bun:jsc" as string)).heapStats().heapSize;
  }
  const status = g.Deno
    ? g.Deno.readTextFileSync("/proc/self/status")
    : await g.Bun!.file("/proc/self/status").text();
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
  return { rss, heap: heap / 1048576 };
}

/** The child: runs `steps` in order and prints one JSON line of the growth after each. */
async function child(steps: string[]): Promise<void> {
  const hello = () => new Response("Hello, World!");
  // deno-lint-ignore no-explicit-any -- the Upgrader of whatever mod.ts is measured
  let up: any;
  const out: Record<string, [number, number]> = {};
  let prev = await reading();
  for (const step of steps) {
    if (step === "bare") {
      if (g.Bun) g.Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: hello });
      else g.Deno!.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, hello);
    } else if (step === "libc") (await import(new URL("src/ffi/mod.ts", ROOT).href)).backend();
    else if (step === "create") {
      up = await (await import(new URL("mod.ts", ROOT).href)).Upgrader.create();
    } else if (step === "serve") await up.serve({ port: 0, hostname: "127.0.0.1", fetch: hello });
    else if (step === "ready") await up.ready();
    else await import(new URL(step, ROOT).href);
    // Lets the runtime finish what a step started (a server's first accept registration).
    await new Promise((r) => setTimeout(r, 200));
    const now = await reading();
    out[step] = [now.rss - prev.rss, now.heap - prev.heap];
    prev = now;
  }
  console.log(JSON.stringify({ total: prev.rss, steps: out }));
  g.Deno ? g.Deno.exit(0) : g.process!.exit(0);
}

/** The driver: fresh child processes per round and runtime, then a table of medians. */
async function driver(args: string[]): Promise<void> {
  const { spawnSync } = await import("node:child_process");
  const { parseArgs } = await import("node:util");
  const { values, positionals } = parseArgs({
    args,
    options: {
      runtime: { type: "string", default: "both" },
      rounds: { type: "string", default: "5" },
    },
    allowPositionals: true,
  });
  const steps = positionals.length ? positionals : STEPS;
  const runtimes = values.runtime === "both" ? ["deno", "bun"] : [values.runtime!];
  const bin = (rt: string) => new URL(`node_modules/.bin/${rt}`, ROOT).pathname;
  const me = new URL(import.meta.url).pathname;
  const runs: Record<string, { total: number; steps: Record<string, [number, number]> }[]> = {};
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const rt of runtimes) {
      const cmd = rt === "deno"
        ? ["run", "-A", "--v8-flags=--expose-gc", me, "--child", ...steps]
        : [me, "--child", ...steps];
      const r = spawnSync(bin(rt), cmd, { encoding: "utf8", timeout: 60_000 });
      const line = r.stdout.split("\n").find((l) => l.startsWith("{"));
      if (!line) throw new Error(`${rt} child failed:\n${r.stderr}`);
      (runs[rt] ??= []).push(JSON.parse(line));
    }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  for (const rt of runtimes) {
    console.log(
      `\n| ${rt}: step | RSS growth MB (median) | JS heap growth MB |\n| --- | --- | --- |`,
    );
    for (const s of steps) {
      const [rss, heap] = [0, 1].map((i) => median(runs[rt].map((x) => x.steps[s][i])));
      console.log(`| ${s} | ${rss.toFixed(1)} | ${heap.toFixed(1)} |`);
    }
    const bare = median(runs[rt].map((x) => x.steps.bare?.[0] ?? 0));
    const total = median(runs[rt].map((x) => x.total));
    console.log(`| total after the last step (VmRSS) | ${total.toFixed(1)} | |`);
    if (steps[0] === "bare") console.log(`(bare server's own growth: ${bare.toFixed(1)} MB)`);
  }
}

const argv = g.Deno ? g.Deno.args : g.Bun!.argv.slice(2);
if (argv[0] === "--child") await child(argv.slice(1));
else await driver(argv);
