/**
 * A bounded HTTP/1.1 load client used by the tests, the benchmarks (bench/)
 * and the demo (scripts/demo.ts), which import it from here. It counts every
 * failure by kind (refused, reset, EOF without a response, timeout, bad
 * status) and only ever talks to loopback addresses. Test support, not a test
 * file: the test runners only run `*_test.ts`.
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";

/**
 * The pace of the tests' loads: each connection waits this many ms between an
 * answer and its next request (`pauseMs`). An upgrade's time is the new
 * generation's start-up, which is CPU; an unpaced load takes every cycle the
 * start-up would use, and under `npm test` (several files at once on 2 cores, the
 * CPU saturated throughout) it took a share of both cores from every other file for
 * as long as its own stretched upgrades lasted. Paced, dozens of connections still
 * send over a thousand requests a second, each connection about ten while a drain
 * waits its 250 ms, and keep-alive connections are also idle between requests when
 * a drain meets them, as real clients' are (docs/testing.md).
 */
export const TEST_PAUSE_MS = 25;

/** Options of {@link runLoad}. */
export interface LoadOptions {
  /** Loopback address to hit (127.0.0.1 or ::1). */
  hostname?: string;
  /** Port to hit. */
  port: number;
  /** Concurrent connections (default 20). */
  connections?: number;
  /** Stop after this many ms (required bound). */
  durationMs: number;
  /** Stop after this many requests in total (default unbounded within the duration). */
  maxRequests?: number;
  /**
   * Each connection waits this many ms after an answer before its next request
   * (default 0: at once). A paced load leaves CPU for the generations that start
   * during an upgrade, and leaves keep-alive connections idle between requests,
   * as real clients do, so that a drain meets idle connections too.
   */
  pauseMs?: number;
  /** Reuse connections (default true); false opens one connection per request. */
  keepAlive?: boolean;
  /** Per-request timeout in ms (default 5000). */
  timeoutMs?: number;
  /** Request path (default "/"). */
  path?: string;
  /** Send POSTs with a body of this many bytes instead of GETs. */
  postBytes?: number;
  /** Called when a response arrives, with its body. */
  onResponse?: (body: string) => void;
  /**
   * Called for every successful request with the `performance.now()` at which
   * it was sent and its latency in ms (e.g. to tell requests answered during
   * an upgrade from the others).
   */
  onLatency?: (startMs: number, ms: number) => void;
  /**
   * Called for every failed request with its kind, the `performance.now()` at
   * which it was sent and when it failed (e.g. to tell which upgrade it fell in).
   */
  onFailure?: (kind: FailureKind, startMs: number, endMs: number, msg: string) => void;
  /** Stops early when it resolves. */
  signal?: AbortSignal;
  /**
   * HTTPS (HTTP/1.1 over TLS, any certificate accepted: the tests make their
   * own); a failed handshake counts as a failure of the request it carried.
   */
  tls?: boolean;
  /** With `tls`: called with the SHA-256 fingerprint of each connection's server certificate. */
  onCertificate?: (fingerprint256: string) => void;
}

