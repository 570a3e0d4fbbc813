// Runs every test file under `deno test` and `bun test`, one runner process per
// file and runtime, several at a time (longest first by the durations measured in
// scripts/test_durations.json, as many as the CPU they use leaves room for:
// scripts/test_schedule.mjs), and prints per runtime and in total
// `N passed, N failed, N skipped`, each skip with its reason, and the slowest files.
// Under CI=true a skip whose reason is not on tests/support/allowed_skips.json
// fails the run (docs/testing.md).
//
//   node scripts/test.mjs [--jobs N] [--cpus N] [--file-timeout S] [--measure-cpu]
//                         [--runtime deno|bun] [--verbose] [files...]
//
// --jobs: at most N files at once (default 6); --cpus: the cores their summed load may
// use (default: the cores this process may use, affinity and cgroup quota counted, or
// INSTAR_TEST_CPUS); --file-timeout: a file still running after S seconds (default 600, or
// INSTAR_TEST_FILE_TIMEOUT) fails, its runner's process group killed; --measure-cpu: count
// each file's CPU in a cgroup (root only), for scripts/test_durations.json. Each run writes
// durations.json and timeline.json to its log directory.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cgroupRoot, makeCgroup, removeRoot } from "./test_cgroup.mjs";
import { countBun, countDeno, skipLines } from "./test_counts.mjs";
import { groupMembers, killGroup } from "./test_group.mjs";
import { expectation, takeNext, usableCores } from "./test_schedule.mjs";

