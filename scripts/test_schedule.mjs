// Which test file scripts/test.mjs starts next. Files start longest first (LPT, by the wall
// time in scripts/test_durations.json), but only while the CPU the running files use stays
// within a budget of cores: a file that mostly waits for child processes (serve_test: ~0.15
// of a core) can run beside two load tests, while a third load test would only stretch all
// three (their loads then serve requests for longer, so the CPU grows too). docs/testing.md,
// "Scheduling by CPU", has the measurements.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** A file's expectation when it has never been measured: long, and a whole core. */
const UNKNOWN = { wall: 60, cpu: 60 };

/**
 * How many later files may start before the head of the queue, while it does not fit: enough
 * to fill the cores with files that mostly wait, few enough that the long, heavy files still
 * start early instead of piling up at the end.
 */
export const PASS_LIMIT = 3;

/**
 * What `durations` (scripts/test_durations.json's shape: runtime → file → `{ wall, cpu,
 * quiet? }`, seconds; `cpu` counts every process the file started) expects of one file: its
 * wall time and its load, the cores it uses on average (cpu / wall, at most 2). A `quiet` file
 * bounds times tightly under load (control_test's stall and fd peaks): it counts as at least a
 * whole core, so that at most a core's worth of other files runs beside it.
 */
export function expectation(durations, runtime, file) {
  const d = durations[runtime]?.[file] ?? UNKNOWN;
  const wall = Math.max(1, d.wall ?? UNKNOWN.wall);
  const load = d.cpu === undefined ? 1 : Math.min(2, d.cpu / wall);
  return { wall, load: d.quiet ? Math.max(1, load) : load };
}

/**
 * Takes the job to start now out of `queue` (longest first), or returns undefined to wait for
 * a running one to end: the first that keeps the running jobs' summed load within `budget`
 * cores, with fewer than `maxJobs` running; a later job only while the head has been passed
 * over fewer than {@link PASS_LIMIT} times. With nothing running, the head starts whatever
 * its load.
 */
export function takeNext(queue, running, { budget, maxJobs }) {
  if (queue.length === 0 || running.length >= maxJobs) return undefined;
  const used = running.reduce((n, j) => n + j.load, 0);
  const fits = (j) => running.length === 0 || used + j.load <= budget + 1e-9;
  const head = queue[0];
  const i = fits(head) ? 0 : (head.passedOver ?? 0) < PASS_LIMIT ? queue.findIndex(fits) : -1;
  if (i < 0) return undefined;
  if (i > 0) head.passedOver = (head.passedOver ?? 0) + 1;
  return queue.splice(i, 1)[0];
}

/**
 * The cores this process may use: the CPUs it may run on (affinity), fewer when a cgroup
 * quota caps it (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), as in a container limited to
 * 2 CPUs on a larger host.
 */
export function usableCores() {
  const quota = cgroupQuota();
  return quota ? Math.max(1, Math.min(availableParallelism(), quota)) : availableParallelism();
}

/** The CPU quota of this process's cgroup in cores, or undefined when none is set or readable. */
function cgroupQuota() {
  const read = (path) => {
    try {
      return readFileSync(path, "utf8").trim();
    } catch {
      return undefined;
    }
  };
  const v2 = read("/sys/fs/cgroup/cpu.max")?.split(" ");
  if (v2 && v2[0] !== "max") return Number(v2[0]) / Number(v2[1]) || undefined;
  const q = Number(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"));
  const p = Number(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
  return q > 0 && p > 0 ? q / p : undefined;
}
