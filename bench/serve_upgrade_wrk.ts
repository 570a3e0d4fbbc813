/**
 * Upgrades under wrk: examples/http_server.ts is upgraded back to back by
 * SIGHUP while `wrk -t1 -c64` sends keep-alive GETs (and, in a second run,
 * 16 KiB POSTs through a Lua script) to 127.0.0.1. wrk never re-sends a
 * request: a keep-alive connection closed under a request it sent is one of
 * its "read" socket errors. The target is 0 socket errors and 0 non-2xx
 * responses.
 *
 *   deno run -A bench/serve_upgrade_wrk.ts                  # the server on Deno
 *   deno run -A bench/serve_upgrade_wrk.ts --runtime bun    # the server on Bun
 *   … --upgrades 20 --method get|post|both --connections 64 --post-bytes 16384
 *     --steady-ms 2000 --serve-mode auto|transplant|fallback
 *
 * Each run: the server starts with `--pid-file` and `--stats-file`; wrk starts
 * (its `-d` is only an upper bound), `--steady-ms` of steady load, then
 * `--upgrades` SIGHUPs back to back, each sent to the newest generation as soon
 * as it has written the PID file (it is ready and its signal handler is
 * installed); when every old generation has exited, `--steady-ms` more, then
 * wrk is stopped with SIGINT (it prints its summary) and the server with
 * SIGTERM. wrk's "Socket errors: connect X, read Y, write Z, timeout T" line
 * is parsed (no such line: no errors), and "Non-2xx or 3xx responses: N".
 * For POSTs, the sum of the POST bodies every generation says it read
 * (`--stats-file`) is compared with wrk's count of responses; the server may
 * have read up to one body per connection more, whose responses wrk dropped
 * when it was stopped.
 *
 * wrk is installed with `apt-get install -y wrk` when it is missing and this
 * runs as root; otherwise the run is skipped and the reason printed (exit 0).
 * Results go to stdout as Markdown and to
 * .bench-out/serve_upgrade_wrk-<runtime>.json; the exit code is 1 when wrk
 * saw a socket error or a non-2xx response, or an upgrade did not succeed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { percentile } from "../tests/support/load_client.ts";
import { alive, ROOT, RUNTIME, runtimeCmd, sleep, startServer } from "../tests/support/helpers.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: RUNTIME },
    upgrades: { type: "string", default: "20" },
    method: { type: "string", default: "both" },
    connections: { type: "string", default: "64" },
    "post-bytes": { type: "string", default: "16384" },
    "steady-ms": { type: "string", default: "2000" },
    "serve-mode": { type: "string" },
    "max-seconds": { type: "string", default: "300" },
  },
  strict: true,
});
const runtime = values.runtime;
if (runtime !== "deno" && runtime !== "bun") {
  throw new Error(`--runtime ${runtime}: expected deno or bun`);
}
const methods = values.method === "both" ? ["get", "post"] : [values.method as string];
for (const m of methods) {
  if (m !== "get" && m !== "post") throw new Error(`--method ${m}: expected get, post or both`);
}
const UPGRADES = Number(values.upgrades);
const CONNECTIONS = Number(values.connections);
const POST_BYTES = Number(values["post-bytes"]);
const STEADY_MS = Number(values["steady-ms"]);
// wrk's own duration: only a bound (it is stopped with SIGINT once the upgrades are done).
const MAX_SECONDS = Number(values["max-seconds"]);
const EXAMPLE = join(ROOT, "examples", "http_server.ts");

const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;

/** Makes sure wrk is on the PATH; returns why not otherwise. */
function ensureWrk(): string | undefined {
  if (has("wrk")) return undefined;
  if (process.getuid?.() !== 0) return "wrk is not installed and this does not run as root";
  if (!has("apt-get")) return "wrk is not installed and there is no apt-get";
  const install = () =>
    spawnSync("apt-get", ["install", "-y", "wrk"], {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      timeout: 300_000,
    }).status === 0;
  process.stderr.write("wrk is missing: apt-get install -y wrk\n");
  if (!install()) {
    spawnSync("apt-get", ["update"], { stdio: ["ignore", "inherit", "inherit"], timeout: 300_000 });
    install();
  }
  return has("wrk") ? undefined : "`apt-get install -y wrk` did not install wrk";
}

interface WrkOutput {
  requests: number;
  seconds: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx: number;
  latencyMs: { p50: number; p99: number; max: number };
  raw: string;
}

function toMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === "us" ? n / 1000 : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n;
}

