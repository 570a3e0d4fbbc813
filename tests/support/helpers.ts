/**
 * Shared helpers for the black-box tests: runtime binaries, child processes,
 * sockets and clients. Test support, not tests: neither `deno test` nor
 * `bun test` runs this file (only `*_test.ts` files are tests). bench/ (e.g.
 * bench/serve_upgrade.ts) uses it too, so the dependency runs bench → tests/support,
 * never tests → bench.
 *
 * @module
 */
import process from "node:process";
import * as http from "node:http";
import net from "node:net";
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as sys from "../../src/ffi/mod.ts";
import { C } from "../../src/ffi/mod.ts";
import { encodeUnix } from "../../src/ffi/sockaddr.ts";
import { alive, bin, killAll, ROOT, runtimeCmd, sleep } from "./procs.ts";

// The process helpers (tests/support/procs.ts) the benchmarks and the demo use too.
export { alive, ROOT, runtimeCmd, sleep };

/** The pinned deno binary. */
export function denoBin(): string {
  return bin("deno");
}

/** The pinned bun binary. */
export function bunBin(): string {
  return bin("bun");
}

/** The runtime this test file runs under. */
export const RUNTIME: "deno" | "bun" = "Bun" in globalThis ? "bun" : "deno";

/**
 * node:test options that skip a test when `reason` is a string (a missing tool,
 * privilege or kernel feature) and run it when it is `false` or undefined. The
 * reason is printed as `skipped (<runtime>): <name>: <reason>`: `deno test`
 * reports the test as "ignored" and `bun test` as "(skip)", but neither shows
 * why. scripts/test.mjs counts these lines against the runners' own skip counts
 * and, under CI, checks each reason against tests/support/allowed_skips.json
 * (docs/testing.md), so every skip goes through here, one call per test. For a
 * whole describe() block use {@link describeUnless}.
 */
export function skipIf(reason: string | false | undefined, name: string): { skip: string | false } {
  if (reason) console.warn(`skipped (${RUNTIME}): ${name}: ${reason}`);
  return { skip: reason || false };
}

/**
 * `describe(name, body)`, or when `reason` is a string one skipped test in its
 * place: deno counts a skipped describe() as one ignored test while bun counts
 * nothing, so a skipped block would make the two runtimes' skip counts differ.
 */
export function describeUnless(
  reason: string | false | undefined,
  name: string,
  body: () => void,
): void {
  if (reason) test(name, skipIf(reason, name), () => {});
  else describe(name, body);
}

/** Whether `cmd` is on the PATH. */
export function onPath(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
}

// ---------------------------------------------------------------- sockets (added by transplant/serve)

/**
 * A listening TCP socket made directly with libc (close-on-exec, non-blocking,
 * SO_REUSEADDR): the kind of fd instar hands to a server. Close it with `close(fd)`.
 */
export async function rawListen(
  hostname = "127.0.0.1",
  backlog = 128,
): Promise<{ fd: number; port: number }> {
  const sys = await import("../../src/ffi/mod.ts");
  const { decode, encodeInet } = await import("../../src/ffi/sockaddr.ts");
  const family = hostname.includes(":") ? sys.C.AF_INET6 : sys.C.AF_INET;
  const fd = sys.socket(family, sys.C.SOCK_STREAM | sys.C.SOCK_CLOEXEC | sys.C.SOCK_NONBLOCK);
  sys.setsockoptInt(fd, sys.C.SOL_SOCKET, sys.C.SO_REUSEADDR, 1);
  sys.bind(fd, encodeInet(hostname, 0)!);
  sys.listenFd(fd, backlog);
  const addr = decode(sys.getsockname(fd));
  return { fd, port: addr.transport === "tcp" ? addr.port : 0 };
}

/** This process's open fds (numbers), from /proc/self/fd. */
export function openFds(): number[] {
  return readdirSync("/proc/self/fd").map(Number).sort((a, b) => a - b);
}

/** A connected client; {@link Client.request} writes and reads until the peer closes. */
export interface Client {
  /** Writes `payload` and resolves with everything received until the peer closes. */
  request(payload: string): Promise<string>;
  /** Writes `payload` without waiting for an answer. */
  send(payload: string): void;
  /** The client's own port. */
  readonly localPort: number;
  /** Closes the connection. */
  destroy(): void;
}

