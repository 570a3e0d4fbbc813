/**
 * The portable path: `node:net` `listen({ fd })` on a duplicate of instar's
 * socket. Deno uses it when the transplant under `Deno.listen` is not
 * possible. (Bun has `Bun.listen({ fd })`, which is faster.)
 *
 * @module
 */

import * as net from "node:net";
import type { Addr } from "../ffi/sockaddr.ts";
import {
  type Acceptor,
  BaseConn,
  connAddrs,
  connClosed,
  ConnQueue,
  InboundBuffer,
  queueAcceptor,
  socketGate,
} from "./conn.ts";

class NodeConn extends BaseConn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  #s: net.Socket;
  // The socket is paused while the buffer is full.
  #in: InboundBuffer;
  #eof = false;
  #ours = false;
  #error: Error | undefined;

  constructor(s: net.Socket, listenAddr: Addr) {
    super();
    this.#s = s;
    const inbound = this.#in = new InboundBuffer(s);
    const { localAddr, remoteAddr } = connAddrs(listenAddr, s);
    this.localAddr = localAddr;
    this.remoteAddr = remoteAddr;
    s.on("data", (d: Uint8Array) => inbound.push(d));
    s.on("end", () => {
      this.#eof = true;
      inbound.wake();
    });
    s.on("error", (err: Error) => {
      this.#error = err;
      inbound.wake();
    });
    s.on("close", () => {
      this.#eof = true;
      inbound.wake();
      this.closed();
    });
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#ours) throw connClosed();
    while (this.#in.size === 0) {
      if (this.#error) throw this.#error;
      if (this.#eof) return null;
      await this.#in.wait();
      if (this.#ours) throw connClosed();
    }
    return this.#in.take(p);
  }

  write(p: Uint8Array): Promise<number> {
    if (this.isClosed) return Promise.reject(connClosed());
    if (p.byteLength === 0) return Promise.resolve(0);
    // node:net may keep a reference to the buffer until the write completes;
    // the caller may reuse `p` once we resolve, so wait for the callback.
    return new Promise((resolve, reject) => {
      this.#s.write(p, (err) => (err ? reject(err) : resolve(p.byteLength)));
    });
  }

  closeWrite(): Promise<void> {
    if (this.isClosed) return Promise.reject(connClosed());
    return new Promise((resolve) => this.#s.end(resolve));
  }

  setNoDelay(on = true): void {
    if (this.localAddr.transport === "tcp" && !this.isClosed) this.#s.setNoDelay(on);
  }

  setKeepAlive(on = true): void {
    if (this.localAddr.transport === "tcp" && !this.isClosed) this.#s.setKeepAlive(on);
  }

  protected closeTransport(): void {
    this.#ours = true;
    this.#s.destroy();
    this.#in.wake();
  }
}

/** Serves `fd` (a duplicate the runtime may close) with `node:net`. */
export async function nodeAcceptor(
  fd: number,
  addr: Addr,
  track: (c: BaseConn) => void,
): Promise<Acceptor> {
  // Bounded: at QUEUE_LIMIT waiting connections the socket leaves the event loop's epoll until
  // accept() catches up (node:net's server has no pause of its own).
  const gate = socketGate(fd);
  const queue = new ConnQueue(gate);
  const server = await listening({ fd } as net.ListenOptions, queue, () => addr, track);
  // Closes the runtime's duplicate; node:net never shutdown(2)s a listener.
  return queueAcceptor("node:net", queue, () => {
    gate.close();
    server.close();
  });
}

/** Where {@link nodeAcceptorAt} listens: TCP or a Unix socket path. */
export type NetAddress = { host: string; port: number; backlog: number } | {
  path: string;
  backlog: number;
};

/**
 * Portable mode (src/runtime/platform.ts): `node:net` listening on `where`
 * itself, no fd of instar's under it. The queue is unbounded: without libc
 * there is no epoll registration to remove, and node:net has no pause.
 * Resolves with the acceptor and the address it is bound to.
 */
export async function nodeAcceptorAt(
  where: NetAddress,
  track: (c: BaseConn) => void,
): Promise<{ acceptor: Acceptor; addr: Addr }> {
  const queue = new ConnQueue();
  let addr: Addr = "path" in where
    ? { transport: "unix", path: where.path }
    : { transport: "tcp", hostname: where.host, port: where.port };
  const server = await listening(where, queue, () => addr, track);
  const bound = server.address();
  if (bound && typeof bound === "object") {
    addr = { transport: "tcp", hostname: bound.address, port: bound.port };
  }
  return { acceptor: queueAcceptor("node:net", queue, () => server.close()), addr };
}

// A node:net server queueing what it accepts, resolved once it listens (rejected with
// the listen error). Connections arrive after "listening": `addr()` is known by then.
async function listening(
  how: net.ListenOptions,
  queue: ConnQueue,
  addr: () => Addr,
  track: (c: BaseConn) => void,
): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const c = new NodeConn(s, addr());
    track(c);
    queue.push(c);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(how, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // Accept errors (EMFILE, …) are retried by the runtime; keep the process alive.
  server.on("error", () => {});
  return server;
}