function parseWrk(out: string): WrkOutput {
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m),/.exec(out);
  if (!req) throw new Error(`no "requests in" line in wrk's output:\n${out}`);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(out);
    return m ? toMs(m[1], m[2]) : NaN;
  };
  const max = /Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)/.exec(out);
  return {
    requests: Number(req[1]),
    seconds: toMs(req[2], req[3]) / 1000,
    socketErrors: se
      ? {
        connect: Number(se[1]),
        read: Number(se[2]),
        write: Number(se[3]),
        timeout: Number(se[4]),
      }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    latencyMs: { p50: pct("50"), p99: pct("99"), max: max ? toMs(max[1], max[2]) : NaN },
    raw: out,
  };
}

function readPid(path: string): number {
  try {
    const n = Number(readFileSync(path, "utf8").trim());
    return Number.isInteger(n) && n > 0 ? n : 0;
  } catch {
    return 0;
  }
}

interface RunResult {
  method: string;
  upgrades: number;
  failedUpgrade: string;
  /** SIGHUP sent → the new generation's pid in the PID file. */
  readyMs: { p50: number; p99: number };
  /** SIGHUP sent → the old generation exited. */
  windowMs: { p50: number; p99: number };
  durationMs: number;
  wrk: Omit<WrkOutput, "raw">;
  socketErrors: number;
  serverPostsRead: number | null;
  generationsReporting: number;
  ok: boolean;
}

