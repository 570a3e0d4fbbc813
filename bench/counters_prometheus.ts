/**
 * A real Prometheus scraping examples/http_server.ts through back-to-back upgrades: Debian's
 * `prometheus` (/usr/bin/prometheus) scrapes `/metrics` every 250 ms while a keep-alive load
 * that never re-sends runs and the server (started with `--pid-file` and no control socket,
 * as `kill -HUP $(cat app.pid)` users run it) is upgraded by SIGHUP the moment the PID file
 * names the new generation, `--upgrades` times. Once every old generation has exited and
 * Prometheus has scraped a few more times, it asks Prometheus's HTTP API for `resets()` of
 * `instar_requests_total` and `instar_upgrades_total`, the last `instar_requests_total`, and
 * the number of successful scrapes up to it (each scrape is itself a request counted): the last
 * value must equal the requests the client was answered plus those scrapes, exactly.
 *
 * A scrape Prometheus gave up on (its timeout is the interval) may still have been answered, and
 * counted, by the server: `failedScrapes` says how many there were.
 *
 * Usage: deno run -A bench/counters_prometheus.ts [--upgrades 20] [--runtime deno|bun] [--control]
 *        [--interval 250] (ms)
 *
 * Needs /usr/bin/prometheus (Debian package prometheus). Only talks to 127.0.0.1.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { runLoad } from "../tests/support/load_client.ts";
import { ROOT } from "../tests/support/procs.ts";
import { RUNTIME_COMMANDS } from "./wrk_run.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    upgrades: { type: "string", default: "20" },
    runtime: { type: "string", default: "Bun" in globalThis ? "bun" : "deno" },
    control: { type: "boolean", default: false },
    interval: { type: "string", default: "250" },
  },
});
const upgrades = Number(values.upgrades);
const runtime = values.runtime as keyof typeof RUNTIME_COMMANDS;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].startsWith("Z");
  } catch {
    return false;
  }
};

async function nextPid(pidFile: string, previous: number): Promise<number> {
  for (let i = 0; i < 3000; i++) {
    const pid = Number(readFileSync(pidFile, { encoding: "utf8", flag: "a+" }).trim());
    if (pid > 0 && pid !== previous && alive(pid)) return pid;
    await sleep(10);
  }
  throw new Error(`no generation after ${previous}`);
}

async function query(promPort: number, expr: string, time: number): Promise<number> {
  const url = `http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}` +
    `&time=${time}`;
  const body = await (await fetch(url)).json();
  const r = body.data?.result ?? [];
  if (r.length !== 1) throw new Error(`${expr}: ${JSON.stringify(body)}`);
  return Number(r[0].value[1]);
}

const dir = mkdtempSync(join(tmpdir(), "instar-prom-"));
const port = await freePort(), promPort = await freePort();
const pidFile = join(dir, "app.pid");
writeFileSync(
  join(dir, "prometheus.yml"),
  `global:\n  scrape_interval: ${values.interval}ms\n  scrape_timeout: ${values.interval}ms\n` +
    `scrape_configs:\n` +
    `  - job_name: instar\n    static_configs:\n      - targets: ["127.0.0.1:${port}"]\n`,
);
const prom = spawn("/usr/bin/prometheus", [
  `--config.file=${join(dir, "prometheus.yml")}`,
  `--storage.tsdb.path=${join(dir, "data")}`,
  `--web.listen-address=127.0.0.1:${promPort}`,
], { stdio: "ignore" });
const [cmd, ...args] = [
  ...RUNTIME_COMMANDS[runtime],
  join(ROOT, "examples", "http_server.ts"),
  "--port",
  String(port),
  "--pid-file",
  pidFile,
  "--drain-timeout",
  "5000",
  ...(values.control ? ["--control", join(dir, "ctl.sock")] : []),
];
const server = spawn(cmd, args, { stdio: "ignore" });
const pids = [await nextPid(pidFile, 0)];
try {
  await sleep(2000); // Prometheus up, a few scrapes of generation 1
  const stop = new AbortController();
  const load = runLoad({ port, connections: 6, durationMs: 600_000, signal: stop.signal });
  const started = performance.now();
  for (let i = 0; i < upgrades; i++) {
    process.kill(pids[pids.length - 1], "SIGHUP");
    pids.push(await nextPid(pidFile, pids[pids.length - 1]));
  }
  const upgradeMs = performance.now() - started;
  stop.abort();
  const answered = await load;
  for (const pid of pids.slice(0, -1)) while (alive(pid)) await sleep(50);
  await sleep(2000); // scrapes of the last generation alone
  const t = Date.now() / 1000 - 0.5;
  const window = "[10m]";
  const last = await query(promPort, "instar_requests_total", t);
  const scrapes = await query(promPort, `sum(count_over_time(instar_generation${window}))`, t);
  const failedScrapes = await query(promPort, `count_over_time(up${window})`, t) - scrapes;
  const resets = await query(promPort, `resets(instar_requests_total${window})`, t);
  const upResets = await query(
    promPort,
    `sum(resets(instar_upgrades_total${window}))`,
    t,
  );
  const succeeded = await query(promPort, `instar_upgrades_total{outcome="succeeded"}`, t);
  const failures = Object.values(answered.failures).reduce((a, b) => a + b, 0);
  const expected = answered.ok + scrapes;
  console.log(JSON.stringify({
    runtime,
    control: values.control,
    upgrades,
    upgradeMs: Math.round(upgradeMs),
    answered: answered.ok,
    failedRequests: failures,
    scrapes,
    failedScrapes,
    lastRequestsTotal: last,
    expected,
    difference: last - expected,
    resetsRequests: resets,
    resetsUpgrades: upResets,
    succeeded,
  }));
} finally {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  server.kill("SIGKILL");
  prom.kill("SIGTERM");
  await sleep(500);
  rmSync(dir, { recursive: true, force: true });
}
