// `node scripts/test.mjs --measure-cpu`: each runner in a cgroup of its own, so that the CPU
// counted is every process the file started, the generations that outlive their parent
// included (a process's rusage loses them once they are reparented). Needs root and a
// cgroup v1 `cpuacct` hierarchy or cgroup v2. For refreshing scripts/test_durations.json's
// `cpu` figures, which the scheduler reads (scripts/test_schedule.mjs); not for CI.
import { existsSync, mkdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";

const V1 = "/sys/fs/cgroup/cpuacct";
const V2 = "/sys/fs/cgroup";

/** The cgroup root to measure under, or an Error saying why there is none. */
export function cgroupRoot() {
  if (process.getuid?.() !== 0) return new Error("--measure-cpu needs root (it makes cgroups)");
  if (existsSync(join(V1, "cpuacct.usage"))) return { dir: join(V1, "instar-test"), v2: false };
  if (existsSync(join(V2, "cgroup.controllers"))) return { dir: join(V2, "instar-test"), v2: true };
  return new Error(`--measure-cpu: neither ${V1} (cgroup v1 cpuacct) nor cgroup v2 at ${V2}`);
}

/** A fresh cgroup for one runner: `wrap(cmd, args)` runs a command inside it. */
export function makeCgroup(root, name) {
  const dir = join(root.dir, name);
  mkdirSync(dir, { recursive: true });
  const procs = join(dir, "cgroup.procs");
  return {
    dir,
    // The shell joins the cgroup, then becomes the runner: everything it starts is counted.
    wrap: (cmd, args) => ["sh", ["-c", 'echo $$ > "$0" && exec "$@"', procs, cmd, ...args]],
    /** CPU seconds used by everything that ran in it. */
    seconds() {
      if (!root.v2) return Number(readFileSync(join(dir, "cpuacct.usage"), "utf8")) / 1e9;
      const m = /^usage_usec (\d+)$/m.exec(readFileSync(join(dir, "cpu.stat"), "utf8"));
      return m ? Number(m[1]) / 1e6 : NaN;
    },
    /** Removes it; false while a process still runs in it. */
    remove() {
      try {
        rmdirSync(dir);
        return true;
      } catch {
        return false;
      }
    },
  };
}

/** Removes the runners' parent cgroup once it is empty (it stays while one still holds a process). */
export function removeRoot(root) {
  try {
    rmdirSync(root.dir);
  } catch {
    // Not empty: a runner's cgroup is still there, and said so.
  }
}
