/**
 * The instar demo: an HTTP server under constant load is upgraded several
 * times, once to a broken deploy, and not a single request fails.
 *
 *   npm run demo                       # the server runs on Deno
 *   npm run demo -- --runtime bun      # the server runs on Bun
 *
 * It starts examples/http_server.ts from a temporary deploy directory, drives
 * keep-alive HTTP load against it on 127.0.0.1 (tests/support/load_client.ts), sends
 * SIGHUP for every upgrade, swaps in a deploy that crashes at start-up for one
 * of them, prints a live progress line on stderr, then a table, and writes
 * demo-report.svg (requests per second over time, upgrades marked). Exits 1 if
 * a request failed or an upgrade did not end as expected. The load client
 * never re-sends a request: one whose keep-alive connection is closed before
 * its response arrived counts as failed (eof or reset), as it would for wrk.
 *
 * Flags: --runtime deno|bun, --connections <n> (20), --upgrades <n> (4, the
 * second one broken), --out <file.svg> (demo-report.svg).
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runLoad } from "../tests/support/load_client.ts";
import { alive, killAll, ROOT, runtimeCmd, sleep } from "../tests/support/procs.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runtime: { type: "string", default: "deno" },
    connections: { type: "string", default: "20" },
    upgrades: { type: "string", default: "4" },
    out: { type: "string", default: join(ROOT, "demo-report.svg") },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (values.help) {
  console.log(
    "usage: demo [--runtime deno|bun] [--connections 20] [--upgrades 4] [--out file.svg]",
  );
  process.exit(0);
}
const runtime = values.runtime as string;
if (runtime !== "deno" && runtime !== "bun") {
  console.error(`demo: --runtime ${runtime}: expected deno or bun`);
  process.exit(2);
}
const connections = Number(values.connections);
const upgrades = Number(values.upgrades);
if (!(connections >= 1 && connections <= 200) || !(upgrades >= 2 && upgrades <= 20)) {
  console.error("demo: --connections must be 1–200 and --upgrades 2–20");
  process.exit(2);
}
const BROKEN_AT = 2; // the second upgrade deploys a program that crashes at start-up

// ------------------------------------------------------------ the deploy directory

const deployDir = mkdtempSync(join(tmpdir(), "instar-demo-"));
const script = join(deployDir, "server.ts");
const GOOD = `import ${JSON.stringify(join(ROOT, "examples", "http_server.ts"))};\n`;
const BROKEN = `throw new Error("demo: this deploy is broken (it throws at start-up)");\n`;
const deploy = (source: string) => writeFileSync(script, source);
deploy(GOOD);

// ------------------------------------------------------------ the server and its log

interface Upgrade {
  n: number;
  broken: boolean;
  at: number; // ms since the load started
  result?: "succeeded" | "failed";
  detail?: string;
  fromPid: number;
  toPid?: number;
  generation?: number;
  readyMs?: number;
  drainedMs?: number;
}

const log: string[] = [];
let onLine: (line: string) => void = () => {};
const flags = ["--port", "0", "--ready-timeout", "20000", "--drain-timeout", "5000"];
const cmd = runtimeCmd(runtime, script, flags);
const server: ChildProcess = spawn(cmd[0], cmd.slice(1), {
  stdio: ["ignore", "pipe", "pipe"],
  env: { ...process.env, NO_COLOR: "1" },
});
const pids = new Set<number>([server.pid!]);
for (const stream of [server.stdout!, server.stderr!]) {
  let rest = "";
  stream.on("data", (d: Uint8Array) => {
    rest += new TextDecoder().decode(d);
    const parts = rest.split("\n");
    rest = parts.pop()!;
    for (const line of parts) {
      log.push(line);
      const m = /pid=(\d+)/.exec(line);
      if (m) pids.add(Number(m[1]));
      onLine(line);
    }
  });
}

function waitLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      onLine = () => {};
      reject(new Error(`no line matching ${re} within ${timeoutMs} ms`));
    }, timeoutMs);
    onLine = (line) => {
      const m = line.match(re);
      if (m) {
        clearTimeout(timer);
        onLine = () => {};
        resolve(m);
      }
    };
  });
}

function cleanup(): void {
  killAll(pids);
  rmSync(deployDir, { recursive: true, force: true });
}

// ------------------------------------------------------------ progress on stderr

const tty = process.stderr.isTTY === true;
let status = "starting";
let requests = 0;
let lastRequests = 0;
let lastTick = 0;
let rate = 0;
let currentPid = server.pid!;
let generation = 1;
let t0 = 0;
let failedSoFar = 0;

function progressLine(): string {
  const t = t0 ? ((performance.now() - t0) / 1000).toFixed(1).padStart(5) : "  0.0";
  return `${t} s  gen ${generation} (pid ${currentPid})  ${
    String(Math.round(rate)).padStart(6)
  } req/s` +
    `  ${String(requests).padStart(8)} requests  ${failedSoFar} failed  ${status}`;
}
function say(line: string): void {
  process.stderr.write(tty ? `\r\x1b[K${line}\n${progressLine()}` : `${line}\n`);
}

const ticker = setInterval(() => {
  const now = performance.now();
  if (lastTick) rate = ((requests - lastRequests) * 1000) / (now - lastTick);
  lastTick = now;
  lastRequests = requests;
  if (tty) process.stderr.write(`\r\x1b[K${progressLine()}`);
}, 250);

// ------------------------------------------------------------ the run

const BUCKET_MS = 250;
const buckets: number[] = [];
const perPid = new Map<number, number>();
const done: Upgrade[] = [];
let exitCode = 0;

try {
  const ready = await waitLine(/gen=1\] ready on 127\.0\.0\.1:(\d+)/, 30_000);
  const port = Number(ready[1]);
  say(`${runtime} server pid ${server.pid} ready on 127.0.0.1:${port}`);

  const ac = new AbortController();
  t0 = performance.now();
  status = "warming up";
  const load = runLoad({
    port,
    connections,
    durationMs: 50_000, // a bound in case something hangs; the run aborts it much sooner
    signal: ac.signal,
    timeoutMs: 10_000,
    onResponse: (body) => {
      requests++;
      const b = Math.floor((performance.now() - t0) / BUCKET_MS);
      buckets[b] = (buckets[b] ?? 0) + 1;
      const m = /pid (\d+)/.exec(body);
      if (m) perPid.set(Number(m[1]), (perPid.get(Number(m[1])) ?? 0) + 1);
    },
  });

  await sleep(1500);
  for (let n = 1; n <= upgrades; n++) {
    const broken = n === BROKEN_AT;
    const u: Upgrade = { n, broken, at: performance.now() - t0, fromPid: currentPid };
    if (broken) deploy(BROKEN);
    status = broken ? `upgrade ${n}: broken deploy…` : `upgrade ${n}…`;
    say(`upgrade ${n}: ${broken ? "deployed a broken build; " : ""}SIGHUP → pid ${currentPid}`);
    const result = waitLine(/pid=(\d+) gen=\d+\] upgrade-(succeeded|failed): (.*)/, 40_000);
    process.kill(currentPid, "SIGHUP");
    const m = await result;
    u.result = m[2] as "succeeded" | "failed";
    u.detail = m[3];
    if (broken) deploy(GOOD);
    if (u.result === "succeeded") {
      const ms = /pid (\d+) ready after (\d+) ms/.exec(m[3])!;
      u.toPid = Number(ms[1]);
      u.readyMs = Number(ms[2]);
      u.generation = generation + 1;
      const old = currentPid;
      currentPid = u.toPid;
      generation++;
      say(`upgrade ${n}: generation ${generation} (pid ${currentPid}) ready after ${u.readyMs} ms`);
      status = "old generation draining";
      const drainStart = performance.now();
      while (alive(old) && performance.now() - drainStart < 10_000) await sleep(20);
      u.drainedMs = Math.round(performance.now() - drainStart);
    } else {
      say(`upgrade ${n}: failed as expected? ${broken ? "yes" : "NO"} — ${m[3]}`);
    }
    if (u.result !== (broken ? "failed" : "succeeded")) exitCode = 1;
    done.push(u);
    status = "serving";
    await sleep(1500);
  }
  ac.abort();
  const r = await load;
  failedSoFar = r.failed;
  clearInterval(ticker);
  if (tty) process.stderr.write(`\r\x1b[K${progressLine()}\n`);

  process.kill(currentPid, "SIGTERM");
  for (let t = 0; t < 200 && alive(currentPid); t++) await sleep(25);

  // -------------------------------------------------------- the table
  const rows: string[][] = [[
    "#",
    "deploy",
    "result",
    "old pid",
    "new pid",
    "gen",
    "ready after",
    "old drained",
    "served by new",
  ]];
  for (const u of done) {
    rows.push([
      String(u.n),
      u.broken ? "broken" : "good",
      u.result === "succeeded" ? "ok" : `failed: ${u.detail?.split(":")[0]}`,
      String(u.fromPid),
      u.toPid ? String(u.toPid) : "-",
      u.generation ? String(u.generation) : "-",
      u.readyMs !== undefined ? `${u.readyMs} ms` : "-",
      u.drainedMs !== undefined ? `${u.drainedMs} ms` : "-",
      u.toPid ? String(perPid.get(u.toPid) ?? 0) : "-",
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const fmt = (row: string[]) => row.map((c, i) => c.padEnd(widths[i])).join("  ");
  const elapsed = r.elapsedMs / 1000;
  console.log(
    `\ninstar demo on ${runtime}: ${connections} keep-alive connections for ${
      elapsed.toFixed(1)
    } s`,
  );
  console.log(fmt(rows[0]));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows.slice(1)) console.log(fmt(row));
  console.log(
    `\nrequests ${r.ok + r.failed}  ok ${r.ok}  failed ${r.failed} ${JSON.stringify(r.failures)}` +
      `  (${Math.round(r.ok / elapsed)} req/s; nothing re-sent: a connection closed under a ` +
      `request counts as failed)`,
  );
  console.log(
    `generations ${generation}  pids ${[...perPid.keys()].join(" → ")}  served: ` +
      [...perPid].map(([pid, n]) => `${pid}=${n}`).join(" "),
  );
  if (r.failed) {
    exitCode = 1;
    console.log(`failure samples: ${r.samples.join("; ")}`);
  }

  const svg = renderSvg(buckets, done, r.elapsedMs, {
    title: `instar demo (${runtime}): ${r.ok} requests, ${r.failed} failed, ${
      done.filter((u) => u.result === "succeeded").length
    } upgrades + 1 broken deploy`,
  });
  const out = resolve(values.out as string);
  writeFileSync(out, svg);
  console.log(`report: ${out}`);
  console.log(exitCode === 0 ? "result: zero failed requests" : "result: FAILED");
} catch (err) {
  clearInterval(ticker);
  process.stderr.write(`\ndemo failed: ${(err as Error).message}\nserver log:\n`);
  process.stderr.write(log.slice(-30).join("\n") + "\n");
  exitCode = 1;
} finally {
  clearInterval(ticker);
  cleanup();
}
process.exit(exitCode);

// ------------------------------------------------------------ the SVG report

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function renderSvg(
  counts: number[],
  ups: Upgrade[],
  elapsedMs: number,
  { title }: { title: string },
): string {
  const W = 900, H = 360, L = 70, R = 20, T = 50, B = 50;
  const n = Math.max(1, Math.floor(elapsedMs / BUCKET_MS)); // drop the last, partial bucket
  const rates = Array.from({ length: n }, (_, i) => ((counts[i] ?? 0) * 1000) / BUCKET_MS);
  const max = Math.max(1, ...rates);
  const step = niceStep(max / 4);
  const top = Math.ceil(max / step) * step;
  const x = (ms: number) => L + (ms / (n * BUCKET_MS)) * (W - L - R);
  const y = (v: number) => T + (1 - v / top) * (H - T - B);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${L}" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
  );
  for (let v = 0; v <= top; v += step) {
    parts.push(
      `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`,
      `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" fill="#555">${fmtNum(v)}</text>`,
    );
  }
  const secs = Math.floor(elapsedMs / 1000);
  const every = secs > 30 ? 5 : secs > 12 ? 2 : 1;
  for (let s = 0; s <= secs; s += every) {
    parts.push(
      `<text x="${x(s * 1000)}" y="${H - B + 16}" text-anchor="middle" fill="#555">${s}</text>`,
    );
  }
  parts.push(
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle" fill="#333">seconds</text>`,
    `<text x="16" y="${(T + H - B) / 2}" transform="rotate(-90 16 ${(T + H - B) / 2})" ` +
      `text-anchor="middle" fill="#333">requests/s</text>`,
  );
  for (const u of ups) {
    const ok = u.result === "succeeded";
    const color = ok ? "#2e7d32" : "#c62828";
    const x0 = x(u.at);
    if (ok && u.readyMs !== undefined) {
      parts.push(
        `<rect x="${x0}" y="${T}" width="${Math.max(1, x(u.at + u.readyMs) - x0)}" ` +
          `height="${H - T - B}" fill="${color}" fill-opacity="0.12"/>`,
      );
    }
    const label = ok
      ? `gen ${u.generation} (${u.readyMs} ms)`
      : `broken deploy (${u.detail?.split(":")[0]}): old generation serves on`;
    parts.push(
      `<line x1="${x0}" x2="${x0}" y1="${T}" y2="${
        H - B
      }" stroke="${color}" stroke-dasharray="4 3"/>`,
      `<text x="${x0 + 4}" y="${T + 12 + (u.n % 2) * 14}" fill="${color}">${esc(label)}</text>`,
    );
  }
  const pts = rates.map((v, i) => `${x((i + 0.5) * BUCKET_MS).toFixed(1)},${y(v).toFixed(1)}`);
  parts.push(
    `<polyline points="${pts.join(" ")}" fill="none" stroke="#1565c0" stroke-width="1.6"/>`,
    `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`,
    `<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`,
    `</svg>`,
  );
  return parts.join("\n") + "\n";
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function fmtNum(v: number): string {
  return v >= 1000 ? `${(v / 1000).toFixed(v % 1000 ? 1 : 0)}k` : String(v);
}
