// Runs every test file under `deno test` and `bun test`, one runner process per
// file and runtime, a few at a time (longest first, by the durations measured in
// scripts/test_durations.json), and prints per runtime and in total
// `N passed, N failed, N skipped`, each skip with its reason, and the slowest files.
// Under CI=true a skip whose reason is not on tests/support/allowed_skips.json
// fails the run (docs/testing.md).
//
//   node scripts/test.mjs [--jobs N] [--runtime deno|bun] [--verbose] [files...]
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { countBun, countDeno, skipLines } from "./test_counts.mjs";

const root = new URL("..", import.meta.url).pathname;
const bin = (name) => {
  const local = join(root, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};
const readJson = (path) => JSON.parse(readFileSync(join(root, path), "utf8"));

const opts = { jobs: 0, runtimes: ["deno", "bun"], verbose: false, files: [] };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === "--jobs") opts.jobs = Number(process.argv[++i]);
  else if (a === "--runtime") opts.runtimes = [process.argv[++i]];
  else if (a === "--verbose") opts.verbose = true;
  else opts.files.push(a.replace(/^\.\//, ""));
}
// Most of a test's time is spent waiting for child servers, upgrades and drains, so
// a few runner processes share 2 cores safely (docs/testing.md has the measurements).
const jobs = opts.jobs || Number(process.env.INSTAR_TEST_JOBS) || Math.max(3, cpus().length + 1);
const files = (opts.files.length ? opts.files : ["tests/"]).flatMap((f) =>
  f.endsWith("/")
    ? readdirSync(join(root, f)).filter((n) => n.endsWith("_test.ts")).sort().map((n) => f + n)
    : [f]
);
const durations = readJson("scripts/test_durations.json");
const allowed = readJson("tests/support/allowed_skips.json").skips;
const ci = process.env.CI === "true";
const outDir = mkdtempSync(join(tmpdir(), "instar-test-"));

const queue = opts.runtimes.flatMap((runtime) => files.map((file) => ({ runtime, file })))
  .map((j) => ({ ...j, expect: durations[j.runtime]?.[j.file] ?? 60 }))
  .sort((a, b) => b.expect - a.expect);

/** Runs one file under one runtime; resolves with its output, exit status and wall time. */
function run(job) {
  const base = `${job.runtime}-${job.file.replace(/\W+/g, "_")}`;
  const junit = join(outDir, `${base}.xml`);
  const [cmd, args] = job.runtime === "deno"
    ? [bin("deno"), ["test", "-A", "--no-check", `--junit-path=${junit}`, job.file]]
    : [bin("bun"), ["test", "--timeout", "300000", job.file]];
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => out += d);
    child.on("close", (status, signal) => {
      writeFileSync(join(outDir, `${base}.log`), out);
      resolve({
        ...job,
        out: out.replaceAll("\x1b", "").replace(/\[[0-9;]*m/g, ""),
        status: status ?? signal,
        seconds: (performance.now() - t0) / 1000,
        junit,
        log: join(outDir, `${base}.log`),
      });
    });
  });
}

/** Counts one finished job and checks its skip lines against the runner's own count. */
function judge(r) {
  const c = r.runtime === "deno" ? countDeno(r.junit) : countBun(r.out);
  const skips = skipLines(r.out, r.runtime);
  const problems = [];
  if (!c) problems.push("the runner printed no counts");
  if (r.status !== 0) problems.push(`exit ${r.status}`);
  const counts = c ?? { passed: 0, failed: 0, skipped: 0 };
  if (r.status !== 0 && counts.failed === 0) counts.failed = 1;
  if (!c && r.status === 0) counts.failed += 1;
  if (counts.skipped !== skips.length) {
    problems.push(
      `${counts.skipped} skipped by the runner but ${skips.length} skip line(s) from skipIf(): ` +
        "every skip must go through skipIf() (tests/support/helpers.ts)",
    );
    counts.failed += 1;
  }
  // Under CI a skip that is not allowed counts as a failure, so the closing line says so too.
  for (const s of skips) {
    s.allowed = allowed.some((a) => a.runtime === s.runtime && new RegExp(a.reason).test(s.text));
    if (ci && !s.allowed) {
      problems.push(`skipped under CI=true, not on tests/support/allowed_skips.json: ${s.text}`);
      counts.failed += 1;
    }
  }
  return { ...r, ...counts, skips, problems };
}

const results = [];
const t0 = performance.now();
console.log(
  `running ${queue.length} test files (${
    opts.runtimes.join(", ")
  }) ${jobs} at a time; logs in ${outDir}`,
);
async function worker() {
  for (let job = queue.shift(); job; job = queue.shift()) {
    const r = judge(await run(job));
    results.push(r);
    const line =
      `${r.runtime} ${r.file}: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped ` +
      `(${r.seconds.toFixed(1)} s)`;
    if (opts.verbose || r.problems.length) {
      console.log(`\n===== ${line}\n${r.out}`);
      for (const p of r.problems) console.log(`!!! ${r.runtime} ${r.file}: ${p}`);
    } else console.log(line);
  }
}
await Promise.all(Array.from({ length: jobs }, worker));
const wall = (performance.now() - t0) / 1000;

const sum = (rs, k) => rs.reduce((n, r) => n + r[k], 0);
const line = (rs) =>
  `${sum(rs, "passed")} passed, ${sum(rs, "failed")} failed, ${sum(rs, "skipped")} skipped`;
const bad = results.some((r) => r.problems.length > 0);

// The measured durations, in scripts/test_durations.json's shape, to update it from.
const measured = Object.fromEntries(opts.runtimes.map((rt) => [rt, {}]));
for (const r of [...results].sort((a, b) => b.seconds - a.seconds)) {
  measured[r.runtime][r.file] = Math.round(r.seconds);
}
writeFileSync(join(outDir, "durations.json"), JSON.stringify(measured, null, 2) + "\n");

console.log("\n===== slowest files");
for (const r of [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 10)) {
  console.log(`${r.seconds.toFixed(1).padStart(6)} s  ${r.runtime} ${r.file}`);
}

console.log("\n===== skipped");
const skipped = results.flatMap((r) => r.skips.map((s) => ({ ...s, file: r.file })));
for (const s of skipped) {
  const mark = s.allowed ? " [allowed]" : ci ? " [NOT ALLOWED under CI: counted as failed]" : "";
  console.log(`${s.runtime} ${s.file}: ${s.text}${mark}`);
}
if (skipped.length === 0) console.log("(none)");

console.log("\n===== summary");
for (const rt of opts.runtimes) {
  const rs = results.filter((r) => r.runtime === rt);
  console.log(`${rt}: ${line(rs)} (${sum(rs, "seconds").toFixed(0)} s of test time)`);
}
console.log(`wall time ${wall.toFixed(0)} s with ${jobs} at a time`);
if (results.some((r) => r.problems.length)) {
  console.log("some files had problems (marked !!! above)");
}
if (ci && skipped.some((s) => !s.allowed)) {
  console.log("CI=true: a skip is not on tests/support/allowed_skips.json (docs/testing.md)");
}
console.log(`total: ${line(results)}`);
process.exit(bad || sum(results, "failed") ? 1 : 0);