/**
 * Connects to `host`:`port` (127.0.0.1 by default) and resolves once the
 * kernel has completed the handshake (the connection may still sit in the
 * accept queue). Answers time out after `timeoutMs`.
 */
export async function connectClient(
  port: number,
  { host = "127.0.0.1", timeoutMs = 20_000 }: { host?: string; timeoutMs?: number } = {},
): Promise<Client> {
  const net = await import("node:net");
  const s = net.connect({ port, host });
  const chunks: Uint8Array[] = [];
  let failure: Error | undefined;
  const closed = new Promise<void>((resolve) => s.on("close", () => resolve()));
  s.on("data", (c: Uint8Array) => chunks.push(new Uint8Array(c)));
  s.on("error", (e: Error) => (failure = e));
  await new Promise<void>((resolve, reject) => {
    s.once("connect", () => resolve());
    s.once("error", reject);
  });
  return {
    async request(payload: string): Promise<string> {
      s.write(payload);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          s.destroy();
          reject(new Error(`no answer from ${host}:${port} within ${timeoutMs} ms`));
        }, timeoutMs);
      });
      try {
        await Promise.race([closed, timeout]);
      } finally {
        clearTimeout(timer);
      }
      if (failure && chunks.length === 0) throw failure;
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
      let off = 0;
      for (const c of chunks) out.set(c, (off += c.byteLength) - c.byteLength);
      return new TextDecoder().decode(out);
    },
    send: (payload: string) => void s.write(payload),
    localPort: s.localPort ?? 0,
    destroy: () => s.destroy(),
  };
}

/** Connects to `port`, writes `payload` and resolves with everything received until the peer closes. */
export async function exchange(
  port: number,
  payload: string,
  opts: { host?: string; timeoutMs?: number } = {},
): Promise<string> {
  return await (await connectClient(port, opts)).request(payload);
}

/**
 * Writes a random line on `conn` (or on a new connection to 127.0.0.1:`port`,
 * closed afterwards) and resolves with it once an echo server sent it back;
 * rejects if what came back differs.
 */
export function echoOnce(port: number, conn?: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = conn ?? net.connect({ host: "127.0.0.1", port });
    const msg = `hello ${Math.random()}\n`;
    let got = "";
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length >= msg.length) {
        s.off("data", onData);
        if (!conn) s.destroy();
        got === msg ? resolve(got) : reject(new Error(`echo mismatch ${JSON.stringify(got)}`));
      }
    };
    s.on("data", onData);
    s.once("error", reject);
    if (conn) s.write(msg);
    else s.once("connect", () => s.write(msg));
  });
}

/** `r`'s exit code and output, for assertion messages (`tail`: the last characters of each stream). */
export function showResult(r: CommandResult, tail = Infinity): string {
  return `exit ${r.code}\nstdout: ${r.stdout.slice(-tail)}\nstderr: ${r.stderr.slice(-tail)}`;
}

/**
 * GET `path` on 127.0.0.1:`to` (a port) or on the Unix socket `to` (a path), on a
 * connection of its own; resolves with the body, whatever the status.
 */
