// The supported runtime versions: the oldest and newest release of each
// supported minor of Deno and Bun, installed from the npm registry into a
// temporary directory, each serving examples/http_server.ts (serve mode auto)
// through 3 upgrades under a load that never re-sends a request. The serve
// path each generation took is asserted from outside (/proc: a fallback keeps
// the native server listening on a throwaway loopback port), so a release
// whose reactor changed shows up as a fallback with its serve-fallback event,
// never as a silent misbehaving transplant. docs/versions.md has the results.
//
// It runs once, under `deno test` (it starts each version itself).
// INSTAR_VERSIONS=deno@2.6.8,bun@1.3.0 runs other versions (path expected: transplant);
// INSTAR_NO_CONTROL=1 leaves out the control socket (which Deno < 2.8.3 and Bun 1.3 cannot serve).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  bunBin,
  cleanupAfterTests,
  denoBin,
  describeUnless,
  ROOT,
  RUNTIME,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { nextPidInPidFile, serverStatus } from "./support/status.ts";
import { listeningTcpAsync } from "./support/listening.ts";

const left = cleanupAfterTests();
const EXAMPLE = join(ROOT, "examples", "http_server.ts");
const CONTROL = process.env.INSTAR_NO_CONTROL !== "1";

type Path = "transplant" | "fallback";
interface Version {
  runtime: "deno" | "bun";
  version: string;
  /** The serve path every generation must take. */
  path: Path;
  /** The pinned devDependency: no install needed. */
  pinned?: boolean;
}

// Oldest supported (latest patch of the oldest minor) to newest; see docs/versions.md.
// Deno up to 2.8.2 and Bun 1.3 are below it: node:net cannot listen on a Unix socket's fd
// there (Deno: EEXIST; Bun: "does not support listening on a file descriptor"), so the control
// socket fails at ready() (and so would serve()'s fallback proxy).
const DEFAULT: Version[] = [
  { runtime: "deno", version: "2.8.3", path: "transplant" },
  { runtime: "deno", version: "2.9.6", path: "transplant", pinned: true },
  { runtime: "bun", version: "1.4.0", path: "transplant" },
  { runtime: "bun", version: "1.4.5", path: "transplant", pinned: true },
];

function versions(): Version[] {
  const picked = process.env.INSTAR_VERSIONS;
  if (!picked) return DEFAULT;
  return picked.split(",").map((s) => {
    const [runtime, version] = s.trim().split("@") as ["deno" | "bun", string];
    return { runtime, version, path: "transplant" };
  });
}

