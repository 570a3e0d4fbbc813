/**
 * Bun: `Bun.listen({ fd })` on a duplicate of instar's socket, with each
 * socket's callbacks turned into a pull-style {@link Conn}.
 *
 * @module
 */

import type { Addr } from "../ffi/sockaddr.ts";
import { type Acceptor, BaseConn, connClosed, ConnQueue } from "./conn.ts";

/** The parts of Bun's TCP socket instar uses. */
interface BunSocket {
  data: BunConn | undefined;
  write(data: Uint8Array): number;
  end(): void;
  shutdown(halfClose?: boolean): void;
  pause(): void;
  resume(): void;
  setNoDelay(on: boolean): boolean;
  setKeepAlive(on: boolean, delay?: number): boolean;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort?: number;
}

interface BunListener {
  stop(closeActiveConnections?: boolean): void;
}

interface BunNs {
  listen(options: Record<string, unknown>): BunListener;
}

// Stop reading from the kernel while this much is waiting for read().
const HIGH_WATER = 1 << 20;

class BunConn extends BaseConn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  #s: BunSocket;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #paused = false;
  #eof = false;
  #gone = false;
  #ours = false;
  #readWaiter: (() => void) | undefined;
  #drainWaiter: (() => void) | undefined;

  constructor(s: BunSocket, listenAddr: Addr) {
    super();
    this.#s = s;
    if (listenAddr.transport === "unix") {
      this.localAddr = listenAddr;
      this.remoteAddr = { transport: "unix", path: "" };
    } else {
      this.localAddr = {
        transport: "tcp",
        hostname: s.localAddress ?? listenAddr.hostname,
        port: s.localPort ?? listenAddr.port,
      };
      this.remoteAddr = {
        transport: "tcp",
        hostname: s.remoteAddress ?? "",
        port: s.remotePort ?? 0,
      };
    }
  }

  onData(d: Uint8Array): void {
    this.#chunks.push(d);
    this.#buffered += d.byteLength;
    if (this.#buffered >= HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#s.pause();
    }
    this.#wakeReader();
  }

  onEnd(): void {
    this.#eof = true;
    this.#wakeReader();
  }

  onGone(): void {
    this.#gone = true;
    this.#eof = true;
    this.#wakeReader();
    this.#wakeWriter();
    this.closed();
  }

  onDrain(): void {
    this.#wakeWriter();
  }

  #wakeReader(): void {
    const w = this.#readWaiter;
    this.#readWaiter = undefined;
    w?.();
  }

  #wakeWriter(): void {
    const w = this.#drainWaiter;
    this.#drainWaiter = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#ours) throw connClosed();
    while (this.#buffered === 0) {
      if (this.#ours) throw connClosed();
      if (this.#eof) return null;
      await new Promise<void>((r) => (this.#readWaiter = r));
    }
    if (p.byteLength === 0) return 0;
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

  async write(p: Uint8Array): Promise<number> {
    if (p.byteLength === 0) return 0;
    for (;;) {
      if (this.isClosed) throw connClosed();
      // Bun writes straight to the kernel and keeps nothing: 0 means "full, wait for drain".
      const n = this.#s.write(p);
      if (n > 0) return n;
      if (n < 0) throw connClosed();
      await new Promise<void>((r) => (this.#drainWaiter = r));
    }
  }

  closeWrite(): Promise<void> {
    if (this.isClosed) return Promise.reject(connClosed());
    // shutdown() is SHUT_WR; with halfClose=true Bun 1.4.5 never sent our FIN.
    this.#s.shutdown();
    return Promise.resolve();
  }

  setNoDelay(on = true): void {
    if (this.localAddr.transport === "tcp" && !this.isClosed) this.#s.setNoDelay(on);
  }

  setKeepAlive(on = true): void {
    if (this.localAddr.transport === "tcp" && !this.isClosed) this.#s.setKeepAlive(on, 0);
  }

  protected closeTransport(): void {
    this.#ours = true;
    this.#s.end();
    this.#wakeReader();
    this.#wakeWriter();
  }
}

/** Serves `fd` (a duplicate Bun may close) with `Bun.listen`; `track` sees every accepted connection. */
export function bunAcceptor(
  fd: number,
  addr: Addr,
  track: (c: BaseConn) => void,
): Acceptor {
  const B = (globalThis as unknown as { Bun: BunNs }).Bun;
  const queue = new ConnQueue();
  const server = B.listen({
    fd,
    allowHalfOpen: true,
    socket: {
      open(s: BunSocket) {
        const c = new BunConn(s, addr);
        s.data = c;
        track(c);
        queue.push(c);
      },
      data(s: BunSocket, d: Uint8Array) {
        s.data?.onData(d);
      },
      end(s: BunSocket) {
        s.data?.onEnd();
      },
      drain(s: BunSocket) {
        s.data?.onDrain();
      },
      close(s: BunSocket) {
        s.data?.onGone();
      },
      error(s: BunSocket) {
        s.data?.onGone();
      },
    },
  });
  let stopped = false;
  return {
    kind: "Bun.listen",
    accept: () => queue.next(),
    close() {
      if (stopped) return;
      stopped = true;
      // stop(false) closes Bun's duplicate at once and keeps accepted sockets open.
      server.stop(false);
      queue.end();
    },
  };
}
