// `node scripts/test.mjs --measure-cpu`: each runner in a cgroup of its own, so that the CPU
// counted is every process the file started, the generations that outlive their parent
// included (a process's rusage loses them once they are reparented). Needs root and a
// cgroup v1 `cpuacct` hierarchy or cgroup v2. For refreshing scripts/test_durations.json's
// `cpu` figures, which the scheduler reads (scripts/test_schedule.mjs); not for CI.
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

const V1 = "/sys/fs/cgroup/cpuacct";
const V2 = "/sys/fs/cgroup";

/**
 * This run's own parent cgroup (named after its pid, so that neither an earlier run's leftovers
 * nor a concurrent run are counted), made and tried once; or an Error saying why there is none.
 */
export function cgroupRoot() {
  if (process.getuid?.() !== 0) return new Error("--measure-cpu needs root (it makes cgroups)");
  const name = `instar-test-${process.pid}`;
  const root = existsSync(join(V1, "cpuacct.usage"))
    ? { dir: join(V1, name), v2: false }
    : existsSync(join(V2, "cgroup.controllers"))
    ? { dir: join(V2, name), v2: true }
    : null;
  if (!root) {
    return new Error(`--measure-cpu: neither ${V1} (cgroup v1 cpuacct) nor cgroup v2 at ${V2}`);
  }
  try {
    mkdirSync(root.dir);
  } catch (err) {
    return new Error(`--measure-cpu: cannot make ${root.dir}: ${err.message}`);
  }
  try {
    const probe = makeCgroup(root, "probe");
    const [cmd, args] = probe.wrap("true", []);
    const r = spawnSync(cmd, args, { encoding: "utf8" });
    probe.remove();
    if (r.status !== 0) throw new Error(`a process cannot join it: ${r.stderr?.trim()}`);
    return root;
  } catch (err) {
    removeRoot(root);
    return new Error(`--measure-cpu: cannot use a cgroup at ${root.dir}: ${err.message}`);
  }
}

/** A fresh cgroup for one runner under `root`: `wrap(cmd, args)` runs a command inside it. */
export function makeCgroup(root, name) {
  const dir = join(root.dir, name);
  mkdirSync(dir); // never an existing one: its counter would hold someone else's CPU
  const procs = join(dir, "cgroup.procs");
  // v2 (5.14+) kills the whole subtree at once; v1 one listed process at a time.
  const killAll = () => {
    if (root.v2 && existsSync(join(dir, "cgroup.kill"))) {
      return writeFileSync(join(dir, "cgroup.kill"), "1");
    }
    for (const pid of readFileSync(procs, "utf8").split("\n").filter(Boolean)) {
      process.kill(Number(pid), "SIGKILL");
    }
  };
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
    remove: () => tryRmdir(dir),
    /** Kills whatever still runs in it (a test's leftover), then removes it. */
    kill() {
      for (let i = 0; i < 50 && !tryRmdir(dir); i++) {
        try {
          killAll();
        } catch {
          // Gone already, or the cgroup with it.
        }
        spawnSync("sleep", ["0.1"]);
      }
      return !existsSync(dir);
    },
  };
}

/** Removes the run's parent cgroup and any leaf left in it (empty ones only). */
export function removeRoot(root) {
  if (!existsSync(root.dir)) return;
  for (const e of readdirSync(root.dir, { withFileTypes: true })) {
    if (e.isDirectory()) tryRmdir(join(root.dir, e.name));
  }
  tryRmdir(root.dir);
}

function tryRmdir(dir) {
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}
