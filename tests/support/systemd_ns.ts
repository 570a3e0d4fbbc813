/**
 * A real systemd (252 on Debian 12) as PID 1 of private pid, net, mount, uts,
 * ipc and cgroup namespaces, running only a test's own units
 * (tests/support/systemd_ns.sh does the mounting): driven with
 * `nsenter -t <pid> -a systemctl …`, its network reached with
 * `nsenter -t <pid> -n …`, ended by SIGKILL to that systemd. Its cgroup
 * directory is removed afterwards. Test support, not a test file.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { after } from "node:test";
import { type CommandResult, onPath, ROOT, runCommand, sleep, startServer } from "./helpers.ts";
import { childrenOf } from "./namespace.ts";
import { alive } from "./procs.ts";
import { namespacePid } from "../../src/proc.ts";

const SCRIPT = join(ROOT, "tests", "support", "systemd_ns.sh");
/** systemd itself (Debian package systemd). */
export const SYSTEMD = "/lib/systemd/systemd";
const CGROUP_V1 = "/sys/fs/cgroup/systemd";

/** Why systemd cannot be booted in namespaces here, or `false`. */
export function noSystemdNamespace(): string | false {
  if (process.getuid?.() !== 0) return "needs root to create namespaces and mount tmpfs";
  for (const tool of ["unshare", "nsenter", "ip"]) {
    if (!onPath(tool)) return `${tool} is missing (Debian packages util-linux, iproute2)`;
  }
  if (!existsSync(SYSTEMD)) return `${SYSTEMD} is missing (Debian package systemd)`;
  if (!existsSync(CGROUP_V1)) {
    return `no name=systemd cgroup v1 hierarchy at ${CGROUP_V1}: tests/support/systemd_ns.sh ` +
      "was only measured on cgroup v1/hybrid hosts";
  }
  return false;
}

/** A booted systemd in its own namespaces. */
export interface SystemdNamespace {
  /** The host pid of that systemd (PID 1 inside). */
  pid: number;
  /** `systemctl <args>` inside; bounded to 60 s. */
  systemctl(...args: string[]): Promise<CommandResult>;
  /** `systemctl show -p …` of `unit`, as a record. */
  show(unit: string, ...props: string[]): Promise<Record<string, string>>;
  /** The journal (systemd-journald runs inside, its journal in the namespace's /run). */
  journal(): Promise<string>;
  /** `cmd` prefixed to run in the namespace's network (its 127.0.0.1). */
  inNet(cmd: string[]): string[];
  /** A file of the namespace's own view (e.g. its /run), or "" when unreadable. */
  read(path: string): string;
  /** SIGKILL to systemd, then the cgroup directory is removed. Idempotent. */
  kill(): Promise<void>;
}

const booted: SystemdNamespace[] = [];
after(async () => {
  for (const s of booted) await s.kill();
});

/**
 * Writes `units` (file name -> text) to `dir`, boots systemd with
 * `--unit=<target>` and resolves once `systemctl` answers inside.
 */
export async function bootSystemd(
  dir: string,
  units: Record<string, string>,
  target: string,
): Promise<SystemdNamespace> {
  for (const [name, text] of Object.entries(units)) writeFileSync(join(dir, name), text);
  const cg = `instar-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const outer = startServer([SCRIPT, "outer", dir, target, cg, ROOT]);
  const pid = await systemdPid(outer.pid, () => outer.lines.join("\n"));
  let killed = false;
  const ns: SystemdNamespace = {
    pid,
    systemctl: (...args) =>
      runCommand(["nsenter", "-t", String(pid), "-a", "systemctl", "--no-pager", ...args], {
        timeoutMs: 60_000,
      }),
    async show(unit, ...props) {
      const r = await ns.systemctl("show", ...props.flatMap((p) => ["-p", p]), unit);
      return Object.fromEntries(
        r.stdout.trim().split("\n").map((l) => {
          const i = l.indexOf("=");
          return [l.slice(0, i), l.slice(i + 1)];
        }),
      );
    },
    journal: async () =>
      (await runCommand(["nsenter", "-t", String(pid), "-a", "journalctl", "--no-pager"], {
        timeoutMs: 30_000,
      })).stdout,
    inNet: (cmd) => ["nsenter", "-t", String(pid), "-n", "--", ...cmd],
    read(path) {
      try {
        return readFileSync(`/proc/${pid}/root${path}`, "utf8");
      } catch {
        return "";
      }
    },
    async kill() {
      if (killed) return;
      killed = true;
      try {
        process.kill(pid, "SIGKILL");
      } catch { /* gone */ }
      const end = Date.now() + 10_000;
      while ((alive(pid) || alive(outer.pid)) && Date.now() < end) await sleep(20);
      await removeCgroup(join(CGROUP_V1, cg));
    },
  };
  booted.push(ns);
  await answering(ns);
  // The journal (its unit has no default dependencies: it starts nothing else).
  const journald = await ns.systemctl("start", "systemd-journald.service");
  if (journald.code !== 0) throw new Error(`systemd-journald did not start: ${journald.stderr}`);
  return ns;
}

// The child of unshare that is PID 1 of the new pid namespace: systemd once it exec'd.
async function systemdPid(outerPid: number, log: () => string): Promise<number> {
  const end = Date.now() + 15_000;
  for (;;) {
    const pid = childrenOf(outerPid).find((p) => namespacePid(p) === 1);
    if (pid && readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "systemd") return pid;
    if (Date.now() > end) throw new Error(`systemd did not start in its namespace:\n${log()}`);
    await sleep(20);
  }
}

// systemd's private bus answers once the manager is up.
async function answering(ns: SystemdNamespace): Promise<void> {
  const end = Date.now() + 30_000;
  for (;;) {
    const r = await ns.systemctl("show", "-p", "Version");
    if (r.code === 0 && /^Version=/.test(r.stdout)) return;
    if (Date.now() > end) throw new Error(`systemctl never answered: ${r.stdout} ${r.stderr}`);
    await sleep(100);
  }
}

// Depth first: a cgroup directory can only be removed once it has no child cgroup and no task.
async function removeCgroup(dir: string): Promise<void> {
  let children: string[];
  try {
    children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return; // already gone
  }
  for (const c of children) await removeCgroup(join(dir, c));
  for (let i = 0;; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      // EBUSY while the killed tasks are still leaving it
      if (i >= 100) throw new Error(`could not remove cgroup ${dir}: ${(err as Error).message}`);
      await sleep(20);
    }
  }
}
