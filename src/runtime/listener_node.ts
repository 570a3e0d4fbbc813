/**
 * The portable path: `node:net` `listen({ fd })` on a duplicate of instar's
 * socket. Deno uses it when the transplant under `Deno.listen` is not
 * possible. (Bun has `Bun.listen({ fd })`, which is faster.)
 *
 * @module
 */

import * as net from "node:net";
import type { Addr } from "../ffi/sockaddr.ts";
import { type Acceptor, BaseConn, connClosed, ConnQueue } from "./conn.ts";

// Pause the socket while this much is waiting for read().
const HIGH_WATER = 1 << 20;

class NodeConn extends BaseConn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  #s: net.Socket;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #paused = false;
  #eof = false;
  #ours = false;
  #error: Error | undefined;
  #readWaiter: (() => void) | undefined;

  constructor(s: net.Socket, listenAddr: Addr) {
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
    s.on("data", (d: Uint8Array) => {
      this.#chunks.push(d);
      this.#buffered += d.byteLength;
      if (this.#buffered >= HIGH_WATER && !this.#paused) {
        this.#paused = true;
        s.pause();
      }
      this.#wake();
    });
    s.on("end", () => {
      this.#eof = true;
      this.#wake();
    });
    s.on("error", (err: Error) => {
      this.#error = err;
      this.#wake();
    });
    s.on("close", () => {
      this.#eof = true;
      this.#wake();
      this.closed();
    });
  }

  #wake(): void {
    const w = this.#readWaiter;
    this.#readWaiter = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#ours) throw connClosed();
    while (this.#buffered === 0) {
      if (this.#error) throw this.#error;
      if (this.#eof) return null;
      await new Promise<void>((r) => (this.#readWaiter = r));
      if (this.#ours) throw connClosed();
    }
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
    this.#wake();
  }
}

/** Serves `fd` (a duplicate the runtime may close) with `node:net`. */
export async function nodeAcceptor(
  fd: number,
  addr: Addr,
  track: (c: BaseConn) => void,
): Promise<Acceptor> {
  const queue = new ConnQueue();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const c = new NodeConn(s, addr);
    track(c);
    queue.push(c);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ fd }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // Accept errors (EMFILE, …) are retried by the runtime; keep the process alive.
  server.on("error", () => {});
  let stopped = false;
  return {
    kind: "node:net",
    accept: () => queue.next(),
    close() {
      if (stopped) return;
      stopped = true;
      // Closes the runtime's duplicate; node:net never shutdown(2)s a listener.
      server.close();
      queue.end();
    },
  };
}
