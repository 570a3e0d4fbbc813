/**
 * Idle cost of an instar server against a bare one of the same runtime: CPU
 * ticks, context switches (wakeups) and resident memory while nothing happens.
 *
 *   deno run -A bench/idle.ts [--seconds 20] [--rounds 3] [--settle 2] [--runtime deno|bun|both]
 *                             [--variants instar,bare,import,minimal] [--no-import]
 *                             [--import <module>] [--requests 5] [--json]
 *   bun bench/idle.ts …
 *
 * Variants, each a fresh process, one at a time, the order alternating per round:
 * - `instar`: examples/http_server.ts with `--control` and `--pid-file` (the
 *   control socket on: the worst case);
 * - `bare`: bench/idle_bare.ts, Deno.serve / Bun.serve with the same kind of
 *   hello handler and no imports;
 * - `import`: the bare server after loading instar's mod.ts (or `--import`'s
 *   module, to measure one part of the graph) without using it, to split the
 *   memory overhead into "loading the code" and "running it";
 * - `minimal`: bench/idle_minimal.ts, the smallest app on mod.ts
 *   (`Upgrader.create()`, `up.serve({ port, fetch })`, `up.ready()`).
 * Each server answers `--requests` HTTP requests (Connection: close), then gets
 * no traffic; after `--settle` seconds the idle window of `--seconds` starts
 * (`--seconds 0` measures memory only).
 * Over the window: utime+stime from /proc/<pid>/stat (clock ticks) and
 * voluntary+nonvoluntary context switches summed over /proc/<pid>/task/*
 * (every timer wakeup of a sleeping thread is one: a poll shows up here even
 * when it costs less than a tick). At its end: VmRSS, VmHWM, RssAnon, RssFile,
 * threads, Pss and Private (Private_Clean + Private_Dirty: pages no other
 * process maps) from /proc/<pid>/smaps_rollup, and resident memory per kind
 * of mapping from /proc/<pid>/smaps.
 * Linux only. Only 127.0.0.1 is used.
 *
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { alive, ROOT, runtimeCmd, sleep } from "../tests/support/procs.ts";

type Runtime = "deno" | "bun";
type Variant = "instar" | "bare" | "import" | "minimal";
const ALL_VARIANTS: Variant[] = ["instar", "bare", "import", "minimal"];

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "20" },
    rounds: { type: "string", default: "3" },
    settle: { type: "string", default: "2" },
    runtime: { type: "string", default: "both" },
    variants: { type: "string", default: "instar,bare,import" },
    "no-import": { type: "boolean", default: false },
    import: { type: "string", default: "../mod.ts" },
    requests: { type: "string", default: "1" },
    json: { type: "boolean", default: false },
  },
  strict: true,
});
const SECONDS = Number(values.seconds), ROUNDS = Number(values.rounds);
const SETTLE_MS = Number(values.settle) * 1000;
const RUNTIMES: Runtime[] = values.runtime === "both"
  ? ["deno", "bun"]
  : [values.runtime as Runtime];
for (const r of RUNTIMES) {
  if (r !== "deno" && r !== "bun") throw new Error(`--runtime ${r}: expected deno, bun or both`);
}
const VARIANTS = (values.variants.split(",") as Variant[]).filter((v) =>
  !(values["no-import"] && v === "import")
);
for (const v of VARIANTS) {
  if (!ALL_VARIANTS.includes(v)) {
    throw new Error(`--variants ${v}: expected some of ${ALL_VARIANTS.join(",")}`);
  }
}
if (!VARIANTS.includes("bare")) throw new Error("--variants: bare is the reference, keep it");
const REQUESTS = Math.max(1, Number(values.requests));

/** Clock ticks per second, the unit of /proc/<pid>/stat times (100 on every usual kernel). */
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout) || 100;

interface Sample {
  runtime: Runtime;
  variant: Variant;
  round: number;
  ticks: number;
  switches: number;
  /** Context switches during the window per thread name (threads of one name summed). */
  switchesByThread: Record<string, number>;
  threads: number;
  /** kB, from /proc/<pid>/status at the end of the window. */
  mem: Record<"VmRSS" | "VmHWM" | "RssAnon" | "RssFile" | "RssShmem" | "Pss" | "Private", number>;
  /** Resident kB per kind of mapping, from /proc/<pid>/smaps. */
  smaps: Record<string, number>;
}

