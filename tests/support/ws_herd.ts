/**
 * A herd of WebSockets on examples/ws_chat.ts that reconnect when their
 * generation tells them `draining`, moved through upgrades, while a prober in
 * its own process (http_prober.ts) times fresh HTTP requests. Shared by
 * tests/ws_herd_test.ts and bench/ws_herd.ts. Test support, not a test file.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Leftovers } from "./helpers.ts";
import { ROOT, RUNTIME, runtimeCmd, startServer } from "./helpers.ts";
import { startGenerations, upgradeByHup } from "./generations.ts";

/** A run of {@link herdThroughUpgrades}. */
export interface HerdRun {
  /** WebSockets kept open. */
  clients: number;
  /** Upgrades, each once the herd has moved to the generation before it. */
  upgrades: number;
  /** `--drain-timeout` of the example (ms). */
  drainTimeoutMs: number;
  /** `--close-spread` of the example (ms); absent: the example's default. */
  closeSpreadMs?: number;
  /** `--backlog` of the example; absent: the example's default. */
  backlog?: number;
  /** `--serve-mode` of the example. */
  mode?: "auto" | "transplant" | "fallback";
  /**
   * Clients that ignore the notices and stay until the old generation closes
   * them (one upgrade only): their closes are awaited and reported.
   */
  stay?: number;
  /** The server's runtime (default: this one, which runs the clients). */
  server?: "deno" | "bun";
  /** The prober's pause between requests (ms; default 20), in each of its `probeLanes` (default 4). */
  probeEveryMs?: number;
  probeLanes?: number;
}

/** What {@link herdThroughUpgrades} measured. */
export interface HerdOutcome {
  /** Handshakes that failed (each retried until it succeeded). */
  failedHandshakes: number;
  /** Per upgrade: when each client got its `draining` notice, in ms after the first one. */
  notices: number[][];
  /** Per upgrade: ms from the SIGHUP until every client had its welcome from the new generation. */
  moveMs: number[];
  /** The prober's requests: total ms of each, and those that failed. */
  probes: { ms: number[]; connectMs: number[]; failed: string[] };
  /** The staying clients' closes: code, and ms after the first notice of the (only) upgrade. */
  closes: { code: number; at: number }[];
  /** TcpExt ListenOverflows of this network namespace during the run (every process's). */
  listenOverflows: number;
}

// The welcome of ws_chat.ts, and its notice to a draining generation's clients.
const WELCOME = /^welcome pid (\d+)/;
const DRAINING = /^draining pid (\d+)/;
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** The clients and what happened to them; one object, no timer per client. */
class Herd {
  failed = 0;
  /** Welcomes by the pid that sent them. */
  welcomed = new Map<number, number>();
  notices: number[] = [];
  #wake: (() => void) | undefined;
  readonly open = new Set<WebSocket>();
  /** The pid that welcomed each open socket. */
  readonly pidOf = new WeakMap<WebSocket, number>();

  constructor(readonly url: string) {}

