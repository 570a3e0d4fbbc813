/**
 * What every accepted connection shares, whichever runtime I/O carries it:
 * the {@link Conn} interface, web streams built on `read`/`write`, and the
 * close bookkeeping {@link Listener} counts connections with.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "./transplant.ts";

/**
 * An accepted connection, in the spirit of `Deno.Conn`. The bytes move through
 * the runtime's own I/O; instar only counts the connection until it closes.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
 * for await (const conn of listener) {
 *   const buf = new Uint8Array(4096);
 *   const n = await conn.read(buf);
 *   if (n !== null) await conn.write(buf.subarray(0, n));
 *   conn.close();
 * }
 * ```
 */
export interface Conn {
  /**
   * The bytes received, as a stream. It ends when the peer ends its side;
   * cancelling it closes the connection.
   */
  readonly readable: ReadableStream<Uint8Array>;
  /** The bytes to send, as a stream. Closing or aborting it closes the connection. */
  readonly writable: WritableStream<Uint8Array>;
  /** Reads into `p`; resolves with the byte count, or `null` when the peer has ended its side. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p` (at least one byte); resolves with the byte count. `p` may be reused after. */
  write(p: Uint8Array): Promise<number>;
  /** Closes both directions. Idempotent. */
  close(): void;
  /** Ends our sending side (TCP FIN); reading goes on. */
  closeWrite(): Promise<void>;
  /** Our end's address. */
  readonly localAddr: Addr;
  /** The peer's address (`{ transport: "unix", path: "" }` for unnamed Unix peers). */
  readonly remoteAddr: Addr;
  /** Sets TCP_NODELAY (default on); a no-op on Unix sockets. */
  setNoDelay(on?: boolean): void;
  /** Sets SO_KEEPALIVE (default on); a no-op on Unix sockets. */
  setKeepAlive(on?: boolean): void;
}

const CHUNK = 64 * 1024;

/** Thrown by `read`/`write` on a connection that was closed. */
export function connClosed(): InstarError {
  return new InstarError("CONN_CLOSED", "the connection is closed");
}

/**
 * The shared part of the runtime connections: streams over `read`/`write`
 * and a close hook the listener counts with. Subclasses call
 * {@link BaseConn.closed} when the transport went away by itself.
 */
export abstract class BaseConn implements Conn {
  abstract readonly localAddr: Addr;
  abstract readonly remoteAddr: Addr;
  abstract read(p: Uint8Array): Promise<number | null>;
  abstract write(p: Uint8Array): Promise<number>;
  abstract closeWrite(): Promise<void>;
  abstract setNoDelay(on?: boolean): void;
  abstract setKeepAlive(on?: boolean): void;
  /** Closes the transport; called once. */
  protected abstract closeTransport(): void;

  #closed = false;
  #onClose: (() => void) | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  /** Whether the connection is closed (by us or by the transport). */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Registers the one callback run when the connection closes. */
  onClose(cb: () => void): void {
    this.#onClose = cb;
    if (this.#closed) cb();
  }

  close(): void {
    if (this.#closed) return;
    try {
      this.closeTransport();
    } finally {
      this.closed();
    }
  }

  /** Marks the connection closed without touching the transport again. */
  protected closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    const cb = this.#onClose;
    this.#onClose = undefined;
    cb?.();
  }

  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const buf = new Uint8Array(CHUNK);
        let n: number | null;
        try {
          n = await this.read(buf);
        } catch (err) {
          if (this.#closed) n = null;
          else throw err;
        }
        if (n === null) controller.close();
        else controller.enqueue(buf.subarray(0, n));
      },
      cancel: () => this.close(),
    }, { highWaterMark: 0 });
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      write: async (chunk) => {
        for (let off = 0; off < chunk.byteLength;) {
          off += await this.write(chunk.subarray(off));
        }
      },
      close: () => this.close(),
      abort: () => this.close(),
    });
  }
}

/** What a push-style runtime socket reports about its two ends. */
export interface SocketEnds {
  readonly localAddress?: string;
  readonly localPort?: number;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
}

/**
 * The addresses of a connection accepted on `listenAddr`: a Unix peer is
 * unnamed; a TCP socket's own report wins, falling back to the listener's.
 */
export function connAddrs(
  listenAddr: Addr,
  s: SocketEnds,
): { localAddr: Addr; remoteAddr: Addr } {
  if (listenAddr.transport === "unix") {
    return { localAddr: listenAddr, remoteAddr: { transport: "unix", path: "" } };
  }
  return {
    localAddr: {
      transport: "tcp",
      hostname: s.localAddress ?? listenAddr.hostname,
      port: s.localPort ?? listenAddr.port,
    },
    remoteAddr: { transport: "tcp", hostname: s.remoteAddress ?? "", port: s.remotePort ?? 0 },
  };
}

// Pause the socket while this much is waiting for read().
const HIGH_WATER = 1 << 20;

/**
 * The bytes a push-style socket (callbacks, events) delivered, waiting for
 * `read()`. The socket is paused while 1 MiB waits and
 * resumed once reads bring it under half of that.
 */
export class InboundBuffer {
  #s: { pause(): void; resume(): void };
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #paused = false;
  #waiter: (() => void) | undefined;

  constructor(s: { pause(): void; resume(): void }) {
    this.#s = s;
  }

  /** How many bytes are waiting. */
  get size(): number {
    return this.#buffered;
  }

  /** Queues `d` and wakes a waiting reader. */
  push(d: Uint8Array): void {
    this.#chunks.push(d);
    this.#buffered += d.byteLength;
    if (this.#buffered >= HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#s.pause();
    }
    this.wake();
  }