// ---- /proc readers -------------------------------------------------------------------------

/** utime + stime of the whole process (all threads, including exited ones), in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may contain spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // fields 14 and 15 of proc(5)
}

/** The numeric fields of a /proc status file, by name. */
function statusFields(path: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const m = /^(\w+):\s+(\d+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Pss and Private (clean + dirty) kB of the whole process, from /proc/<pid>/smaps_rollup. */
function rollup(pid: number): { Pss: number; Private: number } {
  const f = statusFields(`/proc/${pid}/smaps_rollup`);
  return { Pss: f.Pss, Private: f.Private_Clean + f.Private_Dirty };
}

/** Context switches so far of each live thread, by tid, with the thread's name. */
function threadSwitches(pid: number): Map<string, { name: string; n: number }> {
  const out = new Map<string, { name: string; n: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      // /proc/<pid>/status counts the main thread only: every task is read on its own.
      const f = statusFields(`/proc/${pid}/task/${tid}/status`);
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      out.set(tid, { name, n: f.voluntary_ctxt_switches + f.nonvoluntary_ctxt_switches });
    } catch { /* the thread exited while listed */ }
  }
  return out;
}

/** Switches between two readings, by thread name; a thread born in between counts from 0. */
function switchesBetween(
  before: Map<string, { name: string; n: number }>,
  after: Map<string, { name: string; n: number }>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [tid, { name, n }] of after) {
    out[name] = (out[name] ?? 0) + n - (before.get(tid)?.n ?? 0);
  }
  return out;
}

/** The kind of a mapping, for the memory breakdown: what the resident pages belong to. */
function mappingKind(name: string, exe: string): string {
  if (name === "") return "anonymous";
  if (name === exe) return "runtime binary";
  if (/\.so(\.|$)/.test(name)) return "shared libraries";
  if (name === "[heap]" || name === "[stack]") return name;
  if (name.startsWith("[anon:")) return name.replace(/\s+.*$/, "");
  if (name.startsWith("/memfd:") || name.startsWith("/dev/")) return "shared memory";
  if (name.startsWith("/")) return "other files";
  return "other";
}

/** Resident kB per kind of mapping, summed over /proc/<pid>/smaps. */
function smapsByKind(pid: number): Record<string, number> {
  const exe = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "");
  const out: Record<string, number> = {};
  let kind = "other";
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) kind = mappingKind(header[1].replace(/ \(deleted\)$/, ""), exe);
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out[kind] = (out[kind] ?? 0) + Number(rss[1]);
  }
  return out;
}

// ---- servers -------------------------------------------------------------------------------

/** A port that was free a moment ago on 127.0.0.1 (the example takes a port, not a socket). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    }).on("error", reject);
  });
}

/** Starts one variant; its output is kept (last lines only) to explain a failure. */
function startServer(
  rt: Runtime,
  variant: Variant,
  port: number,
  dir: string,
): { child: ChildProcess; log: string[] } {
  const [cmd, ...args] = variant === "instar"
    ? runtimeCmd(rt, join(ROOT, "examples/http_server.ts"), [
      ...["--port", String(port), "--hostname", "127.0.0.1"],
      ...["--control", join(dir, "ctl.sock"), "--pid-file", join(dir, "app.pid")],
    ])
    : variant === "minimal"
    ? runtimeCmd(rt, join(ROOT, "bench/idle_minimal.ts"), [String(port)])
    : runtimeCmd(rt, join(ROOT, "bench/idle_bare.ts"), [
      String(port),
      ...(variant === "import" ? ["--import", values.import] : []),
    ]);
  const child = spawn(cmd, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const log: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) {
    s.on("data", (d: Uint8Array) => {
      log.push(...String(d).split("\n"));
      log.splice(0, log.length - 40);
    });
  }
  return { child, log };
}