/** What {@link runLoad} measured. */
export interface LoadResult {
  /** Requests started (each ends in `ok` or in `failed`: none is re-sent). */
  sent: number;
  /** Responses with status 200. */
  ok: number;
  /** Failures by kind. */
  failures: {
    refused: number;
    reset: number;
    eof: number;
    timeout: number;
    status: number;
    other: number;
  };
  /** Total failures. */
  failed: number;
  /** Latencies of successful requests, ms. */
  latencies: number[];
  /** Successful responses per second of the run (index = second). */
  perSecond: number[];
  /** Wall time of the run, ms. */
  elapsedMs: number;
  /** The first few failure messages, for diagnosis. */
  samples: string[];
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

// Load is only ever sent to this machine.
function loopbackHost(hostname = "127.0.0.1"): string {
  if (!LOOPBACK.test(hostname)) {
    throw new Error(`load client only targets loopback, not ${hostname}`);
  }
  return hostname;
}

function emptyResult(): LoadResult {
  return {
    sent: 0,
    ok: 0,
    failures: { refused: 0, reset: 0, eof: 0, timeout: 0, status: 0, other: 0 },
    failed: 0,
    latencies: [],
    perSecond: [],
    elapsedMs: 0,
    samples: [],
  };
}

/** A kind of failure counted in {@link LoadResult.failures}. */
export type FailureKind = keyof LoadResult["failures"];

function classify(err: NodeJS.ErrnoException): FailureKind {
  const code = err.code ?? err.message;
  if (code === "ECONNREFUSED") return "refused";
  if (code === "ECONNRESET" || code === "EPIPE") return "reset";
  if (code === "TIMEOUT") return "timeout";
  if (code === "STATUS") return "status";
  if (err.message === "EOF") return "eof";
  return "other";
}

function record(res: LoadResult, kind: FailureKind, msg: string): void {
  res.failures[kind]++;
  res.failed++;
  if (res.samples.length < 10) res.samples.push(`${kind}: ${msg}`);
}

function success(res: LoadResult, start: number, t0: number): number {
  const t1 = performance.now();
  res.ok++;
  res.latencies.push(t1 - t0);
  const sec = Math.floor((t1 - start) / 1000);
  res.perSecond[sec] = (res.perSecond[sec] ?? 0) + 1;
  return t1 - t0;
}

function requestText(o: LoadOptions, hostname: string, keepAlive: boolean): string {
  const head = `${o.postBytes === undefined ? "GET" : "POST"} ${o.path ?? "/"} HTTP/1.1\r\n` +
    `Host: ${hostname}:${o.port}\r\n` + (keepAlive ? "" : "Connection: close\r\n");
  if (o.postBytes === undefined) return head + "\r\n";
  return head + `Content-Length: ${o.postBytes}\r\n\r\n` + "x".repeat(o.postBytes);
}

/**
 * Runs load against a loopback HTTP server until the duration or request
 * bound is reached. It never re-sends a request.
 */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const hostname = loopbackHost(o.hostname);
  const start = performance.now();
  const deadline = start + o.durationMs;
  const res = emptyResult();
  let issued = 0;
  const keepAlive = o.keepAlive ?? true;
  const timeoutMs = o.timeoutMs ?? 5000;
  const request = requestText(o, hostname, keepAlive);
  const stopped = () => performance.now() >= deadline || o.signal?.aborted === true;
  const more = () => !stopped() && (o.maxRequests === undefined || issued < o.maxRequests);

