/**
 * UDP echo servers on instar's listenDatagram() against the runtime's own UDP
 * socket, in the same run, rounds interleaved (order rotated each round):
 * - `bare`: Deno `node:dgram` / `Bun.udpSocket`, echoing from the callback;
 * - `instar`: `listenDatagram()` (Deno: `node:dgram` transplanted; Bun:
 *   `Bun.udpSocket({ fd })`), `for await` + `send()`;
 * - `instar-poll`: the portable reader (recvfrom + poll worker), for reference.
 *
 * Each server is a child process of the same runtime; the client (this
 * process, `node:dgram`, 127.0.0.1) runs two workloads:
 * - `rtt`: one client, sequential 64-byte echoes: p50 latency, echoes/s;
 * - `window`: 4 clients with 16 datagrams each in flight: echoes/s.
 * CPU per echo is the server process's utime+stime (from /proc) over the run.
 *
 * Usage: deno run -A bench/datagram.ts [--rounds 5] [--seconds 1]
 *        bun bench/datagram.ts [same options]
 *
 * @module
 */

import { spawn } from "node:child_process";
import dgram from "node:dgram";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { openDatagram } from "../src/net/datagram.ts";
import { cpuMs } from "./wrk_run.ts";

const SCRIPT = fileURLToPath(import.meta.url);
const IS_BUN = "Bun" in globalThis;
const MODES = ["bare", "instar", "instar-poll"] as const;
type Mode = typeof MODES[number];

interface BunUdp {
  send(d: Uint8Array, port: number, host: string): boolean;
  port: number;
}

// ---------------------------------------------------------------- servers (child process)

async function serve(mode: Mode): Promise<number> {
  if (mode !== "bare") {
    const backend = mode === "instar" ? "auto" : "poll";
    const sock = await openDatagram({ hostname: "127.0.0.1", port: 0 }, { backend });
    (async () => {
      for await (const { data, addr } of sock) await sock.send(data, addr);
    })();
    return (sock.addr as { port: number }).port;
  }
  if (IS_BUN) {
    const B = (globalThis as unknown as {
      Bun: { udpSocket(o: Record<string, unknown>): Promise<BunUdp> };
    }).Bun;
    const s = await B.udpSocket({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data: (s: BunUdp, d: Uint8Array, port: number, host: string) => s.send(d, port, host),
      },
    });
    return s.port;
  }
  const s = dgram.createSocket("udp4");
  s.on("message", (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((r) => s.bind({ port: 0, address: "127.0.0.1" }, () => r()));
  return s.address().port;
}

// ---------------------------------------------------------------- client

async function client(): Promise<dgram.Socket> {
  const c = dgram.createSocket("udp4");
  await new Promise<void>((r) => c.bind({ port: 0, address: "127.0.0.1" }, () => r()));
  return c;
}

/** One client, one datagram in flight. */
async function rtt(port: number, ms: number): Promise<{ n: number; p50: number }> {
  const c = await client();
  const lat: number[] = [];
  const payload = new Uint8Array(64);
  const end = performance.now() + ms;
  await new Promise<void>((resolve) => {
    let t0 = 0;
    const next = () => {
      if (performance.now() >= end) return resolve();
      t0 = performance.now();
      c.send(payload, port, "127.0.0.1");
    };
    c.on("message", () => {
      lat.push(performance.now() - t0);
      next();
    });
    next();
  });
  c.close();
  lat.sort((a, b) => a - b);
  return { n: lat.length, p50: lat[Math.floor(lat.length / 2)] * 1000 };
}

/** `clients` clients with `window` datagrams each in flight (a lost one is not replaced). */
async function windowed(port: number, ms: number, clients = 4, window = 16): Promise<number> {
  let n = 0;
  const end = performance.now() + ms;
  const payload = new Uint8Array(64);
  await Promise.all(Array.from({ length: clients }, async () => {
    const c = await client();
    await new Promise<void>((resolve) => {
      c.on("message", () => {
        n++;
        if (performance.now() < end) c.send(payload, port, "127.0.0.1");
      });
      for (let i = 0; i < window; i++) c.send(payload, port, "127.0.0.1");
      setTimeout(resolve, ms + 50);
    });
    c.close();
  }));
  return n;
}

interface Row {
  rttPerSec: number;
  p50: number;
  winPerSec: number;
  cpuUsPerEcho: number;
}

async function measure(mode: Mode, seconds: number): Promise<Row> {
  const cmd = IS_BUN ? [process.execPath, SCRIPT] : [process.execPath, "run", "-A", SCRIPT];
  const child = spawn(cmd[0], [...cmd.slice(1), "--serve", mode], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((r) =>
    child.stdout!.once("data", (d) => r(Number(String(d))))
  );
  try {
    await rtt(port, 200); // warm-up
    const cpu0 = cpuMs(child.pid!);
    const r = await rtt(port, seconds * 1000);
    const w = await windowed(port, seconds * 1000);
    const cpu = cpuMs(child.pid!) - cpu0;
    return {
      rttPerSec: r.n / seconds,
      p50: r.p50,
      winPerSec: w / seconds,
      cpuUsPerEcho: (cpu * 1000) / (r.n + w),
    };
  } finally {
    child.kill("SIGKILL");
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      serve: { type: "string" },
      rounds: { type: "string", default: "5" },
      seconds: { type: "string", default: "1" },
    },
  });
  if (values.serve) {
    process.stdout.write(`${await serve(values.serve as Mode)}\n`);
    return;
  }
  const rounds = Number(values.rounds), seconds = Number(values.seconds);
  const rows = new Map<Mode, Row[]>(MODES.map((m) => [m, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < MODES.length; i++) {
      const mode = MODES[(i + round) % MODES.length];
      rows.get(mode)!.push(await measure(mode, seconds));
    }
  }
  const bare = rows.get("bare")!;
  const base = {
    rtt: median(bare.map((r) => r.rttPerSec)),
    win: median(bare.map((r) => r.winPerSec)),
  };
  const runtime = IS_BUN ? "bun" : "deno";
  console.log(
    "| runtime | server | rtt p50 (µs) | rtt echoes/s | window echoes/s | CPU µs/echo | rtt ratio | window ratio |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const [mode, rs] of rows) {
    const m = (f: (r: Row) => number) => median(rs.map(f));
    console.log(
      `| ${runtime} | ${mode} | ${m((r) => r.p50).toFixed(1)} | ${
        m((r) => r.rttPerSec).toFixed(0)
      } | ` +
        `${m((r) => r.winPerSec).toFixed(0)} | ${m((r) => r.cpuUsPerEcho).toFixed(1)} | ` +
        `${(m((r) => r.rttPerSec) / base.rtt).toFixed(2)}x | ${
          (m((r) => r.winPerSec) / base.win).toFixed(2)
        }x |`,
    );
  }
}

await main();
