/**
 * What an upgrade costs beyond the program's own start-up, and whether
 * requests fail across many upgrades at full load.
 *
 *   deno run -A bench/upgrade.ts                 # both runtimes' servers
 *   bun bench/upgrade.ts --runtime bun --upgrades 100
 *
 * For each runtime it measures, with examples/http_server.ts:
 * 1. fresh start: from spawning the program until it answers an HTTP request
 *    (polled every 2 ms on a port chosen beforehand);
 * 2. idle upgrades, alternating with (1) so both see the same machine: the
 *    time the running generation reports from the trigger until the new one
 *    said ready, and from sending SIGHUP until that log line was read;
 * 3. `--upgrades` upgrades back to back while `--connections` keep-alive
 *    clients send requests as fast as they can, counting every failure by
 *    kind. The client never re-sends: a keep-alive connection closed under a
 *    request it sent (before the whole response arrived) is a failure ("eof"
 *    or "reset"), as it is for wrk and for any POST.
 * The overhead of an upgrade is (2) − (1), medians: what instar adds to the
 * start-up the program pays anyway (spawning, passing sockets, the ready
 * handshake).
 * Results go to stdout as Markdown and to .bench-out/upgrade-<runtime>.json.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { percentile, runLoad } from "../tests/support/load_client.ts";
import { alive, killAll, ROOT, runtimeCmd, sleep } from "../tests/support/procs.ts";

const EXAMPLE = join(ROOT, "examples", "http_server.ts");

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: "both" },
    idle: { type: "string", default: "15" },
    upgrades: { type: "string", default: "100" },
    connections: { type: "string", default: "20" },
  },
  strict: true,
});
const runtimes = values.runtime === "both" ? ["deno", "bun"] : [values.runtime as string];
for (const r of runtimes) {
  if (r !== "deno" && r !== "bun") throw new Error(`--runtime ${r}: expected deno, bun or both`);
}
const IDLE = Number(values.idle), LOADED = Number(values.upgrades);
const CONNECTIONS = Number(values.connections);

interface Server {
  child: ChildProcess;
  pids: Set<number>;
  /** Every log line with the time it was read. */
  lines: { text: string; at: number }[];
  /** The first line at index ≥ `from` matching `re`, waiting for it if needed. */
  next(re: RegExp, from?: number, timeoutMs?: number): Promise<{ m: RegExpMatchArray; at: number }>;
  killAll(): void;
}

