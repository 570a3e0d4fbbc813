/**
 * Bun: `Bun.listen({ fd })` on a duplicate of instar's socket, with each
 * socket's callbacks turned into a pull-style {@link Conn}.
 *
 * @module
 */

import { native } from "./natives.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import {
  type Acceptor,
  BaseConn,
  connAddrs,
  connClosed,
  ConnQueue,
  InboundBuffer,
  queueAcceptor,
  type SocketEnds,
  socketGate,
} from "./conn.ts";

/** The parts of Bun's TCP socket instar uses. */
interface BunSocket extends SocketEnds {
  data: BunConn | undefined;
  write(data: Uint8Array): number;
  end(): void;
  shutdown(halfClose?: boolean): void;
  pause(): void;
  resume(): void;
  setNoDelay(on: boolean): boolean;
  setKeepAlive(on: boolean, delay?: number): boolean;
}

interface BunListener {
  stop(closeActiveConnections?: boolean): void;
}

type BunListen = (options: Record<string, unknown>) => BunListener;

class BunConn extends BaseConn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  #s: BunSocket;
  // Bun stops reading from the kernel while the buffer is full.
  #in: InboundBuffer;
  #eof = false;
  #gone = false;
  #ours = false;
  #drainWaiter: (() => void) | undefined;

  constructor(s: BunSocket, listenAddr: Addr) {
    super();
    this.#s = s;
    this.#in = new InboundBuffer(s);
    const { localAddr, remoteAddr } = connAddrs(listenAddr, s);
    this.localAddr = localAddr;
    this.remoteAddr = remoteAddr;
  }

  onData(d: Uint8Array): void {
    this.#in.push(d);
  }

  onEnd(): void {
    this.#eof = true;
    this.#in.wake();
  }

  onGone(): void {
    this.#gone = true;
    this.#eof = true;
    this.#in.wake();
    this.#wakeWriter();
    this.closed();
  }

  onDrain(): void {
    this.#wakeWriter();
  }

  #wakeWriter(): void {
    const w = this.#drainWaiter;
    this.#drainWaiter = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#ours) throw connClosed();
    while (this.#in.size === 0) {
      if (this.#ours) throw connClosed();
      if (this.#eof) return null;
      await this.#in.wait();
    }
    if (p.byteLength === 0) return 0;
    return this.#in.take(p);
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
    this.#in.wake();
    this.#wakeWriter();
  }
}

/** Serves `fd` (a duplicate Bun may close) with `Bun.listen`; `track` sees every accepted connection. */
export function bunAcceptor(
  fd: number,
  addr: Addr,
  track: (c: BaseConn) => void,
): Acceptor {
  // The runtime's own: instar/auto replaces the global with a refusal for the application.
  const B = { listen: native("Bun", "listen") as BunListen };
  // Bounded: at QUEUE_LIMIT waiting connections the socket leaves Bun's epoll until accept() catches up.
  const gate = socketGate(fd);
  const queue = new ConnQueue(gate);
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
  // stop(false) closes Bun's duplicate at once and keeps accepted sockets open.
  return queueAcceptor("Bun.listen", queue, () => {
    gate.close();
    server.stop(false);
  });
}
