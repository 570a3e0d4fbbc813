/**
 * Programs run as PID 1 of a new pid namespace (`unshare --pid --fork
 * --mount-proc`), the way a container runtime starts its entrypoint. Test
 * support, not a test file.
 *
 * Log lines of a namespaced server say `pid=1`: those pids are the
 * namespace's, not this machine's, so the server is never handed to
 * `cleanupAfterTests().servers` (whose killAll would signal this machine's
 * PID 1). It is ended by SIGKILL to the host pid of the namespace's init,
 * which makes the kernel kill everything in the namespace.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { after } from "node:test";
import {
  bunBin,
  type CommandResult,
  denoBin,
  onPath,
  ROOT,
  RUNTIME,
  type ServerProcess,
  showResult,
  sleep,
  startServer,
} from "./helpers.ts";
import { namespacePid } from "../../src/proc.ts";

/** Why namespaced tests cannot run here, or `false`. */
export function noPidNamespaces(): string | false {
  if (process.getuid?.() !== 0) return "needs root to create pid namespaces (unshare --pid)";
  if (!onPath("unshare")) return "unshare is missing (Debian package util-linux)";
  return false;
}

/** A program running as PID 1 of its own pid namespace. */
export interface Namespaced {
  /** The `unshare` process (its stdout/stderr are the program's). */
  server: ServerProcess;
  /** The host pid of the namespace's PID 1 (the program). */
  initPid: number;
  /** SIGKILL to the namespace's init: everything in the namespace ends. */
  kill(): void;
}

/** The children of `pid` (from /proc/<pid>/task/<pid>/children). */
export function childrenOf(pid: number): number[] {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    return text ? text.split(/\s+/).map(Number) : [];
  } catch {
    return [];
  }
}

const CLIENT = join(ROOT, "tests", "support", "ns_client.ts");
const started: Namespaced[] = [];
after(() => {
  for (const n of started) n.kill();
});

/**
 * Runs `cmd` as PID 1 of a new pid namespace (and a private mount namespace
 * with its own /proc; `extra` adds unshare flags). Killed after the test file
 * ends, whatever happens.
 */
export async function startInPidNamespace(
  cmd: string[],
  env: Record<string, string> = {},
  extra: string[] = [],
): Promise<Namespaced> {
  // --kill-child: if unshare itself dies, the namespace goes with it.
  const server = startServer(
    ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", ...extra, "--", ...cmd],
    env,
  );
  const deadline = Date.now() + 10_000;
  let initPid = 0;
  while (!initPid) {
    initPid = childrenOf(server.pid).find((p) => namespacePid(p) === 1) ?? 0;
    if (!initPid && Date.now() > deadline) {
      throw new Error(`no PID 1 under unshare (pid ${server.pid}):\n${server.lines.join("\n")}`);
    }
    if (!initPid) await sleep(10);
  }
  const n: Namespaced = {
    server,
    initPid,
    kill() {
      for (const pid of [initPid, server.pid]) {
        try {
          process.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    },
  };
  started.push(n);
  return n;
}

/**
 * tests/support/ns_client.ts under this runtime, in the network namespace of
 * process `pid` (`nsenter -t <pid> -n`, which execs it: `pid` of the result is
 * the client's). Killed after 240 s at the latest.
 */
export function netClient(
  pid: number,
  args: string[],
): { pid: number; result: Promise<CommandResult> } {
  const runtime = RUNTIME === "deno" ? [denoBin(), "run", "-A", "--no-check"] : [bunBin()];
  const cmd = ["nsenter", "-t", String(pid), "-n", "--", ...runtime, CLIENT, ...args];
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
  const result = new Promise<CommandResult>((resolve) =>
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    })
  );
  return { pid: child.pid!, result };
}

/** The last line of a client's stdout as JSON; throws with its output when there is none. */
export function clientJson<T>(r: CommandResult): T {
  try {
    return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "");
  } catch {
    throw new Error(`no JSON from the client: ${showResult(r)}`);
  }
}

/** GET `path` on 127.0.0.1:`port` in the network namespace of `pid`: `{ status, body }` or `{ error }`. */
export async function netGet(
  pid: number,
  port: number,
  path: string,
  timeoutMs = 5_000,
): Promise<{ status?: number; body?: string; error?: string }> {
  const r = await netClient(pid, ["get", String(port), path, String(timeoutMs)]).result;
  return clientJson(r);
}
