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
 * quota caps it or one of the cgroups above it (cgroup v2 `cpu.max`, v1
 * `cpu.cfs_quota_us` / `cpu.cfs_period_us`), as in a container limited to 2 CPUs on a larger
 * host or a systemd unit with `CPUQuota=`.
 */
export function usableCores() {
  const quota = cgroupQuota(read("/proc/self/cgroup") ?? "", read);
  return quota ? Math.max(1, Math.min(availableParallelism(), quota)) : availableParallelism();
}

function read(path) {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * The smallest CPU quota, in cores, of this process's cgroup and those above it, from
 * `/proc/self/cgroup`'s text (`0::/path` on v2; `N:…cpu…:/path` on v1) and `readFile(path)`
 * (undefined for a file that is not there); undefined when none sets one.
 */
export function cgroupQuota(procSelfCgroup, readFile) {
  const lines = procSelfCgroup.split("\n");
  const v1 = lines.map((l) => l.split(":")).find((f) => f[1]?.split(",").includes("cpu"));
  const v2 = lines.find((l) => l.startsWith("0::"));
  const quotas = [];
  for (const dir of ancestors(v1 ? v1.slice(2).join(":") : v2?.slice(3))) {
    if (v1) {
      const q = Number(readFile(`/sys/fs/cgroup/cpu${dir}/cpu.cfs_quota_us`));
      const p = Number(readFile(`/sys/fs/cgroup/cpu${dir}/cpu.cfs_period_us`));
      if (q > 0 && p > 0) quotas.push(q / p);
    } else {
      const [q, p] = (readFile(`/sys/fs/cgroup${dir}/cpu.max`) ?? "max").trim().split(" ");
      if (q !== "max" && Number(q) > 0 && Number(p) > 0) quotas.push(Number(q) / Number(p));
    }
  }
  return quotas.length ? Math.min(...quotas) : undefined;
}

// "/a/b" → ["/a/b", "/a", ""]: a cgroup and those above it, as paths under the mount.
function ancestors(path) {
  if (path === undefined) return [];
  const parts = path.split("/").filter(Boolean);
  return parts.map((_, i) => "/" + parts.slice(0, parts.length - i).join("/")).concat([""]);
}
