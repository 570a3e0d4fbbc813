// Runs the same test files under `deno test` and `bun test`, streams each
// runtime's output, prints both summaries and a combined closing line, and
// fails if either fails.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const bin = (name) => {
  const local = join(root, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};
const filter = process.argv.slice(2); // optional test files
const files = filter.length ? filter : ["tests/"];
const runs = [
  { name: "deno", cmd: bin("deno"), args: ["test", "-A", "--no-check", ...files] },
  { name: "bun", cmd: bin("bun"), args: ["test", "--timeout", "300000", ...files] },
];

function run({ cmd, args }) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const keep = (stream) => (d) => {
      out += d;
      stream.write(d);
    };
    child.stdout.on("data", keep(process.stdout));
    child.stderr.on("data", keep(process.stderr));
    child.on("close", (status, signal) => resolve({ out, status: status ?? signal }));
  });
}

let passed = 0, failed = 0, bad = false;
const summaries = [];
for (const r of runs) {
  console.log(`\n===== ${r.name}: ${[r.cmd, ...r.args].join(" ")}`);
  const { out, status } = await run(r);
  const clean = out.replaceAll(String.fromCharCode(27), "").replace(/\[[0-9;]*m/g, "");
  let p = 0, f = 0;
  // deno counts node:test describe() blocks as tests and their test()s as steps:
  // "ok | 12 passed (40 steps) | 0 failed"; bun prints " 40 pass" / " 0 fail"
  const d = clean.match(
    /(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?/,
  );
  if (d) [p, f] = [Number(d[2] ?? d[1]), Number(d[4] ?? d[3])];
  const bp = clean.match(/^\s*(\d+) pass\s*$/m), bf = clean.match(/^\s*(\d+) fail\s*$/m);
  if (bp) [p, f] = [Number(bp[1]), Number(bf?.[1] ?? 0)];
  const counted = Boolean(d || bp);
  // A runner that exits non-zero, or prints no summary, or ran nothing, fails the run.
  if (status !== 0 || !counted || p === 0) bad = true;
  if (status !== 0 && f === 0) f = 1;
  if (!counted && status === 0) f += 1;
  passed += p;
  failed += f;
  summaries.push(`${r.name}: ${p} passed, ${f} failed (exit ${status})`);
}
console.log("\n===== summary");
for (const s of summaries) console.log(s);
console.log(`total: ${passed} passed, ${failed} failed`);
process.exit(bad || failed ? 1 : 0);