  const worker = async () => {
    let sock: net.Socket | null = null;
    let buf = "";
    let waiter: ((e: Error | null) => void) | null = null;
    const open = () =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = o.tls
          ? tls.connect({
            host: hostname,
            port: o.port,
            rejectUnauthorized: false,
            ALPNProtocols: ["http/1.1"],
          })
          : net.connect({ host: hostname, port: o.port });
        s.setNoDelay(true);
        s.setEncoding("latin1");
        s.once(o.tls ? "secureConnect" : "connect", () => {
          const cert = o.tls ? (s as tls.TLSSocket).getPeerCertificate() : undefined;
          if (cert?.fingerprint256) o.onCertificate?.(cert.fingerprint256);
          resolve(s);
        });
        s.once("error", reject);
        s.on("data", (d: string) => {
          buf += d;
          waiter?.(null);
        });
        s.on("close", () => {
          waiter?.(new Error("EOF"));
          if (sock === s) sock = null;
        });
        s.on("error", (e) => waiter?.(e));
      });
    // Never re-sends: a request whose connection closes before its response is a failure,
    // as it is for wrk and for any client sending a POST.
    while (more()) {
      issued++;
      const t0 = performance.now();
      try {
        if (!sock || sock.destroyed) {
          buf = "";
          sock = await open();
        }
        const s: net.Socket = sock;
        s.write(request);
        const body = await new Promise<string>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(Object.assign(new Error("timeout"), { code: "TIMEOUT" })),
            timeoutMs,
          );
          const check = (e: Error | null) => {
            const end = buf.indexOf("\r\n\r\n");
            if (end >= 0) {
              const head = buf.slice(0, end);
              const m = /content-length:\s*(\d+)/i.exec(head);
              const len = m ? Number(m[1]) : 0;
              if (buf.length >= end + 4 + len) {
                const status = Number(head.slice(9, 12));
                const b = buf.slice(end + 4, end + 4 + len);
                buf = buf.slice(end + 4 + len);
                clearTimeout(timer);
                waiter = null;
                if (!keepAlive || /connection:\s*close/i.test(head)) {
                  s.destroy();
                  if (sock === s) sock = null;
                }
                if (status !== 200) {
                  return reject(Object.assign(new Error(`status ${status}`), { code: "STATUS" }));
                }
                return resolve(b);
              }
            }
            if (e) {
              clearTimeout(timer);
              waiter = null;
              reject(e);
            }
          };
          waiter = check;
          check(null);
        });
        const ms = success(res, start, t0);
        o.onLatency?.(t0, ms);
        o.onResponse?.(body);
        if (o.pauseMs) await new Promise((r) => setTimeout(r, o.pauseMs));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        sock?.destroy();
        sock = null;
        const kind = classify(err), msg = `${err.code ?? err.message}: ${err.message}`;
        record(res, kind, msg);
        o.onFailure?.(kind, t0, performance.now(), msg);
      }
    }
    sock?.destroy();
  };
  await Promise.all(Array.from({ length: o.connections ?? 20 }, worker));
  res.sent = issued;
  res.elapsedMs = performance.now() - start;
  for (let i = 0; i < res.perSecond.length; i++) res.perSecond[i] ??= 0;
  return res;
}

/** The p-th percentile (0–100) of `values`. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Options of {@link runEchoLoad}. */
export interface EchoLoadOptions {
  /** Loopback address (default 127.0.0.1). */
  hostname?: string;
  /** Port of the echo server. */
  port: number;
  /** Concurrent workers (default 10). */
  connections?: number;
  /** Stop after this many ms. */
  durationMs: number;
  /** Per-exchange timeout (default 5000 ms). */
  timeoutMs?: number;
  /** Stops early when aborted. */
  signal?: AbortSignal;
  /** Each worker waits this many ms after an exchange before its next one (default 0). */
  pauseMs?: number;
}

/**
 * Opens a connection, sends a line, waits for the same bytes back and closes,
 * over and over, counting every failure by kind.
 */
export async function runEchoLoad(o: EchoLoadOptions): Promise<LoadResult> {
  const hostname = loopbackHost(o.hostname);
  const start = performance.now();
  const deadline = start + o.durationMs;
  const res = emptyResult();
  let seq = 0;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const msg = `ping ${seq++} ${"x".repeat(32)}\n`;
      let got = "";
      const s = net.connect({ host: hostname, port: o.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(Object.assign(new Error("timeout"), { code: "TIMEOUT" }));
      }, o.timeoutMs ?? 5000);
      s.setEncoding("latin1");
      s.on("connect", () => s.write(msg));
      s.on("data", (d: string) => {
        got += d;
        if (got.length >= msg.length) {
          clearTimeout(timer);
          s.end();
          s.destroy();
          if (got === msg) resolve();
          else {reject(
              Object.assign(new Error(`echo mismatch: ${JSON.stringify(got)}`), { code: "STATUS" }),
            );}
        }
      });
      s.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      s.on("close", () => {
        clearTimeout(timer);
        reject(new Error("EOF"));
      });
    });
  const worker = async () => {
    while (performance.now() < deadline && !o.signal?.aborted) {
      res.sent++;
      const t0 = performance.now();
      try {
        await one();
        success(res, start, t0);
        if (o.pauseMs) await new Promise((r) => setTimeout(r, o.pauseMs));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        record(res, classify(err), err.message);
      }
    }
  };
  await Promise.all(Array.from({ length: o.connections ?? 10 }, worker));
  res.elapsedMs = performance.now() - start;
  for (let i = 0; i < res.perSecond.length; i++) res.perSecond[i] ??= 0;
  return res;
}