/** One GET on a new connection with `Connection: close`, so that no idle keep-alive stays open. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    let data = "";
    const sock = net.connect(port, "127.0.0.1", () => {
      sock.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    });
    sock.setTimeout(2000, () => sock.destroy());
    sock.on("data", (d) => (data += d));
    sock.on("error", () => {});
    sock.on("close", () => resolve(data.startsWith("HTTP/1.1 200")));
  });
}

/** Waits until the server answers, at most 30 s; fails if it exits first. */
async function waitAnswering(child: ChildProcess, port: number, log: string[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await answers(port))) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      throw new Error(`server did not answer on port ${port}:\n${log.join("\n")}`);
    }
    await sleep(100);
  }
}

/** SIGTERM, then SIGKILL after 5 s; returns once the process is gone (bounded at ~7 s). */
async function stopServer(child: ChildProcess): Promise<void> {
  const pid = child.pid!;
  for (const [sig, ms] of [["SIGTERM", 5000], ["SIGKILL", 2000]] as const) {
    try {
      process.kill(pid, sig);
    } catch { /* gone */ }
    for (const end = Date.now() + ms; alive(pid) && Date.now() < end;) await sleep(25);
    if (!alive(pid)) return;
  }
}

// ---- measuring -----------------------------------------------------------------------------

/** The idle window itself: readings before and after `SECONDS` without traffic. */
async function idleWindow(pid: number): Promise<Omit<Sample, "runtime" | "variant" | "round">> {
  const ticks0 = cpuTicks(pid), threads0 = threadSwitches(pid);
  await sleep(SECONDS * 1000);
  const ticks = cpuTicks(pid) - ticks0;
  const byThread = switchesBetween(threads0, threadSwitches(pid));
  const f = statusFields(`/proc/${pid}/status`);
  return {
    ticks,
    switches: Object.values(byThread).reduce((a, b) => a + b, 0),
    switchesByThread: byThread,
    threads: f.Threads,
    mem: {
      VmRSS: f.VmRSS,
      VmHWM: f.VmHWM,
      RssAnon: f.RssAnon,
      RssFile: f.RssFile,
      RssShmem: f.RssShmem,
      ...rollup(pid),
    },
    smaps: smapsByKind(pid),
  };
}

