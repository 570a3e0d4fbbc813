// Which test file scripts/test.mjs starts next. Files start longest first (LPT, by the wall
// time in scripts/test_durations.json), but only while the CPU the running files use stays
// within a budget of cores: a file that mostly waits for child processes (serve_test: ~0.15
// of a core) can run beside two load tests, while a third load test would only stretch all
// three (their loads then serve requests for longer, so the CPU grows too). docs/testing.md,
// "Scheduling by CPU", has the measurements.

/** A file's expectation when it has never been measured: long, and a whole core. */
const UNKNOWN = { wall: 60, cpu: 60 };

/**
 * What `durations` (scripts/test_durations.json's shape: runtime → file → `{ wall, cpu }`,
 * seconds; `cpu` counts every process the file started) expects of one file: its wall time
 * and its load, the cores it uses on average (cpu / wall).
 */
export function expectation(durations, runtime, file) {
  const d = durations[runtime]?.[file] ?? UNKNOWN;
  const wall = Math.max(1, d.wall ?? UNKNOWN.wall);
  const load = d.cpu === undefined ? 1 : Math.min(2, d.cpu / wall);
  return { wall, load };
}

/**
 * The index in `queue` (longest first) of the job to start now, or -1 to wait for a running
 * one to end: the first that keeps the running jobs' summed load within `budget` cores, with
 * fewer than `maxJobs` running. With nothing running, the first job starts whatever its load.
 */
export function pickNext(queue, running, { budget, maxJobs }) {
  if (queue.length === 0 || running.length >= maxJobs) return -1;
  if (running.length === 0) return 0;
  const used = running.reduce((n, j) => n + j.load, 0);
  return queue.findIndex((j) => used + j.load <= budget + 1e-9);
}
