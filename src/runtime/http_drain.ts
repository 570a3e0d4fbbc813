/**
 * What both HTTP adapters do while a generation drains: answer with
 * `Connection: close`, and keep track of WebSockets so that the ones still
 * open at the drain timeout get close code 1012 (Service Restart) and a
 * reason instead of a cut TCP connection.
 *
 * @module
 */

import { deadline, spread } from "../timeout.ts";

/** The close code of a WebSocket the server closes to restart (RFC 6455 registry). */
export const SERVICE_RESTART = 1012;
/** The close reason sent with it. */
export const RESTART_REASON = "server restarting: reconnect";

/**
 * `res` with `Connection: close`: the client closes the connection after this
 * response and opens a new one (to the next generation) for its next request.
 * WebSocket upgrades are left alone; immutable headers are copied.
 */
export function withClose(res: Response): Response {
  if (!(res instanceof Response) || res.status === 101) return res;
  try {
    res.headers.set("connection", "close");
    return res;
  } catch {
    // Headers of e.g. Response.redirect() or a fetch() result are immutable.
    const copy = new Response(res.body, res);
    copy.headers.set("connection", "close");
    return copy;
  }
}

/** A WebSocket as both runtimes have it: it can be closed with a code and a reason. */
export interface ClosableSocket {
  close(code?: number, reason?: string): void;
}

function closeForRestart(ws: ClosableSocket): void {
  try {
    ws.close(SERVICE_RESTART, RESTART_REASON);
  } catch { /* closing already */ }
}

/** The open WebSockets of one server. */
export class WebSocketSet<W extends ClosableSocket = ClosableSocket> {
  #open = new Set<W>();
  #emptied: (() => void)[] = [];

  /** How many are open. */
  get size(): number {
    return this.#open.size;
  }

  /** Records an opened socket. */
  add(ws: W): void {
    this.#open.add(ws);
  }

  /** Records a closed socket. */
  delete(ws: W): void {
    if (this.#open.delete(ws) && this.#open.size === 0) {
      for (const r of this.#emptied.splice(0)) r();
    }
  }

  /** Resolves when none is open. */
  closed(): Promise<void> {
    if (this.#open.size === 0) return Promise.resolve();
    return new Promise((r) => this.#emptied.push(r));
  }

  /**
   * Starts closing the open sockets with 1012, spread over `windowMs` (so
   * that their clients do not all reconnect at once); one closed meanwhile
   * is skipped. Resolves once every one had its turn.
   */
  async closeSpread(windowMs: number): Promise<void> {
    await spread(this.#open, closeForRestart, windowMs);
  }

  /**
   * Closes every open socket with 1012; resolves once they closed, or after
   * `ms`, with how many closed (the others' connections are cut by the caller).
   */
  async closeAll(ms: number): Promise<number> {
    const n = this.#open.size;
    for (const ws of this.#open) closeForRestart(ws);
    await deadline(this.closed(), ms);
    return n - this.#open.size;
  }
}

/**
 * When a draining server last answered. Once busy keep-alive connections have
 * had their last response (with `Connection: close`) they move on and the
 * server goes quiet; what is left then is idle and safe to close. A fixed
 * grace is not enough on a CPU-starved machine, where the old generation may
 * take longer to answer every connection once.
 */
export class QuietClock {
  #last = performance.now();

  /** A response went out. */
  mark(): void {
    this.#last = performance.now();
  }

  /** Resolves once no response went out for `idleMs`, or after `maxMs` in all. */
  async quiet(idleMs: number, maxMs: number): Promise<void> {
    const end = performance.now() + maxMs;
    for (;;) {
      const now = performance.now();
      const wait = Math.min(this.#last + idleMs, end) - now;
      if (wait <= 0) return;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}
