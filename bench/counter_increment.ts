/**
 * The cost of counting one request: a handler wrapper like the one `up.serve()`
 * counts in (Bun's src/runtime/serve_bun.ts `counting`; on Deno the adapter's
 * one wrapper, which also counts) around an empty handler, with
 * the count in a JavaScript object (`object`: instar before the counter
 * region), in a Float64Array of the JavaScript heap (`heap`), and in this
 * generation's slot of the shared counter region (`region`: a one-element
 * view of the MAP_SHARED memfd, what `up.serve()` counts in now). Each variant
 * is called 20 million times per round through the same call site, rounds
 * interleaved with the order alternating; medians of ns per call and of each round's ratio to
 * `object`.
 *
 * Usage: deno run -A bench/counter_increment.ts [--rounds 9] | bun bench/counter_increment.ts
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { CounterRegion } from "../src/observe/counter_region.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { rounds: { type: "string", default: "9" }, calls: { type: "string", default: "2e7" } },
});
const rounds = Number(values.rounds), calls = Number(values.calls);

const region = CounterRegion.create();
region.claim(process.pid, 1);

type Handler = (a: unknown, b: unknown) => unknown;
const empty: Handler = (a) => a;

// The wrappers, shaped as serve_bun.ts's counting() builds them.
function objectCounted(h: Handler): [Handler, () => number] {
  const counter = { n: 0 };
  return [function (this: unknown, a, b) {
    counter.n++;
    return h.call(this, a, b);
  }, () => counter.n];
}
function viewCounted(h: Handler, counter: Float64Array): [Handler, () => number] {
  return [function (this: unknown, a, b) {
    counter[0]++;
    return h.call(this, a, b);
  }, () => counter[0]];
}

const variants: Record<string, () => [Handler, () => number]> = {
  object: () => objectCounted(empty),
  heap: () => viewCounted(empty, new Float64Array(1)),
  region: () => viewCounted(empty, region.counter(`accepted:bench-${Math.random()}`)!),
};

function run(make: () => [Handler, () => number]): number {
  const [handler, count] = make();
  const start = performance.now();
  for (let i = 0; i < calls; i++) handler(i, undefined);
  const ns = ((performance.now() - start) * 1e6) / calls;
  if (count() !== calls) throw new Error(`counted ${count()} of ${calls}`);
  return ns;
}

const results: Record<string, number[]> = { object: [], heap: [], region: [] };
const names = Object.keys(variants);
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? [...names].reverse() : names;
  for (const n of order) results[n].push(run(variants[n]));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const runtime = "Bun" in globalThis ? "bun" : "deno";
console.log(`| runtime | counter | median ns per call | per-round ratio to object (median) |`);
console.log(`| --- | --- | --- | --- |`);
for (const n of names) {
  const ratio = median(results[n].map((ns, r) => ns / results.object[r]));
  console.log(`| ${runtime} | ${n} | ${median(results[n]).toFixed(2)} | ${ratio.toFixed(2)}x |`);
}
region.release();