  /** Resolves at the next {@link InboundBuffer.wake} (data, end, error or close). */
  wait(): Promise<void> {
    return new Promise<void>((r) => (this.#waiter = r));
  }

  /** Wakes the reader waiting in {@link InboundBuffer.wait}, if any. */
  wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** Moves as many waiting bytes as fit into `p`; returns the count. */
  take(p: Uint8Array): number {
    let n = 0;
    while (n < p.byteLength && this.#chunks.length > 0) {
      const c = this.#chunks[0];
      const take = Math.min(c.byteLength, p.byteLength - n);
      p.set(take === c.byteLength ? c : c.subarray(0, take), n);
      n += take;
      if (take === c.byteLength) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(take);
    }
    this.#buffered -= n;
    if (this.#paused && this.#buffered < HIGH_WATER / 2) {
      this.#paused = false;
      this.#s.resume();
    }
    return n;
  }
}

/** A source of accepted connections: one per runtime I/O flavour. */
export interface Acceptor {
  /** Which runtime I/O carries the connections, e.g. `Bun.listen`. */
  readonly kind: string;
  /** The next accepted connection; `null` once closed and nothing is queued. */
  accept(): Promise<BaseConn | null>;
  /**
   * Stops accepting and closes the runtime's duplicate of the socket (never
   * `shutdown(2)`, which would stop the socket for every process sharing it).
   */
  close(): void;
}

/**
 * The {@link Acceptor} of a push-style server: it hands out what `queue`
 * holds; `close()` runs `stop` (which must close the runtime's duplicate of
 * the socket) once, then ends the queue.
 */
export function queueAcceptor(kind: string, queue: ConnQueue, stop: () => void): Acceptor {
  let stopped = false;
  return {
    kind,
    accept: () => queue.next(),
    close() {
      if (stopped) return;
      stopped = true;
      stop();
      queue.end();
    },
  };
}

/**
 * How many accepted connections may wait for `accept()` before the runtime
 * stops accepting. Beyond it, new connections wait in the kernel's listen
 * backlog (and, once that is full, the kernel drops SYNs and clients retry),
 * exactly as with a pull-style listener such as `Deno.listen` whose app does
 * not call `accept()`: nothing is accepted just to be closed, and the process
 * holds at most about this many fds for connections nobody took.
 */
export const QUEUE_LIMIT = 1024;

/** Stops and restarts the runtime's accepting (see {@link socketGate}). */
export interface AcceptGate {
  pause(): void;
  resume(): void;
}

/**
 * An {@link AcceptGate} on the listening socket `fd` (the runtime's
 * duplicate): `pause()` removes the socket's epoll registrations in every
 * reactor of the process, `resume()` puts back what it removed. After
 * `close()` (the acceptor stopped) it does nothing, so a queue emptied after
 * the listener closed never makes a reactor accept again.
 *
 * The lifecycle pauses the same socket the same way (before `ready()`, and
 * when a drain starts); a pause that finds the registrations already removed
 * holds nothing to put back, so one never undoes the other's, except that a
 * full queue emptied within the drain's first moment (before the listener
 * is closed) lets the old generation accept for that moment: those
 * connections are served by it, not lost.
 */
export function socketGate(fd: number): AcceptGate & { close(): void } {
  let paused: PausedSocket | undefined;
  let closed = false;
  return {
    pause() {
      if (closed || paused) return;
      try {
        paused = pauseSocket(fd);
      } catch (err) {
        // Not fatal: the queue then grows past its bound, as it did before there was one.
        console.warn(`instar: cannot pause accepting on fd ${fd}: ${(err as Error).message}`);
      }
    },
    resume() {
      const p = paused;
      paused = undefined;
      if (p && !closed) resumeSocket(p);
    },
    close() {
      closed = true;
      paused = undefined;
    },
  };
}

/**
 * Connections a push-style server (callbacks, events) accepted, waiting for
 * `accept()`. After `end()` the queued ones are still handed out, so a close
 * during a handover loses none of them.
 *
 * The queue is bounded: when `limit` connections wait, `gate.pause()` stops
 * the runtime from accepting (Bun's and node:net's servers have no pause of
 * their own: the gate removes the socket's epoll registrations, as the
 * lifecycle does before `ready()`); once the app has taken them down to half
 * of that, `gate.resume()` puts them back. A connection the runtime had
 * already accepted when the gate closed is still queued, so the bound is
 * `limit` plus what one wake-up of the reactor accepts.
 */
export class ConnQueue {
  #items: BaseConn[] = [];
  #head = 0;
  #waiters: ((c: BaseConn | null) => void)[] = [];
  #ended = false;
  #gate: AcceptGate | undefined;
  #limit: number;
  #paused = false;

  constructor(gate?: AcceptGate, limit = QUEUE_LIMIT) {
    this.#gate = gate;
    this.#limit = limit;
  }

  /** How many connections wait for `next()`. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Whether the gate is closed because the queue is full. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Hands `c` to a waiting `next()` or queues it. */
  push(c: BaseConn): void {
    const w = this.#waiters.shift();
    if (w) return w(c);
    this.#items.push(c);
    if (!this.#paused && !this.#ended && this.#gate && this.size >= this.#limit) {
      this.#paused = true;
      this.#gate.pause();
    }
  }

  /** The next connection, or `null` once ended and empty. */
  next(): Promise<BaseConn | null> {
    if (this.#head < this.#items.length) {
      const c = this.#items[this.#head];
      this.#items[this.#head++] = undefined as unknown as BaseConn;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#head = 0;
      }
      if (this.#paused && !this.#ended && this.size <= this.#limit / 2) {
        this.#paused = false;
        this.#gate!.resume();
      }
      return Promise.resolve(c);
    }
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** No more connections will come; waiting `next()` calls get `null`. The gate stays as it is. */
  end(): void {
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w(null);
  }
}
