/**
 * Deno: native `Deno.Conn`s. `Deno.listen` cannot take an fd, so it is
 * started on a throwaway address of the socket's family and instar's socket
 * is {@link transplant}ed under it; every byte then moves through Deno's own
 * I/O. When a precondition of the transplant fails, the caller falls back to
 * `node:net` (see `listener_node.ts`).
 *
 * @module
 */

import { makeTempDirSync, removeTreeSync } from "../host.ts";
import { InstarError } from "../errors.ts";
import type { Addr } from "../ffi/sockaddr.ts";
import { native } from "./natives.ts";
import { transplant } from "./transplant.ts";
import { type Acceptor, BaseConn } from "./conn.ts";
import {
  FD_BACKOFF_MS,
  fdsRecovered,
  isFdExhaustion,
  RateLimitedWarning,
} from "./fd_exhaustion.ts";
import { sleep } from "../timeout.ts";

/** The parts of the Deno namespace instar uses (kept local so Bun type-checks too). */
interface DenoConn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay?(on?: boolean): void;
  setKeepAlive?(on?: boolean): void;
}

interface DenoListener {
  readonly addr: Addr;
  accept(): Promise<DenoConn>;
  close(): void;
}

type DenoListen = (options: Record<string, unknown>) => DenoListener;

class NativeConn extends BaseConn {
  readonly localAddr: Addr;
  readonly remoteAddr: Addr;
  #c: DenoConn;

  constructor(c: DenoConn) {
    super();
    this.#c = c;
    this.localAddr = c.localAddr;
    this.remoteAddr = c.remoteAddr;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.#c.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#c.write(p);
  }

  closeWrite(): Promise<void> {
    return this.#c.closeWrite();
  }

  setNoDelay(on = true): void {
    this.#c.setNoDelay?.(on);
  }

  setKeepAlive(on = true): void {
    this.#c.setKeepAlive?.(on);
  }

  protected closeTransport(): void {
    try {
      this.#c.close();
    } catch {
      // already closed by the runtime (e.g. after a reset): nothing left to release
    }
  }
}

function throwawayListener(addr: Addr): { listener: DenoListener; cleanup: () => void } {
  // The runtime's own: instar/auto replaces the global with a refusal for the application.
  const D = { listen: native("Deno", "listen") as DenoListen };
  if (addr.transport === "unix") {
    const dir = makeTempDirSync("instar-");
    const listener = D.listen({ transport: "unix", path: `${dir}/t.sock` });
    return { listener, cleanup: () => removeTreeSync(dir) };
  }
  const hostname = addr.hostname.includes(":") ? "::1" : "127.0.0.1";
  return { listener: D.listen({ hostname, port: 0 }), cleanup: () => {} };
}

/**
 * Serves `fd` with `Deno.listen` by transplanting it under a throwaway
 * listener. `fd` stays the caller's (Deno gets a duplicate). Throws
 * `TRANSPLANT_UNSUPPORTED` (nothing changed) when a precondition fails.
 */
export function denoAcceptor(
  fd: number,
  addr: Addr,
  track: (c: BaseConn) => void,
  warn: (message: string) => void = (m) => console.warn(`instar: warning: ${m}`),
): Acceptor {
  let throwaway: { listener: DenoListener; cleanup: () => void };
  try {
    throwaway = throwawayListener(addr);
  } catch (err) {
    // No loopback of this family, no permission, …: the node:net path needs none of it.
    throw new InstarError(
      "TRANSPLANT_UNSUPPORTED",
      `cannot start the throwaway Deno.listen to transplant under: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const { listener, cleanup } = throwaway;
  try {
    transplant({ throwaway: listener.addr, fd });
  } catch (err) {
    listener.close();
    throw err;
  } finally {
    cleanup();
  }
  let closed = false;
  const warning = new RateLimitedWarning(warn);
  let short = false;
  return {
    kind: "Deno.listen",
    async accept() {
      while (!closed) {
        try {
          const c = new NativeConn(await listener.accept());
          track(c);
          if (short) fdsRecovered();
          short = false;
          return c;
        } catch (err) {
          if (closed) return null;
          // Deno rejects this accept() only; the connection waits in the backlog (Node sleeps too).
          if (!isFdExhaustion(err)) throw err;
          short = true;
          warning.report(
            `accept failed: ${(err as Error).message}; retrying every ${FD_BACKOFF_MS} ms`,
          );
          await sleep(FD_BACKOFF_MS);
        }
      }
      return null;
    },
    close() {
      if (closed) return;
      closed = true;
      // Closes Deno's duplicate of the socket; Deno never shutdown(2)s a listener.
      listener.close();
    },
  };
}
