/**
 * Receiving datagrams on a socket instar owns, through the event loop: the
 * shape every runtime's reader has, and the portable reader (libc
 * `recvfrom(2)`, woken by a worker thread blocked in `poll(2)`) for what the
 * runtimes' own UDP sockets cannot carry: Unix datagram sockets, and UDP when
 * the Deno transplant's preconditions fail.
 *
 * @module
 */

import { C, close as closeFd, pipe2, recvFrom, write } from "../ffi/mod.ts";
import { decode } from "../ffi/sockaddr.ts";
import { SystemError } from "../errors.ts";
import { startPollWorker } from "./datagram_poll_worker.ts";

/**
 * The sender (or destination) of a datagram: a UDP address, shaped like
 * `Deno.NetAddr` with transport `"udp"`, or a Unix datagram socket's path
 * (`""` for an unnamed sender, which cannot be answered).
 *
 * @example
 * ```ts
 * import type { DatagramAddr } from "@instar/instar";
 *
 * const to: DatagramAddr = { transport: "udp", hostname: "127.0.0.1", port: 5353 };
 * ```
 */
export type DatagramAddr =
  | { transport: "udp"; hostname: string; port: number }
  | { transport: "unixgram"; path: string };

/** Called for every datagram a reader takes from the kernel. */
export type OnDatagram = (data: Uint8Array, from: DatagramAddr) => void;

/** A runtime's reader on a datagram socket. */
export interface DatagramReader {
  /** Which I/O reads: `Bun.udpSocket`, `node:dgram` (transplanted), `recvfrom + poll worker`. */
  readonly kind: string;
  /** Stops taking datagrams from the kernel: they stay queued for whoever else reads the socket. */
  pause(): void;
  /** Takes datagrams again after {@link DatagramReader.pause}. */
  resume(): void;
  /** Stops for good and closes the reader's own fds (never instar's). */
  close(): void;
}

/** The largest datagram the readers take whole: the largest UDP payload fits. */
export const MAX_DATAGRAM = 65_536;

/** A decoded sender address as a {@link DatagramAddr}. */
export function datagramAddrOf(from: Uint8Array): DatagramAddr {
  if (from.byteLength < 2) return { transport: "unixgram", path: "" };
  const a = decode(from);
  return a.transport === "unix"
    ? { transport: "unixgram", path: a.path }
    : { transport: "udp", hostname: a.hostname, port: a.port };
}

/**
 * One datagram, `null` when none is queued, `undefined` for an error the
 * socket reported instead of a datagram (an ICMP error on UDP): it is
 * consumed and reading goes on.
 */
function receiveOne(fd: number): { data: Uint8Array; from: DatagramAddr } | null | undefined {
  let d;
  try {
    d = recvFrom(fd, MAX_DATAGRAM);
  } catch (err) {
    if (err instanceof SystemError && err.code !== "EBADF") return undefined;
    throw err;
  }
  if (d === null) return null;
  try {
    return { data: d.data, from: datagramAddrOf(d.from) };
  } catch {
    return undefined; // a sender address of a family this socket cannot have: dropped
  }
}

// Datagrams read per wake-up before the event loop gets a turn.
const BATCH = 64;

/**
 * The portable reader: a worker thread blocks in `poll(2)` on the socket (and
 * a wake-up pipe) and says when it is readable; this thread then reads with
 * `recvfrom(MSG_DONTWAIT)` until the queue is empty and arms the worker
 * again. Nothing polls on a timer; a paused reader is simply not armed.
 */
export async function pollReader(
  fd: number,
  onDatagram: OnDatagram,
  paused: boolean,
): Promise<DatagramReader> {
  const [wakeR, wakeW] = pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
  // [0]: 1 = the worker may poll; [1]: 1 = closed.
  const state = new Int32Array(new SharedArrayBuffer(8));
  let worker: Worker;
  try {
    worker = await startPollWorker(fd, wakeR, state.buffer as SharedArrayBuffer);
  } catch (err) {
    closeFd(wakeR);
    closeFd(wakeW);
    throw err;
  }
  let closed = false, armed = false, readable = false;
  const arm = () => {
    if (closed || paused || armed) return;
    armed = true;
    Atomics.store(state, 0, 1);
    Atomics.notify(state, 0);
  };
  const drain = () => {
    readable = false;
    for (let i = 0; i < BATCH; i++) {
      if (closed || paused) return void (readable = !closed);
      const d = receiveOne(fd);
      if (d === null) return arm();
      if (d === undefined) continue;
      onDatagram(d.data, d.from);
    }
    readable = true;
    setTimeout(() => readable && !paused && drain(), 0); // a turn for the event loop
  };
  worker.onmessage = (e: MessageEvent) => {
    if (e.data === "exited") return void (closeFd(wakeR), closeFd(wakeW));
    armed = false;
    if (!paused && !closed) drain();
    else readable = true;
  };
  arm();
  return {
    kind: "recvfrom + poll worker",
    pause: () => void (paused = true),
    resume: () => {
      if (closed || !paused) return;
      paused = false;
      if (readable) drain();
      else arm();
    },
    close: () => {
      if (closed) return;
      closed = true;
      Atomics.store(state, 1, 1);
      Atomics.notify(state, 0);
      write(wakeW, new Uint8Array([1])); // wakes a poll in progress
    },
  };
}