  /** A client that moves to the next generation when told; resolves once welcomed. */
  async join(): Promise<void> {
    for (;;) {
      try {
        return void await this.#connect();
      } catch {
        this.failed++;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  #connect(): Promise<void> {
    const ws = new WebSocket(this.url);
    return new Promise((resolve, reject) => {
      let welcomed = false, gaveUp = false;
      // A handshake unanswered for 10 s counts as failed (and is retried), as a browser's would.
      const timer = setTimeout(() => {
        gaveUp = true;
        ws.close();
        reject(new Error("no welcome within 10 s"));
      }, HANDSHAKE_TIMEOUT_MS);
      ws.onmessage = (e) => {
        const text = String(e.data);
        const w = WELCOME.exec(text);
        if (gaveUp) return;
        if (w && !welcomed) {
          welcomed = true;
          clearTimeout(timer);
          this.open.add(ws);
          const pid = Number(w[1]);
          this.pidOf.set(ws, pid);
          this.welcomed.set(pid, (this.welcomed.get(pid) ?? 0) + 1);
          this.#wake?.();
          resolve();
        } else if (DRAINING.test(text)) {
          this.notices.push(performance.now());
          // Move first, then leave: the client is never without a connection.
          void this.join().then(() => ws.close());
        }
      };
      ws.onclose = () => {
        this.open.delete(ws);
        clearTimeout(timer);
        if (!welcomed) reject(new Error("closed before the welcome"));
      };
    });
  }

  /** Resolves once `n` clients were welcomed by `pid`; rejects after `ms`. */
  async welcomedBy(pid: number, n: number, ms: number): Promise<void> {
    const end = performance.now() + ms;
    while ((this.welcomed.get(pid) ?? 0) < n) {
      const left = end - performance.now();
      if (left <= 0) {
        throw new Error(
          `only ${
            this.welcomed.get(pid) ?? 0
          } of ${n} clients reached pid ${pid}; ${this.notices.length} notices, ${this.failed} failed handshakes, ${this.open.size} open`,
        );
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  }

  #openByPid(): string {
    const by = new Map<number | undefined, number>();
    for (const ws of this.open) by.set(this.pidOf.get(ws), (by.get(this.pidOf.get(ws)) ?? 0) + 1);
    return JSON.stringify([...by]);
  }

  closeAll(): void {
    for (const ws of this.open) ws.close();
  }
}

/** `n` clients that ignore notices; resolves once they are open, with their closes to come. */
async function stayers(url: string, n: number): Promise<Promise<{ code: number; at: number }>[]> {
  const open = Array.from({ length: n }, () => {
    const ws = new WebSocket(url);
    const closed = new Promise<{ code: number; at: number }>((resolve) => {
      ws.onclose = (e) => resolve({ code: e.code, at: performance.now() });
    });
    // Wrapped: a promise resolved with a promise would wait for the close.
    return new Promise<{ closed: typeof closed }>((resolve, reject) => {
      ws.onopen = () => resolve({ closed });
      ws.onerror = () => reject(new Error("a staying client could not connect"));
    });
  });
  return (await Promise.all(open)).map((o) => o.closed);
}

function listenOverflows(): number {
  const lines = readFileSync("/proc/net/netstat", "utf8").split("\n");
  const i = lines.findIndex((l) => l.startsWith("TcpExt:"));
  const names = lines[i].split(" "), values = lines[i + 1].split(" ");
  return Number(values[names.indexOf("ListenOverflows")]);
}

/** Opens the herd (a few hundred handshakes at a time), moves it through `r.upgrades` upgrades. */
export async function herdThroughUpgrades(left: Leftovers, r: HerdRun): Promise<HerdOutcome> {
  const args = ["--drain-timeout", String(r.drainTimeoutMs), "--serve-mode", r.mode ?? "auto"];
  if (r.closeSpreadMs !== undefined) args.push("--close-spread", String(r.closeSpreadMs));
  if (r.backlog !== undefined) args.push("--backlog", String(r.backlog));
  const example = join(ROOT, "examples", "ws_chat.ts");
  const g = await startGenerations(left, example, args, 60_000, r.server ?? RUNTIME);
  const herd = new Herd(`ws://127.0.0.1:${g.port}/`);
  left.sockets.push({ close: () => herd.closeAll() });
  for (let i = 0; i < r.clients; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, r.clients - i) }, () => herd.join()));
  }
  const opening = herd.failed;
  const staying = await stayers(herd.url, r.stay ?? 0);
  const prober = startServer(
    runtimeCmd(RUNTIME, join(ROOT, "tests", "support", "http_prober.ts"), [
      String(g.port),
      String(r.probeEveryMs ?? 20),
      String(r.probeLanes ?? 4),
    ]),
  );
  left.servers.push(prober);
  const overflows = listenOverflows();
  const notices: number[][] = [], moveMs: number[] = [];
  const closes: { code: number; at: number }[] = [];
  try {
    await prober.waitFor(/^probe /, 30_000);
    let pid = g.server.pid;
    for (let u = 0; u < r.upgrades; u++) {
      herd.notices = [];
      const began = performance.now();
      pid = await upgradeByHup(g, pid);
      await herd.welcomedBy(pid, r.clients, r.drainTimeoutMs + 30_000);
      moveMs.push(performance.now() - began);
      const first = Math.min(...herd.notices);
      notices.push(herd.notices.map((t) => t - first).sort((a, b) => a - b));
    }
    const ends = await Promise.all(staying);
    const first = Math.min(...herd.notices);
    closes.push(...ends.map((c) => ({ code: c.code, at: c.at - first })));
  } finally {
    prober.killAll();
  }
  const samples = prober.lines.filter((l) => l.startsWith("probe ")).map((l) => l.split(" "));
  return {
    failedHandshakes: herd.failed - opening,
    notices,
    moveMs,
    probes: {
      ms: samples.filter((s) => s[3] === "ok").map((s) => Number(s[2])),
      connectMs: samples.filter((s) => s[3] === "ok").map((s) => Number(s[1])),
      failed: samples.filter((s) => s[3] !== "ok").map((s) => s[3]),
    },
    closes: closes.sort((a, b) => a.at - b.at),
    listenOverflows: listenOverflows() - overflows,
  };
}