export function getBody(to: number | string, path = "/"): Promise<string> {
  const where = typeof to === "number" ? { host: "127.0.0.1", port: to } : { socketPath: to };
  return new Promise((resolve, reject) => {
    http.get({ ...where, path, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

/** An HTTP/1.1 GET request that asks the server to close the connection afterwards. */
export function httpGet(path = "/"): string {
  return `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;
}

import { spawn as spawnProcess, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A server process started by a test, with the log lines of every generation it starts. */
export interface ServerProcess {
  /** The first generation's pid. */
  pid: number;
  /** Every stderr/stdout line so far, from all generations. */
  lines: string[];
  /** Every pid seen in `[name pid=N gen=G]` log lines and in JSON log lines' `"pid":` fields. */
  pids: Set<number>;
  /** Waits for a line matching `re` (searching lines after index `from`); returns the match. */
  waitFor(re: RegExp, timeoutMs?: number, from?: number): Promise<RegExpMatchArray>;
  /** Kills every generation seen with SIGKILL. */
  killAll(): void;
  /** Resolves when the first generation's process exits. */
  exited: Promise<number | null>;
}

/** Starts `cmd` with stdio piped and collects its log lines. */
export function startServer(cmd: string[], env: Record<string, string> = {}): ServerProcess {
  const child = spawnProcess(cmd[0], cmd.slice(1), {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  const lines: string[] = [];
  const pids = new Set<number>([child.pid!]);
  const waiters: (() => void)[] = [];
  const onData = (prefix: string) => {
    let rest = "";
    return (d: Buffer) => {
      rest += d.toString();
      const parts = rest.split("\n");
      rest = parts.pop()!;
      for (const l of parts) {
        lines.push(prefix + l);
        // "[name pid=N …]" prefixes, children named before they log anything, and the
        // "pid": fields of JSON log lines (logLifecycle's format "json")
        for (const m of l.matchAll(/pid=(\d+)|upgrade-spawned: pid (\d+)|"pid":(\d+)/g)) {
          pids.add(Number(m[1] ?? m[2] ?? m[3]));
        }
      }
      for (const w of [...waiters]) w();
    };
  };
  child.stdout!.on("data", onData(""));
  child.stderr!.on("data", onData(""));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return {
    pid: child.pid!,
    lines,
    pids,
    exited,
    waitFor(re, timeoutMs = 30_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          for (let i = from; i < lines.length; i++) {
            const m = lines[i].match(re);
            if (m) {
              waiters.splice(waiters.indexOf(check), 1);
              clearTimeout(timer);
              resolve(m);
              return;
            }
          }
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(check), 1);
          reject(new Error(`timed out waiting for ${re}; log:\n${lines.slice(-30).join("\n")}`));
        }, timeoutMs);
        waiters.push(check);
        check();
      });
    },
    killAll: () => killAll(pids),
  };
}

/** What a test file started or made, for {@link cleanupAfterTests} to undo. */
export interface Leftovers {
  /** Closed first. */
  sockets: { close(): void }[];
  /** Every generation of each is killed. */
  servers: ServerProcess[];
  /** Removed with everything in them. */
  dirs: string[];
  /** Makes a temporary directory named `prefix…` and adds it to {@link Leftovers.dirs}. */
  tempDir(prefix: string): string;
}

/** {@link Leftovers} that its owner cleans up when it chooses (a bench, at its end). */
export interface OwnLeftovers extends Leftovers {
  /** Closes the sockets, kills every generation of the servers, removes the directories. */
  cleanUp(): void;
}

/** Empty lists the caller pushes what it starts into, and the {@link OwnLeftovers.cleanUp} of them. */
export function leftovers(): OwnLeftovers {
  const left: OwnLeftovers = {
    sockets: [],
    servers: [],
    dirs: [],
    tempDir(prefix: string): string {
      const dir = mkdtempSync(join(tmpdir(), prefix));
      left.dirs.push(dir);
      return dir;
    },
    cleanUp(): void {
      for (const ws of left.sockets) ws.close();
      for (const s of left.servers) s.killAll();
      for (const d of left.dirs) rmSync(d, { recursive: true, force: true });
    },
  };
  return left;
}

/**
 * Empty lists the calling test file pushes what it starts into; after all its
 * tests, the sockets are closed, the servers killed and the directories removed.
 */
export function cleanupAfterTests(): Leftovers {
  const left = leftovers();
  after(() => left.cleanUp());
  return left;
}

/** Resolves once `pid` has exited; rejects if it is still alive after `timeoutMs`. */
export async function stopped(pid: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} still alive after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Resolves with `p`'s value, or rejects after `ms` with an error naming `what`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

/**
 * Scenarios that mostly wait (a drain's quiet time, idle clients), started all
 * at once when the first test asks for one: each test still asserts on its own
 * scenario's result, but the waits overlap instead of adding up. A scenario's
 * failure is reported by the test that asks for it; a result that holds
 * promises of its own must catch them too, or one rejecting before its test
 * runs is an unhandled rejection that fails whichever test runs then.
 */
export function startedTogether<T>(
  starts: Record<string, () => Promise<T>>,
): (key: string) => Promise<T> {
  let started: Map<string, Promise<T>> | undefined;
  return (key) => {
    started ??= new Map(
      Object.entries(starts).map(([k, start]) => {
        const p = start();
        p.catch(() => {}); // reported by its own test, not as an unhandled rejection
        return [k, p];
      }),
    );
    const p = started.get(key);
    if (!p) throw new Error(`no scenario ${key}`);
    return p;
  };
}

/**
 * A `test()` whose bodies run side by side: every test declared through it (and
 * not skipped) starts its body when the first of them runs, and each test awaits
 * its own body, so its assertions and failures stay its own while the waits
 * overlap (see {@link startedTogether}; a body's own promises that it awaits
 * late must be caught when made). For tests that mostly wait on servers of
 * their own and bound no time tightly; never for tests that put load on them.
 * Declare them in one describe() (or at the top level), in a row: Deno runs a
 * describe()'s body only when the block's turn comes, so a test declared in a
 * later block would not have been started with the others.
 */
export function sideBySide(): (
  name: string,
  ...args: [body: Body] | [options: { skip: string | false }, body: Body]
) => void {
  const bodies: Record<string, Body> = {};
  const started = startedTogether(bodies);
  let running = false;
  return (name, ...args) => {
    const [options, body] = args.length === 1 ? [{ skip: false as const }, args[0]] : args;
    if (name in bodies) throw new Error(`two tests named ${name}`);
    if (running) throw new Error(`${name}: declared after the others started (another describe?)`);
    if (!options.skip) bodies[name] = body;
    test(name, options, () => (running = true, started(name)));
  };
}
type Body = () => Promise<void>;

/** A TCP port free on 127.0.0.1 a moment ago (listened on, then closed), for a server a test starts. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** The pids of `pid`'s zombie children. */
export function zombieChildren(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] === "Z" && Number(fields[1]) === pid) out.push(Number(e));
    } catch { /* raced with exit */ }
  }
  return out;
}

/** The open fds of `pid` with what they point to. */
export function fdTable(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(e), readlinkSync(`/proc/${pid}/fd/${e}`));
    } catch { /* closed meanwhile */ }
  }
  return out;
}

// ---------------------------------------------------------------- commands (added by packaging)

/** What {@link runCommand} saw. */
export interface CommandResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  /** Everything the command wrote to stdout. */
  stdout: string;
  /** Everything the command wrote to stderr. */
  stderr: string;
}

/**
 * Runs `cmd` to completion without blocking the event loop (so a load client
 * in this process keeps running) and collects its output. It is killed with
 * SIGKILL after `timeoutMs`.
 */
export function runCommand(
  cmd: string[],
  { env = {}, cwd = ROOT, timeoutMs = 120_000 }: {
    env?: Record<string, string>;
    cwd?: string;
    timeoutMs?: number;
  } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawnProcess(cmd[0], cmd.slice(1), {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1", ...env },
    });
    let stdout = "", stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The sockets open now that were not in `before` (fd numbers), ignoring
 * duplicates of stdin/stdout/stderr (runtimes dup them lazily). Waits up to
 * `settleMs` for sockets being closed asynchronously to go.
 */
export async function leakedSockets(before: number[], settleMs = 1000): Promise<number[]> {
  const { readlinkSync } = await import("node:fs");
  const link = (fd: number) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return "";
    }
  };
  const stdio = new Set([0, 1, 2].map(link));
  const deadline = Date.now() + settleMs;
  for (;;) {
    const leaked = openFds().filter((fd) => {
      const l = link(fd);
      return !before.includes(fd) && l.startsWith("socket:") && !stdio.has(l);
    });
    if (leaked.length === 0 || Date.now() >= deadline) return leaked;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A non-blocking datagram socket bound to `path` (a file path or `@abstract`): a NOTIFY_SOCKET. */
export function datagramReceiver(path: string): number {
  const fd = sys.socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.bind(fd, encodeUnix(path), path);
  return fd;
}

/** Every datagram queued on `fd`, decoded; sd_notify never attaches fds. */
export function drainDatagrams(fd: number): string[] {
  const out: string[] = [];
  for (;;) {
    const got = sys.recvFds(fd, 4096, 4);
    if (got === null) return out;
    assert.deepEqual(got.fds, [], "sd_notify must not attach fds");
    out.push(new TextDecoder().decode(got.data));
  }
}