/** Runs `cmd`, resolving with its exit code and output (never rejects). */
function run(
  cmd: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      resolve({ code: null, out: String(e) });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Installs `runtime@version` from the npm registry into a temp dir; the binary, or why not. */
async function install(v: Version): Promise<{ bin: string } | { problem: string }> {
  if (v.pinned) {
    const bin = v.runtime === "deno" ? denoBin() : bunBin();
    const r = await run(bin, ["--version"], 30_000);
    if (!r.out.includes(v.version)) {
      return { problem: `the pinned ${v.runtime} is not ${v.version}: ${r.out}` };
    }
    return { bin };
  }
  const dir = left.tempDir(`instar-${v.runtime}-${v.version}-`);
  const t0 = performance.now();
  const r = await run(
    "npm",
    [
      "install",
      "--prefix",
      dir,
      "--no-save",
      "--no-package-lock",
      "--no-audit",
      "--no-fund",
      `${v.runtime}@${v.version}`,
    ],
    120_000,
  );
  // The binary itself, not a launcher script (deno < 2.7.14's .bin/deno is a node script
  // that runs the binary as its child, so the server's pid would not be the process started).
  const bin = v.runtime === "deno"
    ? join(dir, "node_modules", "deno", "deno")
    : join(dir, "node_modules", "bun", "bin", "bun.exe");
  if (r.code !== 0 || !existsSync(bin)) {
    return {
      problem: `npm install ${v.runtime}@${v.version} failed (exit ${r.code}): ${
        r.out.slice(-400)
      }`,
    };
  }
  console.log(`installed ${v.runtime}@${v.version} in ${Math.round(performance.now() - t0)} ms`);
  return { bin };
}

/** Whether npm and the registry answer at all (a skip reason if not). */
async function registryProblem(): Promise<string | false> {
  if (!versions().some((v) => !v.pinned)) return false;
  const r = await run("npm", ["view", "deno", "version"], 30_000);
  return r.code === 0
    ? false
    : `the npm registry is not reachable (npm view: exit ${r.code}: ${r.out.slice(-200)})`;
}

/** The serve path generation `pid` took: a fallback leaves the native server on a second TCP port. */
async function pathOf(pid: number, port: number): Promise<{ path: Path; tcp: string[] }> {
  // Not listeningSockets(): its synchronous read of /proc/net/tcp would stall the load client.
  const tcp = await listeningTcpAsync(pid);
  return { path: tcp.every((a) => a.endsWith(`:${port}`)) ? "transplant" : "fallback", tcp };
}

const skip = RUNTIME === "deno"
  ? await registryProblem()
  : "the version matrix runs once, under deno test (it starts every version itself)";

// One skip for the whole matrix, not one per version.
describeUnless(skip, `supported runtime versions (from ${RUNTIME})`, () => {
  for (const v of versions()) {
    const name =
      `${v.runtime} ${v.version} serves on the ${v.path} path through 3 upgrades under load, failing no request`;
    test(name, async () => {
      const got = await install(v);
      if ("problem" in got) {
        // Never a silent pass: the install failing fails the test with the reason.
        assert.fail(got.problem);
      }
      const dir = left.tempDir("instar-versions-");
      const pidFile = join(dir, "app.pid"), ctl = join(dir, "ctl.sock");
      const script = [
        EXAMPLE,
        "--port",
        "0",
        "--serve-mode",
        "auto",
        "--pid-file",
        pidFile,
        ...(CONTROL ? ["--control", ctl] : []),
        "--drain-timeout",
        "10000",
      ];
      const cmd = v.runtime === "deno"
        ? [got.bin, "run", "-A", "--no-check", ...script]
        : [got.bin, ...script];
      const server = startServer(cmd);
      left.servers.push(server);
      const log = server.lines;
      // A version that fails at start-up fails here with its log, not after the 60 s wait.
      const exitedEarly = server.exited.then((code) =>
        `exited with ${code} before it was ready:\n${log.slice(-15).join("\n")}`
      );
      const started = await Promise.race([
        server.waitFor(/ready on 127\.0\.0\.1:(\d+)/, 60_000),
        exitedEarly,
      ]);
      if (typeof started === "string") assert.fail(started);
      const port = Number(started[1]);
      const first = await nextPidInPidFile(pidFile, 0, { timeoutMs: 60_000, log });
      assert.equal(first, server.pid);
      const paths = [{ pid: first, ...(await pathOf(first, port)) }];
      const ac = new AbortController();
      const seen = new Set<string>();
      const common = {
        port,
        durationMs: 120_000,
        pauseMs: TEST_PAUSE_MS,
        signal: ac.signal,
        onResponse: (b: string) => seen.add(b.split(" (")[1] ?? b),
      };
      const keepAlive = runLoad({ ...common, connections: 16 });
      const short = runLoad({ ...common, connections: 2, keepAlive: false });
      const generations = [first];
      try {
        for (let i = 0; i < 3; i++) {
          await new Promise((r) => setTimeout(r, 300));
          const current = generations.at(-1)!;
          process.kill(current, "SIGHUP");
          const next = await nextPidInPidFile(pidFile, current, { timeoutMs: 60_000, log });
          server.pids.add(next);
          generations.push(next);
          paths.push({ pid: next, ...(await pathOf(next, port)) });
        }
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        ac.abort();
      }
      const [k, s] = await Promise.all([keepAlive, short]);
      const last = generations.at(-1)!;
      const gone: number[] = [];
      for (const pid of generations.slice(0, -1)) {
        await stopped(pid, 20_000).then(() => gone.push(pid), () => {});
      }
      const fallbacks = log.filter((l) => /serve-fallback/.test(l));
      console.log(
        `${v.runtime} ${v.version}: ` +
          JSON.stringify({
            keepAlive: { ok: k.ok, failed: k.failed },
            short: { ok: s.ok, failed: s.failed },
            paths: paths.map((p) => p.path),
            oldExited: `${gone.length}/${generations.length - 1}`,
            fallbackEvents: fallbacks.length,
          }),
      );
      assert.ok(
        [...seen].some((b) => b.includes(v.version)),
        `answered by ${[...seen].join(", ")}`,
      );
      for (const [what, r] of [["keep-alive", k], ["short", s]] as const) {
        assert.equal(r.failed, 0, `${what}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
        assert.ok(r.ok > 50, `${what}: only ${r.ok} responses`);
      }
      assert.deepEqual(
        gone,
        generations.slice(0, -1),
        `every old generation drained and exited; log:\n${log.slice(-20).join("\n")}`,
      );
      for (const p of paths) {
        assert.equal(p.path, v.path, `pid ${p.pid} listens on ${p.tcp.join(", ")}`);
      }
      // A fallback is never silent: one serve-fallback line per generation that took it.
      assert.equal(
        fallbacks.length,
        paths.filter((p) => p.path === "fallback").length,
        fallbacks.join("\n"),
      );
      assert.equal(alive(last), true);
      if (CONTROL) {
        const status = await serverStatus(ctl);
        assert.equal(status?.pid, last, "the control socket answers from the last generation");
        assert.equal(status?.generation, 4);
      }
      process.kill(last, "SIGTERM");
      await stopped(last);
    });
  }
});