/** Starts one server, waits for its answer and the settle time, measures, stops it. */
async function measure(rt: Runtime, variant: Variant, round: number): Promise<Sample> {
  const dir = mkdtempSync(join(tmpdir(), "instar-idle-"));
  const port = await freePort();
  const { child, log } = startServer(rt, variant, port, dir);
  running.add(child);
  try {
    await waitAnswering(child, port, log);
    for (let i = 1; i < REQUESTS; i++) await answers(port);
    await sleep(SETTLE_MS);
    return { runtime: rt, variant, round, ...(await idleWindow(child.pid!)) };
  } finally {
    await stopServer(child);
    running.delete(child);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Servers still running, killed if the bench itself stops early. */
const running = new Set<ChildProcess>();
process.on("exit", () => running.forEach((c) => c.kill("SIGKILL")));
// Ctrl-C would otherwise end the bench without running the "exit" handlers.
process.on("SIGINT", () => process.exit(130));

// ---- reporting -----------------------------------------------------------------------------

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mb = (kb: number) => (kb / 1024).toFixed(1);

/** `n` per second of the idle window; "-" when there was none (`--seconds 0`: memory only). */
const perSecond = (n: number, digits: number) => SECONDS > 0 ? (n / SECONDS).toFixed(digits) : "-";

/** The `n` thread names with the most switches, medians over rounds. */
function topThreads(samples: Sample[], n = 3): string {
  const names = new Set(samples.flatMap((s) => Object.keys(s.switchesByThread)));
  const med = [...names].map((k) => [k, median(samples.map((s) => s.switchesByThread[k] ?? 0))]);
  return med.sort((a, b) => +b[1] - +a[1]).slice(0, n).map(([k, v]) => `${k} ${v}`).join(", ");
}

/** One row per variant: per-round figures and medians. */
function summaryTable(rt: Runtime, samples: Sample[]): string[] {
  const rows = [
    `| ${rt} | CPU ticks per round | median | % of a core | context switches per round | median | per s | busiest threads (median switches) | threads | RSS MB | RssAnon MB | RssFile MB | HWM MB |`,
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const v of VARIANTS) {
    const s = samples.filter((x) => x.runtime === rt && x.variant === v);
    const ticks = median(s.map((x) => x.ticks)), sw = median(s.map((x) => x.switches));
    const m = (k: keyof Sample["mem"]) => mb(median(s.map((x) => x.mem[k])));
    rows.push(
      `| ${v} | ${s.map((x) => x.ticks).join(" ")} | ${ticks} | ${
        perSecond((100 * ticks) / CLK_TCK, 2)
      } | ${s.map((x) => x.switches).join(" ")} | ${sw} | ${perSecond(sw, 1)} | ${
        topThreads(s)
      } | ${median(s.map((x) => x.threads))} | ${m("VmRSS")} | ${m("RssAnon")} | ${
        m("RssFile")
      } | ${m("VmHWM")} |`,
    );
  }
  return rows;
}

/** The columns of the memory table: each variant, and the differences that split the overhead. */
function memoryColumns(): [string, (med: (v: Variant) => number) => number][] {
  const cols: [string, (med: (v: Variant) => number) => number][] = VARIANTS.map((v) => [
    `${v} MB`,
    (med) => med(v),
  ]);
  for (const v of VARIANTS.filter((v) => v !== "bare")) {
    cols.push([`${v} − bare MB`, (med) => med(v) - med("bare")]);
  }
  if (!VARIANTS.includes("import") || !VARIANTS.includes("instar")) return cols;
  // Loading the library's code, then running the lifecycle: the two parts of instar − bare.
  cols.push(["instar − import MB", (med) => med("instar") - med("import")]);
  return cols;
}

/** Median resident MB per kind of mapping per variant, and the differences between variants. */
function memoryTable(rt: Runtime, samples: Sample[]): string[] {
  const of = (v: Variant) => samples.filter((x) => x.runtime === rt && x.variant === v);
  const kinds = [
    ...new Set(samples.filter((x) => x.runtime === rt).flatMap((x) => Object.keys(x.smaps))),
  ];
  const cols = memoryColumns();
  const rows = [
    `| ${rt}: resident by mapping | ${cols.map(([h]) => h).join(" | ")} |`,
    `| --- | ${cols.map(() => "---").join(" | ")} |`,
  ];
  const row = (label: string, kb: (s: Sample) => number) => {
    const med = (v: Variant) => median(of(v).map(kb));
    return `| ${label} | ${cols.map(([, f]) => mb(f(med))).join(" | ")} |`;
  };
  const size = (k: string) =>
    Math.max(...VARIANTS.map((v) => median(of(v).map((x) => x.smaps[k] ?? 0))));
  // Kinds under 64 kB in every variant are left out: they never explain a difference worth a line.
  for (const k of kinds.sort((a, b) => size(b) - size(a)).filter((k) => size(k) >= 64)) {
    rows.push(row(k, (s) => s.smaps[k] ?? 0));
  }
  rows.push(row("**total (VmRSS)**", (s) => s.mem.VmRSS));
  rows.push(row("Private (smaps_rollup)", (s) => s.mem.Private));
  rows.push(row("Pss (smaps_rollup)", (s) => s.mem.Pss));
  return rows;
}

// ---- main ----------------------------------------------------------------------------------

const samples: Sample[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const rt of RUNTIMES) {
    // Alternate the order so that neither variant always runs first after the other's exit.
    for (const v of round % 2 ? VARIANTS : [...VARIANTS].reverse()) {
      const s = await measure(rt, v, round);
      samples.push(s);
      console.error(
        `round ${round} ${rt} ${v}: ${s.ticks} ticks, ${s.switches} switches, ${
          mb(s.mem.VmRSS)
        } MB RSS, ${mb(s.mem.Private)} MB Private, ${s.threads} threads`,
      );
    }
  }
}

if (values.json) {
  console.log(JSON.stringify({ seconds: SECONDS, rounds: ROUNDS, clkTck: CLK_TCK, samples }));
} else {
  console.log(`\n${SECONDS} s idle windows, ${ROUNDS} rounds, ${CLK_TCK} ticks/s`);
  for (const rt of RUNTIMES) {
    console.log(["", ...summaryTable(rt, samples), "", ...memoryTable(rt, samples)].join("\n"));
  }
}
