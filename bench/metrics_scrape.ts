/**
 * What one metrics scrape costs, by how the open connections of an HTTP
 * server are counted: reading /proc/net/tcp{,6} (src/proc.ts, the
 * fallback) or asking the kernel through sock_diag
 * (src/net/sock_diag.ts, what `up.metrics()` uses). Both costs grow with
 * the TCP sockets of the network namespace (TIME_WAIT included), which the
 * output states. Prints, per way: wall time and CPU time per count, and the
 * longest gap between 1 ms timers while one count runs (the event-loop stall).
 *
 * Usage: deno run -A bench/metrics_scrape.ts [--counts 10]   (or bun bench/metrics_scrape.ts)
 *
 * @module
 */

import net from "node:net";
import process from "node:process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { socketInodesAsync, tcpConnections } from "../src/proc.ts";
import { establishedByPort } from "../src/net/sock_diag.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { counts: { type: "string", default: "10" } },
});
const counts = Number(values.counts);

function cpuMs(): number {
  const f = readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

const server = net.createServer(() => {}).listen(0, "127.0.0.1");
await new Promise((r) => server.once("listening", r));
const port = (server.address() as net.AddressInfo).port;
const clients = [...Array(20)].map(() => net.connect(port, "127.0.0.1"));
await new Promise((r) => setTimeout(r, 300));

const ways: Record<string, () => Promise<number | null>> = {
  "/proc/net/tcp": () => tcpConnections(port),
  "sock_diag": async () => {
    const [by, mine] = await Promise.all([establishedByPort([port]), socketInodesAsync("self")]);
    return by ? [...by.get(port)!].filter((i) => mine.has(i)).length : null;
  },
};
const lines = readFileSync("/proc/net/tcp", "latin1").split("\n").length - 2 +
  readFileSync("/proc/net/tcp6", "latin1").split("\n").length - 2;
const runtime = process.versions.bun
  ? `bun ${process.versions.bun}`
  : `deno ${process.versions.deno}`;
console.log(`${runtime}: ${lines} TCP sockets in the namespace, 20 connections counted\n`);
console.log("| way | count | wall ms/count | CPU ms/count | longest event-loop gap ms |");
console.log("| --- | --- | --- | --- | --- |");
for (const [name, count] of Object.entries(ways)) {
  const n0 = await count(); // warm-up
  const cpu0 = cpuMs(), t0 = performance.now();
  let worst = 0, last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  for (let i = 0; i < counts; i++) await count();
  clearInterval(timer);
  const wall = (performance.now() - t0) / counts, cpu = (cpuMs() - cpu0) / counts;
  console.log(`| ${name} | ${n0} | ${wall.toFixed(1)} | ${cpu.toFixed(1)} | ${worst.toFixed(1)} |`);
}
for (const c of clients) c.destroy();
server.close();
process.exit(0);