function start(runtime: string, port = 0): Server {
  const [cmd, ...args] = runtimeCmd(runtime as "deno" | "bun", EXAMPLE);
  const child = spawn(cmd, [...args, "--port", String(port), "--drain-timeout", "5000"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const pids = new Set<number>([child.pid!]);
  const lines: { text: string; at: number }[] = [];
  const waiters = new Set<() => void>();
  for (const s of [child.stdout!, child.stderr!]) {
    let rest = "";
    s.on("data", (d: Uint8Array) => {
      const at = performance.now();
      rest += new TextDecoder().decode(d);
      const parts = rest.split("\n");
      rest = parts.pop()!;
      for (const text of parts) {
        const m = /pid=(\d+)/.exec(text);
        if (m) pids.add(Number(m[1]));
        lines.push({ text, at });
      }
      for (const w of [...waiters]) w();
    });
  }
  return {
    child,
    pids,
    lines,
    next(re, from = 0, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          for (let i = from; i < lines.length; i++) {
            const m = lines[i].text.match(re);
            if (m) {
              waiters.delete(check);
              clearTimeout(timer);
              resolve({ m, at: lines[i].at });
              return;
            }
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no line matching ${re} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    killAll: () => killAll(pids),
  };
}

async function stop(pid: number): Promise<void> {
  try {
    process.kill(pid, "SIGTERM");
  } catch { /* gone */ }
  for (let t = 0; t < 400 && alive(pid); t++) await sleep(25);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** One HTTP/1.1 request on a new connection; resolves with the body, rejects on any error. */
function httpOnce(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let got = "";
    s.setEncoding("latin1");
    s.once("connect", () => s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    s.on("data", (d: string) => (got += d));
    s.once("error", reject);
    s.once("close", () => (got ? resolve(got) : reject(new Error("EOF"))));
    s.setTimeout(5000, () => s.destroy(new Error("timeout")));
  });
}

// From spawning the program until it answers HTTP: its own start-up, which an
// upgrade pays too. Its log line is no clock for this: a runtime may write
// stderr to a pipe asynchronously, tens of ms late while the program is busy.
async function freshStart(runtime: string): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const s = start(runtime, port);
  try {
    for (;;) {
      try {
        await httpOnce(port);
        break;
      } catch {
        if (performance.now() - t0 > 60_000) throw new Error(`${runtime} did not start`);
        await sleep(2);
      }
    }
    const ms = performance.now() - t0;
    await s.next(/gen=1\] ready on /);
    await stop(s.child.pid!);
    return ms;
  } finally {
    s.killAll();
  }
}

interface UpgradeTimes {
  external: number[]; // SIGHUP sent → a new connection answered by the new pid (or: log line read)
  reported: number[]; // the server's own "ready after X ms"
  failedUpgrades: string[];
}

async function upgrades(
  s: Server,
  count: number,
  pid0: number,
  probePort?: number,
): Promise<UpgradeTimes & { last: number }> {
  const res: UpgradeTimes = { external: [], reported: [], failedUpgrades: [] };
  let pid = pid0;
  for (let i = 0; i < count; i++) {
    const from = s.lines.length;
    const t0 = performance.now();
    process.kill(pid, "SIGHUP");
    if (probePort !== undefined) {
      // Until a new connection is answered by another pid: measured like a fresh start.
      for (;;) {
        const body = await httpOnce(probePort).catch(() => "");
        const m = /hello from pid (\d+)/.exec(body);
        if (m && Number(m[1]) !== pid) break;
        if (performance.now() - t0 > 60_000) throw new Error("no new generation answered");
        await sleep(2);
      }
      res.external.push(performance.now() - t0);
    }
    const { m, at } = await s.next(
      new RegExp(`pid=${pid} gen=\\d+\\] upgrade-(succeeded|failed): (.*)`),
      from,
    );
    if (m[1] !== "succeeded") {
      res.failedUpgrades.push(m[2]);
      continue;
    }
    const r = /pid (\d+) ready after (\d+) ms/.exec(m[2])!;
    if (probePort === undefined) res.external.push(at - t0);
    res.reported.push(Number(r[2]));
    pid = Number(r[1]);
    await sleep(50); // the new generation's signal handler is installed before it says ready
  }
  return { ...res, last: pid };
}

const stats = (xs: number[]) =>
  xs.length
    ? { p50: percentile(xs, 50), p90: percentile(xs, 90), max: Math.max(...xs), n: xs.length }
    : { p50: NaN, p90: NaN, max: NaN, n: 0 };
const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(0) : "-");
/** "none", or e.g. "eof 3, reset 1": the kinds that occurred. */
const byKind = (failures: Record<string, number>) =>
  Object.entries(failures).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ") ||
  "none";

const rows: string[] = [];
mkdirSync(join(ROOT, ".bench-out"), { recursive: true });
for (const runtime of runtimes) {
  process.stderr.write(`${runtime}: ${IDLE} fresh starts and idle upgrades, interleaved…\n`);
  const s = start(runtime);
  let fresh: ReturnType<typeof stats>;
  let idle: ReturnType<typeof stats>, idleReported: ReturnType<typeof stats>;
  let loadedExt: ReturnType<typeof stats>, loadedRep: ReturnType<typeof stats>;
  let load: Awaited<ReturnType<typeof runLoad>>;
  let failedUpgrades: string[] = [];
  try {
    const { m } = await s.next(/gen=1\] ready on 127\.0\.0\.1:(\d+)/);
    const port = Number(m[1]);
    // Alternate the two so that both see the same load from other jobs on the machine.
    const freshMs: number[] = [];
    const a = {
      external: [] as number[],
      reported: [] as number[],
      failedUpgrades: [] as string[],
    };
    let last = s.child.pid!;
    for (let i = 0; i < IDLE; i++) {
      freshMs.push(await freshStart(runtime));
      const one = await upgrades(s, 1, last, port);
      a.external.push(...one.external);
      a.reported.push(...one.reported);
      a.failedUpgrades.push(...one.failedUpgrades);
      last = one.last;
    }
    fresh = stats(freshMs);
    idle = stats(a.external);
    idleReported = stats(a.reported);

    process.stderr.write(
      `${runtime}: ${LOADED} upgrades under load (${CONNECTIONS} connections)…\n`,
    );
    const ac = new AbortController();
    const loading = runLoad({
      port,
      connections: CONNECTIONS,
      durationMs: 20 * 60_000,
      signal: ac.signal,
      timeoutMs: 10_000,
    });
    await sleep(1000);
    const b = await upgrades(s, LOADED, last);
    await sleep(1000);
    ac.abort();
    load = await loading;
    loadedExt = stats(b.external);
    loadedRep = stats(b.reported);
    failedUpgrades = [...a.failedUpgrades, ...b.failedUpgrades];
    await stop(b.last);
  } finally {
    s.killAll();
  }
  const overhead = idle.p50 - fresh.p50;
  const summary = {
    runtime,
    fresh,
    idleUpgrade: idle,
    idleUpgradeReported: idleReported,
    overheadP50: overhead,
    loadedUpgrade: loadedExt,
    loadedUpgradeReported: loadedRep,
    failedUpgrades,
    requests: load.ok + load.failed,
    failed: load.failed,
    failures: load.failures,
    reqPerSec: load.ok / (load.elapsedMs / 1000),
  };
  writeFileSync(
    join(ROOT, ".bench-out", `upgrade-${runtime}.json`),
    JSON.stringify(summary, null, 2),
  );
  rows.push(
    `| ${runtime} | ${ms(fresh.p50)} / ${ms(fresh.p90)} | ${ms(idle.p50)} / ${ms(idle.p90)} ` +
      `| **${ms(overhead)}** | ${ms(idleReported.p50)} | ${ms(loadedRep.p50)} / ${
        ms(loadedRep.p90)
      } ` +
      `| ${loadedRep.n} of ${LOADED} | ${summary.requests} | **${load.failed}** ` +
      `| ${byKind(load.failures)} | ${Math.round(summary.reqPerSec)} |`,
  );
  process.stderr.write(`${runtime}: done ${JSON.stringify(summary)}\n`);
}

console.log(
  "| runtime | fresh start → answers, p50 / p90 ms | SIGHUP → new generation answers, p50 / p90 ms " +
    "| overhead p50 ms | trigger → ready (server), p50 ms " +
    "| under load: trigger → ready (server), p50 / p90 ms | upgrades ok | requests | failed " +
    "| failed by kind | req/s |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows) console.log(r);