async function run(method: string, tmp: string): Promise<RunResult> {
  const pidFile = join(tmp, `${method}.pid`);
  const statsFile = join(tmp, `${method}-posts.txt`);
  const lua = join(tmp, "post.lua");
  writeFileSync(
    lua,
    `wrk.method = "POST"\nwrk.body = string.rep("x", ${POST_BYTES})\n` +
      `wrk.headers["Content-Type"] = "application/octet-stream"\n`,
  );
  const args = ["--port", "0", "--pid-file", pidFile, "--stats-file", statsFile];
  if (values["serve-mode"]) args.push("--serve-mode", values["serve-mode"]);
  const server = startServer(runtimeCmd(runtime as "deno" | "bun", EXAMPLE, args));
  const ours = new Set<number>([server.pid]);
  let current = server.pid;
  let failedUpgrade = "";
  const ready: number[] = [], windows: number[] = [];
  let wrkOut = "";
  let started = 0, ended = 0;
  let wrk: ReturnType<typeof spawn> | undefined;
  try {
    const port = Number((await server.waitFor(/ready on 127\.0\.0\.1:(\d+)/, 60_000))[1]);
    for (let t = 0; readPid(pidFile) !== current; t++) {
      if (t > 3000) throw new Error("the first generation did not write its PID file");
      await sleep(10);
    }
    const wrkArgs = [
      "-t1",
      `-c${CONNECTIONS}`,
      `-d${MAX_SECONDS}s`,
      "--latency",
      ...(method === "post" ? ["-s", lua] : []),
      `http://127.0.0.1:${port}/`,
    ];
    process.stderr.write(`${runtime} ${method}: wrk ${wrkArgs.join(" ")}\n`);
    started = performance.now();
    wrk = spawn("wrk", wrkArgs, { stdio: ["ignore", "pipe", "inherit"] });
    wrk.stdout!.on("data", (d: Uint8Array) => (wrkOut += new TextDecoder().decode(d)));
    const wrkExited = new Promise<void>((r) => wrk!.on("exit", () => r()));
    await sleep(STEADY_MS);

    const exits: Promise<void>[] = [];
    for (let i = 0; i < UPGRADES; i++) {
      const old = current;
      const from = server.lines.length;
      const sighup = performance.now();
      try {
        process.kill(old, "SIGHUP");
      } catch (e) {
        failedUpgrade = `upgrade ${i + 1}: pid ${old}: ${(e as Error).message}`;
        break;
      }
      let next = 0;
      for (;;) {
        next = readPid(pidFile);
        if (next !== 0 && next !== old) break;
        const failed = server.lines.slice(from).find((l) =>
          l.includes(`pid=${old} `) && l.includes("upgrade-failed")
        );
        if (failed) {
          failedUpgrade = `upgrade ${i + 1}: ${failed}`;
          break;
        }
        if (performance.now() - sighup > 60_000) {
          failedUpgrade = `upgrade ${i + 1}: no new pid in ${pidFile} within 60 s`;
          break;
        }
        await sleep(2);
      }
      if (failedUpgrade) break;
      ready.push(performance.now() - sighup);
      ours.add(next);
      current = next;
      exits.push((async () => {
        while (alive(old)) await sleep(5);
        windows.push(performance.now() - sighup);
        ours.delete(old);
      })());
    }
    await Promise.all(exits);
    await sleep(STEADY_MS);
    wrk.kill("SIGINT");
    await Promise.race([wrkExited, sleep(10_000)]);
    ended = performance.now();
    wrk.kill("SIGKILL"); // only if it did not stop (its pid is reaped by then otherwise)
    try {
      process.kill(current, "SIGTERM");
    } catch { /* gone */ }
    const stopBy = performance.now() + 30_000;
    while (alive(current) && performance.now() < stopBy) await sleep(10);
  } finally {
    if (wrk && wrk.exitCode === null && wrk.signalCode === null) wrk.kill("SIGKILL");
    for (const pid of ours) {
      try {
        process.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    server.killAll();
  }
  const parsed = parseWrk(wrkOut);
  let stats = "";
  try {
    stats = readFileSync(statsFile, "utf8");
  } catch { /* none */ }
  const statLines = stats.split("\n").filter((l) => l.trim() !== "");
  const posts = statLines.reduce((n, l) => n + Number(l.split(" ")[1]), 0);
  const se = parsed.socketErrors;
  const socketErrors = se.connect + se.read + se.write + se.timeout;
  const { raw: _raw, ...wrkSummary } = parsed;
  const postOk = method !== "post" ||
    (posts >= parsed.requests && posts - parsed.requests <= CONNECTIONS);
  return {
    method,
    upgrades: ready.length,
    failedUpgrade,
    readyMs: { p50: percentile(ready, 50), p99: percentile(ready, 99) },
    windowMs: { p50: percentile(windows, 50), p99: percentile(windows, 99) },
    durationMs: ended - started,
    wrk: wrkSummary,
    socketErrors,
    serverPostsRead: method === "post" ? posts : null,
    generationsReporting: statLines.length,
    ok: socketErrors === 0 && parsed.non2xx === 0 && failedUpgrade === "" &&
      ready.length === UPGRADES && postOk,
  };
}

mkdirSync(join(ROOT, ".bench-out"), { recursive: true });
const outFile = join(ROOT, ".bench-out", `serve_upgrade_wrk-${runtime}.json`);
const skipped = ensureWrk();
if (skipped) {
  console.log(`wrk part skipped (${runtime}): ${skipped}`);
  writeFileSync(outFile, JSON.stringify({ runtime, skipped }, null, 2) + "\n");
  process.exit(0);
}
const wrkVersion = (spawnSync("wrk", ["-v"]).stdout?.toString() ?? "").split("\n")[0].trim();

const tmp = mkdtempSync(join(tmpdir(), "instar-wrk-"));
const results: RunResult[] = [];
try {
  for (const method of methods) results.push(await run(method, tmp));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
writeFileSync(
  outFile,
  JSON.stringify({ runtime, wrkVersion, connections: CONNECTIONS, results }, null, 2) + "\n",
);

const f = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "–");
console.log(`\n${runtime} server, ${wrkVersion}, -t1 -c${CONNECTIONS}, upgrades back to back`);
console.log(
  "\n| runtime | load | upgrades | requests | req/s | socket errors (connect/read/write/timeout) " +
    "| non-2xx | p50 ms | p99 ms | max ms | SIGHUP → PID file p50 / p99 ms " +
    "| window p50 / p99 ms | POST bodies read by the server |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of results) {
  const se = r.wrk.socketErrors;
  console.log(
    `| ${runtime} | ${r.method === "post" ? `POST ${POST_BYTES} B` : "GET"} | ` +
      `${r.upgrades} of ${UPGRADES} | ${r.wrk.requests} | ${
        f(r.wrk.requests / r.wrk.seconds, 0)
      } | ` +
      `**${r.socketErrors}** (${se.connect}/${se.read}/${se.write}/${se.timeout}) | ${r.wrk.non2xx} | ` +
      `${f(r.wrk.latencyMs.p50)} | ${f(r.wrk.latencyMs.p99)} | ${f(r.wrk.latencyMs.max, 1)} | ` +
      `${f(r.readyMs.p50, 0)} / ${f(r.readyMs.p99, 0)} | ${f(r.windowMs.p50, 0)} / ` +
      `${f(r.windowMs.p99, 0)} | ${
        r.serverPostsRead === null
          ? "–"
          : `${r.serverPostsRead} (${r.generationsReporting} generations; wrk counted ` +
            `${r.wrk.requests} responses)`
      } |`,
  );
  if (r.failedUpgrade) console.log(`stopped: ${r.failedUpgrade}`);
}
process.exit(results.every((r) => r.ok) ? 0 : 1);
