// Runs the same test files under `deno test` and `bun test`, prints each
// runtime's summary and a combined closing line, and fails if either fails.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const bin = (name) => {
  const local = join(root, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};
const filter = process.argv.slice(2); // optional test files
const runs = [
  {
    name: "deno",
    cmd: bin("deno"),
    args: ["test", "-A", "--no-check", ...(filter.length ? filter : ["tests/"])],
  },
  {
    name: "bun",
    cmd: bin("bun"),
    args: ["test", "--timeout", "300000", ...(filter.length ? filter : ["tests/"])],
  },
];

let passed = 0, failed = 0, badExit = false;
const summaries = [];
for (const run of runs) {
  console.log(`\n===== ${run.name}: ${[run.cmd, ...run.args].join(" ")}`);
  const r = spawnSync(run.cmd, run.args, {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1" },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 1 << 28,
  });
  const out = (r.stdout ?? "") + (r.stderr ?? "");
  process.stdout.write(out);
  // deno: "ok | 12 passed | 0 failed"; bun: " 12 pass" / " 0 fail"
  const clean = out.replaceAll(String.fromCharCode(27), "").replace(/\[[0-9;]*m/g, "");
  let p = 0, f = 0;
  // deno counts node:test describe() blocks as tests and their test()s as steps
  const d = clean.match(
    /(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?/,
  );
  if (d) [p, f] = [Number(d[2] ?? d[1]), Number(d[4] ?? d[3])];
  const bp = clean.match(/^\s*(\d+) pass\s*$/m), bf = clean.match(/^\s*(\d+) fail\s*$/m);
  if (bp) [p, f] = [Number(bp[1]), Number(bf?.[1] ?? 0)];
  const ran = d || bp;
  if (r.status !== 0 || !ran || p === 0) badExit = true;
  if (!ran && r.status === 0) f += 1; // a runner that printed no summary ran nothing we can count
  passed += p;
  failed += f + (r.status !== 0 && f === 0 ? 1 : 0);
  summaries.push(`${run.name}: ${p} passed, ${f} failed (exit ${r.status ?? r.signal})`);
}
console.log("\n===== summary");
for (const s of summaries) console.log(s);
console.log(`total: ${passed} passed, ${failed} failed`);
process.exit(badExit || failed ? 1 : 0);
