// How long spawn() blocks the parent's JS thread, per backend, with a large live JS heap.
//
//   deno run -A bench/spawn.ts [--heap-mb 1024] [--count 200]
//   bun bench/spawn.ts [--heap-mb 1024] [--count 200]
//
// Allocates and keeps about --heap-mb of JS objects and arrays, then spawns /bin/true
// --count times per backend (interleaved, so both see the same heap), timing only the
// synchronous spawn() call; children are reaped between spawns, outside the timing.
import { parseArgs } from "node:util";
import process from "node:process";
import { readFileSync } from "node:fs";
import { availableBackends, spawn } from "../src/process/spawn.ts";
import { waitpidNoHang } from "../src/ffi/mod.ts";

const { values } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== "--"),
  options: {
    "heap-mb": { type: "string", default: "1024" },
    count: { type: "string", default: "200" },
  },
});
const heapMb = Number(values["heap-mb"]);
const count = Number(values.count);
const runtime = "Bun" in globalThis
  ? `bun ${process.versions.bun}`
  : `deno ${process.versions.deno}`;

function rssMb(): number {
  const m = readFileSync("/proc/self/status", "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

// Live heap: chunks of small objects (pointer-rich, what servers hold) and of
// number arrays, about 1 MB per pair.
const keep: unknown[] = [];
const bun = (globalThis as { Bun?: { gc(sync: boolean): void } }).Bun;
function liveMb(): number {
  bun?.gc(true); // Bun's heapUsed lags behind allocation until a collection
  return process.memoryUsage().heapUsed / 1024 / 1024;
}
const t0 = performance.now();
while (liveMb() < heapMb) {
  for (let k = 0; k < 32; k++) {
    keep.push(Array.from({ length: 8_000 }, (_, i) => ({ id: i, name: `n${i}`, v: i * 1.5 })));
    keep.push(new Array(64_000).fill(0).map((_, i) => i + 0.5));
  }
}
const allocSec = (performance.now() - t0) / 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function reap(pid: number): Promise<void> {
  while (!waitpidNoHang(pid)) await sleep(1);
}

const backends = availableBackends();
const times: Record<string, number[]> = Object.fromEntries(backends.map((b) => [b, []]));
for (const b of backends) {
  await reap(spawn({ path: "/bin/true", argv: ["true"], env: [], fds: [], backend: b })); // warm-up
}
for (let i = 0; i < count; i++) {
  for (const b of backends) {
    const start = performance.now();
    const pid = spawn({ path: "/bin/true", argv: ["true"], env: [], fds: [], backend: b });
    times[b].push(performance.now() - start);
    await reap(pid);
  }
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}
const heapUsedMb = Math.round(liveMb());
console.log(
  `${runtime}: live JS heap ${heapUsedMb} MB, RSS ${rssMb()} MB (allocated in ${
    allocSec.toFixed(1)
  } s), ${count} spawns of /bin/true per backend`,
);
for (const b of backends) {
  const t = times[b];
  console.log(
    `| ${runtime} | ${b} | ${heapUsedMb} MB | ${pct(t, 50).toFixed(3)} | ${
      pct(t, 99).toFixed(3)
    } | ${Math.max(...t).toFixed(3)} |`,
  );
}
keep.length = 0;
