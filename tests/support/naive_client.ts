/**
 * A naive keep-alive client, like a pool of Python `http.client` connections:
 * each connection sends a POST, reads the answer, stays idle for a random
 * while, and sends its next POST on the same connection without checking
 * whether the server closed it meanwhile. A request that meets a closed
 * connection (EPIPE, reset, EOF before an answer) is lost: it is counted,
 * never re-sent, and the next request opens a new connection. A connection
 * whose answer said `Connection: close` is closed by the client, as
 * `http.client` does, and the next request opens a new one. Test support
 * (tests/idle_keep_test.ts, bench/idle_keep.ts); loopback only.
 *
 * @module
 */

import net from "node:net";

/** Options of {@link runNaiveClient}. */
export interface NaiveOptions {
  /** Loopback port to hit (127.0.0.1). */
  port: number;
  /** Connections in the pool, each with one request at a time. */
  connections: number;
  /** Shortest idle time between two requests of a connection, in ms. */
  idleMinMs: number;
  /** Longest idle time, in ms. */
  idleMaxMs: number;
  /** Sends no request after this many ms (the ones on their way finish). */
  durationMs: number;
  /** How long an answer may take before the request counts as lost (default 10 s). */
  timeoutMs?: number;
}

/** What {@link runNaiveClient} counted. */
export interface NaiveResult {
  /** Requests sent. */
  sent: number;
  /** Requests answered with status 200. */
  ok: number;
  /** Requests lost, by what happened (e.g. `EPIPE`, `ECONNRESET`, `eof`, `timeout`). */
  lost: Record<string, number>;
  /** Answers that said `Connection: close`. */
  closeAnswers: number;
}

const BODY = "x".repeat(64);
const REQUEST = `POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n` +
  `Content-Length: ${BODY.length}\r\n\r\n${BODY}`;

/** One connection as a naive client sees it: it notices nothing until it sends. */
export class NaiveConnection {
  #sock: net.Socket;
  #buf = "";
  #ended: string | undefined;
  #wake: (() => void) | undefined;
  /** Resolves once connected (or failed: the first request then fails). */
  readonly connected: Promise<void>;

  /** Connects to 127.0.0.1:`port`. */
  constructor(port: number) {
    this.#sock = net.connect({ host: "127.0.0.1", port });
    this.#sock.setEncoding("latin1");
    // A refused connection fails the request it was opened for.
    this.connected = new Promise((resolve) => {
      this.#sock.once("connect", () => resolve());
      this.#sock.once("error", () => resolve());
    });
    this.#sock.on("data", (d: string) => {
      this.#buf += d;
      this.#wake?.();
    });
    const end = (why: string) => {
      this.#ended ??= why;
      this.#wake?.();
    };
    this.#sock.on("end", () => end("eof"));
    this.#sock.on("error", (e: NodeJS.ErrnoException) => end(e.code ?? e.message));
    this.#sock.on("close", () => end("eof"));
  }

  // Resolves with one answer's status and whether it said Connection: close; throws the end's cause.
  async #answer(timeoutMs: number): Promise<{ status: number; close: boolean }> {
    const until = performance.now() + timeoutMs;
    for (;;) {
      const head = this.#buf.indexOf("\r\n\r\n");
      if (head >= 0) {
        const headers = this.#buf.slice(0, head).toLowerCase();
        const len = Number(/content-length:\s*(\d+)/.exec(headers)?.[1] ?? "0");
        if (this.#buf.length >= head + 4 + len) {
          this.#buf = this.#buf.slice(head + 4 + len);
          const status = Number(headers.split(" ")[1]);
          return { status, close: /\r\nconnection:\s*close/.test(headers) };
        }
      }
      if (this.#ended) throw new Error(this.#ended);
      const left = until - performance.now();
      if (left <= 0) throw new Error("timeout");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Sends a POST as if the connection were open, and reads the answer. */
  request(timeoutMs: number): Promise<{ status: number; close: boolean }> {
    // http.client writes without looking: a connection the server closed fails on the write or
    // at the read (RemoteDisconnected), never before.
    if (!this.#sock.destroyed) this.#sock.write(REQUEST);
    else this.#ended ??= "EPIPE";
    return this.#answer(timeoutMs);
  }

  /** Closes the connection. */
  close(): void {
    this.#sock.destroy();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the pool for `durationMs`; resolves once every connection has its last answer. */
export async function runNaiveClient(o: NaiveOptions): Promise<NaiveResult> {
  const r: NaiveResult = { sent: 0, ok: 0, lost: {}, closeAnswers: 0 };
  const end = performance.now() + o.durationMs;
  const worker = async (i: number) => {
    // Start spread out, so the connections are idle at different moments.
    await sleep((i * (o.idleMaxMs - o.idleMinMs)) / o.connections);
    let conn: NaiveConnection | undefined;
    while (performance.now() < end) {
      const c = conn ?? new NaiveConnection(o.port);
      if (!conn) await c.connected;
      conn = c;
      r.sent++;
      try {
        const a = await c.request(o.timeoutMs ?? 10_000);
        if (a.status === 200) r.ok++;
        else r.lost[`status ${a.status}`] = (r.lost[`status ${a.status}`] ?? 0) + 1;
        if (a.close) {
          r.closeAnswers++;
          c.close();
          conn = undefined;
        }
      } catch (err) {
        const why = (err as Error).message;
        r.lost[why] = (r.lost[why] ?? 0) + 1;
        c.close();
        conn = undefined;
      }
      await sleep(o.idleMinMs + Math.random() * (o.idleMaxMs - o.idleMinMs));
    }
    conn?.close();
  };
  await Promise.all(Array.from({ length: o.connections }, (_, i) => worker(i)));
  return r;
}

/** How many requests {@link runNaiveClient} lost in all. */
export function lostCount(r: NaiveResult): number {
  return Object.values(r.lost).reduce((a, b) => a + b, 0);
}
