/**
 * Echo servers on instar's listen() against the runtime's own listener, in
 * the same run, rounds interleaved:
 * - Deno: `Deno.listen` vs instar (`Deno.listen` with the socket transplanted),
 *   both with the same read/write echo loop;
 * - Bun: `Bun.listen` with socket handlers (write straight from `data`) vs
 *   instar (`Bun.listen({ fd })` behind the pull-style Conn, read/write loop);
 * - both: instar's `node:net` fallback, for reference.
 *
 * Workloads (a client process of the same runtime, on 127.0.0.1):
 * - `rtt`: one connection, sequential 64-byte round trips: p50 latency, msgs/s;
 * - `tput`: 4 connections each streaming 64 KiB writes and reading the echo: MB/s.
 *
 * Usage: deno run -A bench/listener.ts [--rounds 5] [--seconds 1] [--no-fallback]
 *        bun bench/listener.ts [same options]
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as net from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { type Conn, type Listener, openListener } from "../src/net/listener.ts";
import type { NetAddr } from "../src/ffi/sockaddr.ts";

const SCRIPT = fileURLToPath(import.meta.url);
const IS_BUN = "Bun" in globalThis;
const RUNTIME = IS_BUN ? "bun" : "deno";

interface RawConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}
interface DenoNs {
  listen(o: { hostname: string; port: number }): AsyncIterable<RawConn> & {
    addr: NetAddr;
    close(): void;
  };
  connect(o: { hostname: string; port: number }): Promise<RawConn & { setNoDelay(): void }>;
  execPath(): string;
}
interface BunSocket {
  data: { pending: Uint8Array[] };
  write(d: Uint8Array): number;
  end(): void;
}
interface BunNs {
  listen(o: Record<string, unknown>): { port: number; stop(force?: boolean): void };
}
const G = globalThis as unknown as { Deno: DenoNs; Bun: BunNs };

// ---------------------------------------------------------------- servers

interface Server {
  port: number;
  close(): void;
}

async function writeAll(c: RawConn | Conn, p: Uint8Array): Promise<void> {
  for (let off = 0; off < p.byteLength;) off += await c.write(p.subarray(off));
}

function echoLoop(conn: RawConn | Conn): void {
  (async () => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) await writeAll(conn, buf.subarray(0, n));
    } catch {
      // the client went away
    }
    try {
      conn.close();
    } catch { /* already closed */ }
  })();
}

function serveLoop(it: AsyncIterable<RawConn | Conn>): void {
  (async () => {
    for await (const c of it) echoLoop(c);
  })();
}

async function startServer(kind: string): Promise<Server> {
  if (kind === "native" && !IS_BUN) {
    const l = G.Deno.listen({ hostname: "127.0.0.1", port: 0 });
    serveLoop(l);
    return { port: l.addr.port, close: () => l.close() };
  }
  if (kind === "native") {
    const flush = (s: BunSocket) => {
      const q = s.data.pending;
      while (q.length) {
        const n = s.write(q[0]);
        if (n === q[0].byteLength) q.shift();
        else {
          if (n > 0) q[0] = q[0].subarray(n);
          return;
        }
      }
    };
    const l = G.Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s: BunSocket) {
          s.data = { pending: [] };
        },
        data(s: BunSocket, d: Uint8Array) {
          if (s.data.pending.length) {
            s.data.pending.push(new Uint8Array(d));
            return;
          }
          const n = s.write(d);
          if (n < d.byteLength) s.data.pending.push(new Uint8Array(d.subarray(Math.max(n, 0))));
        },
        drain: flush,
      },
    });
    return { port: l.port, close: () => l.stop(true) };
  }
  const l: Listener = await openListener(
    { hostname: "127.0.0.1", port: 0 },
    kind === "instar" ? "auto" : "node",
  );
  serveLoop(l);
  return {
    port: (l.addr as NetAddr).port,
    close() {
      l.close();
      l.closeConnections();
    },
  };
}

// ---------------------------------------------------------------- client (child process)

interface Result {
  p50us?: number;
  msgsPerSec?: number;
  mbPerSec?: number;
}