const root = new URL("..", import.meta.url).pathname;
const bin = (name) => {
  const local = join(root, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};
const readJson = (path) => JSON.parse(readFileSync(join(root, path), "utf8"));

const opts = {
  jobs: undefined,
  cpus: undefined,
  fileTimeout: undefined,
  measureCpu: false,
  runtimes: ["deno", "bun"],
  verbose: false,
  files: [],
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === "--jobs") opts.jobs = process.argv[++i];
  else if (a === "--cpus") opts.cpus = process.argv[++i];
  else if (a === "--file-timeout") opts.fileTimeout = process.argv[++i];
  else if (a === "--measure-cpu") opts.measureCpu = true;
  else if (a === "--runtime") opts.runtimes = [process.argv[++i]];
  else if (a === "--verbose") opts.verbose = true;
  else opts.files.push(a.replace(/^\.\//, ""));
}
// Files that mostly wait for child servers, upgrades and drains run beside the ones that
// compute, within the cores' budget (docs/testing.md has the measurements).
/** A count given as `what`, or `fallback` when none was given; anything but a number > 0 throws. */
function count(what, given, fallback) {
  if (given === undefined || given === "") return fallback;
  const n = Number(given);
  if (!(n > 0)) throw new Error(`${what} ${given}: give a number above 0`);
  return n;
}
const jobs = count("--jobs", opts.jobs ?? process.env.INSTAR_TEST_JOBS, 6);
const budget = count("--cpus", opts.cpus ?? process.env.INSTAR_TEST_CPUS, usableCores());
// About six times the slowest file (~100 s): only a file that hangs meets it.
const fileTimeout = count(
  "--file-timeout",
  opts.fileTimeout ?? process.env.INSTAR_TEST_FILE_TIMEOUT,
  600,
);
const TIMED_OUT = `no end after ${fileTimeout} s: its process group was killed`;
const cgroups = opts.measureCpu ? cgroupRoot() : null;
if (cgroups instanceof Error) throw cgroups;
const files = (opts.files.length ? opts.files : ["tests/"]).flatMap((f) =>
  f.endsWith("/")
    ? readdirSync(join(root, f)).filter((n) => n.endsWith("_test.ts")).sort().map((n) => f + n)
    : [f]
);
const durations = readJson("scripts/test_durations.json");
const allowed = readJson("tests/support/allowed_skips.json").skips;
const ci = process.env.CI === "true";
const outDir = mkdtempSync(join(tmpdir(), "instar-test-"));
const suiteStart = performance.now();

const queue = opts.runtimes.flatMap((runtime) => files.map((file) => ({ runtime, file })))
  .map((j) => ({ ...j, ...expectation(durations, j.runtime, j.file) }))
  .sort((a, b) => b.wall - a.wall);

/** Runs one file under one runtime; resolves with its output, exit status and wall time. */
function run(job) {
  const base = `${job.runtime}-${job.file.replace(/\W+/g, "_")}`;
  const junit = join(outDir, `${base}.xml`);
  const cg = cgroups && makeCgroup(cgroups, base);
  const [cmd, args] = (cg ? cg.wrap : (c, a) => [c, a])(
    ...(job.runtime === "deno"
      ? [bin("deno"), ["test", "-A", "--no-check", `--junit-path=${junit}`, job.file]]
      : [bin("bun"), ["test", "--timeout", "300000", job.file]]),
  );
  const t0 = performance.now();
  job.started = (t0 - suiteStart) / 1000;
  return new Promise((resolve, reject) => {
    // The leader of a session of its own: what its tests leave behind can be found and ended.
    const child = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const seen = watchGroup(child);
    let out = "";
    // A runner that cannot start ('close' still follows) fails its file, not the whole run.
    child.on("error", (err) => out += `\ncould not run ${cmd}: ${err.message}\n`);
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => out += d);
    // After the group is dealt with: its leftovers are part of the result.
    child.on("close", (status, signal) =>
      seen.settled.then(() => {
        // A throw here (the log, the cgroup's counter) fails this file through launch()'s catch.
        try {
          writeFileSync(join(outDir, `${base}.log`), out + notes(seen));
          const cpu = cg?.seconds();
          if (cg && !cg.remove()) leftCgroups.push(cg);
          resolve({
            cpu,
            ...job,
            out: out.replaceAll("\x1b", "").replace(/\[[0-9;]*m/g, ""),
            status: status ?? signal,
            timedOut: seen.timedOut,
            leftovers: seen.leftovers,
            seconds: (performance.now() - t0) / 1000,
            junit,
            log: join(outDir, `${base}.log`),
          });
        } catch (err) {
          reject(err);
        }
      }));
  });
}

/**
 * Watches a runner that leads a process group (and session) of its own: `--file-timeout` after
 * its start the whole group is killed; once it has exited, whatever is left in the group (its
 * tests started it and did not stop it) is named and killed; and its output is closed after a
 * grace in case something that left the group (setsid) still holds it, or 'close' never comes.
 * The returned record is filled in by then.
 */
function watchGroup(child) {
  const seen = { timedOut: false, leftovers: [], settled: Promise.resolve() };
  const group = child.pid;
  if (!group) return seen; // it never started: 'error'
  runningGroups.add(group);
  const timer = setTimeout(() => {
    seen.timedOut = true;
    killGroup(group);
  }, Math.min(fileTimeout * 1000, 2 ** 31 - 1)); // setTimeout's longest delay
  let settle;
  seen.settled = new Promise((resolve) => (settle = resolve));
  child.on("exit", async () => {
    clearTimeout(timer);
    if (!seen.timedOut) seen.leftovers = await stillThere(group);
    killGroup(group); // also where there is no /proc to list them
    runningGroups.delete(group);
    setTimeout(() => (child.stdout.destroy(), child.stderr.destroy()), OUTPUT_GRACE_MS).unref();
    settle();
  });
  return seen;
}

/**
 * The members of `group` still there a moment after its runner exited: a process its tests
 * killed as they ended may not have died yet on busy cores, and is not a leftover.
 */
async function stillThere(group) {
  for (let waited = 0;; waited += 50) {
    const members = groupMembers(group);
    if (members.length === 0 || waited >= SETTLE_MS) return members;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What scripts/test.mjs did to a runner's process group, for the end of its log. */
function notes({ timedOut, leftovers }) {
  const lines = [];
  if (timedOut) lines.push(TIMED_OUT);
  if (leftovers.length) {
    lines.push(`left running after its runner exited, killed: ${named(leftovers)}`);
  }
  return lines.map((l) => `\n!!! scripts/test.mjs: ${l}`).join("") + (lines.length ? "\n" : "");
}

const named = (procs) => procs.map((p) => `${p.pid} (${p.name})`).join(", ");

/** Counts one finished job and checks its skip lines against the runner's own count. */
function judge(r) {
  const c = r.runtime === "deno" ? countDeno(r.junit) : countBun(r.out);
  const skips = skipLines(r.out, r.runtime);
  const problems = [];
  if (!c) problems.push("the runner printed no counts");
  if (r.timedOut) problems.push(TIMED_OUT);
  else if (r.status !== 0) problems.push(`exit ${r.status}`);
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

/** Prints one finished file's line, and its whole output when asked or when it had problems. */
function report(r) {
  const line =
    `${r.runtime} ${r.file}: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped ` +
    `(${r.seconds.toFixed(1)} s${r.cpu === undefined ? "" : `, ${r.cpu.toFixed(1)} CPU s`})`;
  if (opts.verbose || r.problems.length) {
    console.log(`\n===== ${line}\n${r.out}`);
    for (const p of r.problems) console.log(`!!! ${r.runtime} ${r.file}: ${p}`);
  } else console.log(line);
  // Not a failure (the tests passed), but a cleanup to mend: named every time.
  if (r.leftovers?.length) {
    console.log(`note: ${r.runtime} ${r.file} left running (killed): ${named(r.leftovers)}`);
  }
}

const results = [];
const leftCgroups = [];
// Once a runner has exited, how long its output may stay open before it is closed.
const OUTPUT_GRACE_MS = 5_000;
// How long a runner's group may take to empty by itself once the runner has exited.
const SETTLE_MS = 500;
const runningGroups = new Set();
// The runners lead sessions of their own, so neither a Ctrl-C at the terminal nor its closing
// reaches them: whichever way this process ends, it ends them first.
const killRunning = () => runningGroups.forEach(killGroup);
process.on("exit", killRunning);
for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]]) {
  process.on(sig, () => process.exit(code));
}
const t0 = performance.now();
console.log(
  `running ${queue.length} test files (${opts.runtimes.join(", ")}), up to ${jobs} at a time ` +
    `within ${budget} cores; logs in ${outDir}`,
);
await new Promise((done) => {
  const running = new Set();
  const finish = (job, r) => {
    running.delete(job);
    results.push(r);
    report(r);
    if (queue.length === 0 && running.size === 0) done();
    else launch();
  };
  const launch = () => {
    for (let job; (job = takeNext(queue, [...running], { budget, maxJobs: jobs }));) {
      running.add(job);
      // A throw in the runner itself (not in a test) still ends as this file's failure.
      Promise.resolve(job).then(run).then(judge).catch((err) => ({
        ...job,
        passed: 0,
        failed: 1,
        skipped: 0,
        skips: [],
        started: job.started ?? (performance.now() - suiteStart) / 1000,
        seconds: NaN, // not a measurement: left out of durations.json
        out: String(err?.stack ?? err),
        problems: [`scripts/test.mjs could not run it: ${err?.message ?? err}`],
      })).then((r) => finish(job, r));
    }
  };
  if (queue.length === 0) done();
  else launch();
});
const wall = (performance.now() - t0) / 1000;
// A file's leftover processes would be counted by nobody and run on: killed here.
for (const cg of leftCgroups) {
  console.log(`killing what a file left running in ${cg.dir}`);
  if (!cg.kill()) console.log(`could not empty ${cg.dir}`);
}
if (cgroups) removeRoot(cgroups);

const sum = (rs, k) => rs.reduce((n, r) => n + (Number.isFinite(r[k]) ? r[k] : 0), 0);
const line = (rs) =>
  `${sum(rs, "passed")} passed, ${sum(rs, "failed")} failed, ${sum(rs, "skipped")} skipped`;
const bad = results.some((r) => r.problems.length > 0);

// The measured durations, in scripts/test_durations.json's shape, to update it from.
const measured = Object.fromEntries(opts.runtimes.map((rt) => [rt, {}]));
for (const r of [...results].sort((a, b) => b.seconds - a.seconds)) {
  if (!Number.isFinite(r.seconds) || r.timedOut) continue; // not how long the file takes
  const cpu = r.cpu === undefined ? {} : { cpu: Math.round(r.cpu * 10) / 10 };
  // `quiet` is a judgement about the file, not a measurement: carried over.
  const quiet = durations[r.runtime]?.[r.file]?.quiet ? { quiet: true } : {};
  measured[r.runtime][r.file] = { wall: Math.round(r.seconds), ...cpu, ...quiet };
}
writeFileSync(join(outDir, "durations.json"), JSON.stringify(measured, null, 2) + "\n");
// When each file started and how long it ran, with the load it was admitted with: how full the
// cores were kept (docs/testing.md, "Scheduling by CPU").
const timeline = [...results].sort((a, b) => a.started - b.started).map((r) => ({
  runtime: r.runtime,
  file: r.file,
  started: Math.round(r.started * 10) / 10,
  seconds: Math.round(r.seconds * 10) / 10,
  load: Math.round(r.load * 100) / 100,
}));
writeFileSync(join(outDir, "timeline.json"), JSON.stringify(timeline, null, 1) + "\n");

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
console.log(`wall time ${wall.toFixed(0)} s, up to ${jobs} at a time within ${budget} cores`);
if (results.some((r) => r.problems.length)) {
  console.log("some files had problems (marked !!! above)");
}
if (ci && skipped.some((s) => !s.allowed)) {
  console.log("CI=true: a skip is not on tests/support/allowed_skips.json (docs/testing.md)");
}
console.log(`total: ${line(results)}`);
process.exit(bad || sum(results, "failed") ? 1 : 0);