/** A minimal client connection: Deno.connect in Deno, node:net in Bun. */
async function dial(port: number): Promise<RawConn> {
  if (!IS_BUN) {
    const c = await G.Deno.connect({ hostname: "127.0.0.1", port });
    c.setNoDelay();
    return c;
  }
  const s = net.connect({ host: "127.0.0.1", port, noDelay: true });
  await new Promise<void>((r, j) => {
    s.once("connect", () => r());
    s.once("error", j);
  });
  const chunks: Uint8Array[] = [];
  let eof = false;
  let wake: (() => void) | undefined;
  s.on("data", (d: Uint8Array) => {
    chunks.push(d);
    wake?.();
  });
  s.on("close", () => {
    eof = true;
    wake?.();
  });
  s.on("error", () => {});
  return {
    async read(p) {
      while (!chunks.length) {
        if (eof) return null;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      const c = chunks[0];
      const n = Math.min(c.byteLength, p.byteLength);
      p.set(c.subarray(0, n));
      if (n === c.byteLength) chunks.shift();
      else chunks[0] = c.subarray(n);
      return n;
    },
    write(p) {
      const copy = new Uint8Array(p);
      return new Promise((r) => {
        if (s.write(copy)) r(p.byteLength);
        else s.once("drain", () => r(p.byteLength));
      });
    },
    close: () => s.destroy(),
  };
}

async function clientRtt(port: number, ms: number): Promise<Result> {
  const c = await dial(port);
  const msg = new Uint8Array(64).fill(97), buf = new Uint8Array(64);
  const lat: number[] = [];
  const warm = performance.now() + 200, end = warm + ms;
  for (let t0 = performance.now(); t0 < end; t0 = performance.now()) {
    await writeAll(c, msg);
    for (let got = 0; got < 64;) {
      const n = await c.read(buf);
      if (n === null) throw new Error("server closed");
      got += n;
    }
    if (t0 >= warm) lat.push(performance.now() - t0);
  }
  c.close();
  lat.sort((a, b) => a - b);
  return { p50us: lat[lat.length >> 1] * 1000, msgsPerSec: lat.length / (ms / 1000) };
}

async function clientTput(port: number, ms: number): Promise<Result> {
  const conns = await Promise.all([1, 2, 3, 4].map(() => dial(port)));
  const chunk = new Uint8Array(64 * 1024).fill(98);
  let stop = false, counting = false, bytes = 0;
  const work = conns.map(async (c) => {
    const reader = (async () => {
      const buf = new Uint8Array(256 * 1024);
      for (let n; (n = await c.read(buf).catch(() => null)) !== null;) if (counting) bytes += n;
    })();
    while (!stop) await writeAll(c, chunk).catch(() => (stop = true));
    return reader;
  });
  await new Promise((r) => setTimeout(r, 200));
  counting = true;
  await new Promise((r) => setTimeout(r, ms));
  counting = false;
  stop = true;
  for (const c of conns) c.close();
  await Promise.race([Promise.all(work), new Promise((r) => setTimeout(r, 500))]);
  return { mbPerSec: bytes / 1e6 / (ms / 1000) };
}

// ---------------------------------------------------------------- driver

function runClient(port: number, workload: string, ms: number): Promise<Result> {
  const args = [SCRIPT, "--client", String(port), "--workload", workload, "--ms", String(ms)];
  const cmd = IS_BUN ? process.execPath : G.Deno.execPath();
  const full = IS_BUN ? args : ["run", "-A", "--no-check", ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, full, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d: Uint8Array) => (out += new TextDecoder().decode(d)));
    const timer = setTimeout(() => child.kill("SIGKILL"), ms + 20_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`client exited ${code}: ${out}`));
      else resolve(JSON.parse(out.trim().split("\n").pop()!));
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    client: { type: "string" },
    workload: { type: "string", default: "rtt" },
    ms: { type: "string", default: "1500" },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "1" },
    "no-fallback": { type: "boolean", default: false },
  },
});

if (values.client) {
  const port = Number(values.client), ms = Number(values.ms);
  const r = values.workload === "rtt" ? await clientRtt(port, ms) : await clientTput(port, ms);
  console.log(JSON.stringify(r));
  process.exit(0);
}

const rounds = Number(values.rounds), ms = Math.round(Number(values.seconds) * 1000);
const kinds = ["native", "instar", ...(values["no-fallback"] ? [] : ["node"])];
const label: Record<string, string> = {
  native: IS_BUN ? "Bun.listen (handlers)" : "Deno.listen",
  instar: "instar listen()",
  node: "instar listen() via node:net fallback",
};
const results: Record<string, Record<string, Result[]>> = { rtt: {}, tput: {} };
const t0 = performance.now();
for (let r = 0; r < rounds; r++) {
  // Rotate the order each round so no variant always runs first.
  const order = kinds.map((_, i) => kinds[(i + r) % kinds.length]);
  for (const workload of ["rtt", "tput"]) {
    for (const kind of order) {
      const server = await startServer(kind);
      try {
        const res = await runClient(server.port, workload, ms);
        (results[workload][kind] ??= []).push(res);
      } finally {
        server.close();
      }
    }
  }
}

const version = IS_BUN
  ? `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`;
console.log(`listener echo benchmark, ${version}, ${rounds} rounds x ${ms} ms, medians`);
console.log(
  "| runtime | server | rtt p50 (us) | rtt msgs/s | tput MB/s | msgs/s ratio | MB/s ratio |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
const base = {
  msgs: median(results.rtt.native.map((x) => x.msgsPerSec!)),
  mb: median(results.tput.native.map((x) => x.mbPerSec!)),
};
for (const kind of kinds) {
  const p50 = median(results.rtt[kind].map((x) => x.p50us!));
  const msgs = median(results.rtt[kind].map((x) => x.msgsPerSec!));
  const mb = median(results.tput[kind].map((x) => x.mbPerSec!));
  console.log(
    `| ${RUNTIME} | ${label[kind]} | ${p50.toFixed(1)} | ${msgs.toFixed(0)} | ${mb.toFixed(0)} | ` +
      `${(msgs / base.msgs).toFixed(2)}x | ${(mb / base.mb).toFixed(2)}x |`,
  );
}
console.log(`(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
process.exit(0);
