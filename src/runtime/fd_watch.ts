/**
 * A watchdog for Deno's `node:net` servers on instar's sockets. At EMFILE
 * such a server stops accepting for good, with no event (Deno 2.9.6); when
 * no other accept path of the process reports that fds are free again
 * (`onFdsRecovered`), nothing would tell it. One unref'd timer per process
 * reads each watched socket's accept queue (TCP_INFO) every
 * {@link WATCH_EVERY_MS}: a queue that is not empty at two checks in a row
 * while the server accepted nothing in between means the server is deaf
 * (the second check comes {@link CONFIRM_MS} after a suspicious one, and
 * after a relisten, as fds are back: a server behind a proxy is found deaf
 * only once the proxy accepts again). Its
 * handle is closed and it listens anew on a fresh close-on-exec duplicate;
 * a relisten that fails (EMFILE again) is tried at the next check.
 *
 * A Unix socket has no TCP_INFO: its queue is read as empty or not with
 * poll(2) (a listening socket is readable while a connection waits), which
 * is all the check needs.
 *
 * The watch ends when the fd no longer is the socket it was given (closed,
 * or its number reused: a pipe or a file polls readable, and would read as a
 * queue waiting): each check first compares its inode and SO_ACCEPTCONN.
 *
 * @module
 */

import type * as net from "node:net";
import {
  acceptQueueLength,
  C,
  close as closeFd,
  dupCloexec,
  getsockoptInt,
  poll,
  runtimeName,
} from "../ffi/mod.ts";
import { socketInode } from "../proc.ts";
import { RateLimitedWarning } from "./fd_exhaustion.ts";

/** How often the watchdog reads the watched sockets' accept queues. */
export const WATCH_EVERY_MS = 500;

/** How soon a check follows one that found a queue waiting without accepts, or a relisten. */
export const CONFIRM_MS = 100;

/** What {@link watchDeafness} needs besides the server and instar's fd. */
export interface DeafWatchOptions {
  /** Whether the drain paused the server on purpose: a paused server is never listened anew. */
  paused?: () => boolean;
  /** Reports a relisten (rate-limited: at most once per 10 s, with a count). */
  warn: (message: string) => void;
  /** The server's own `listen()` (instar/auto keeps the one it replaced). */
  listen?: (options: { fd: number }, callback: () => void) => void;
}

interface Watched {
  server: net.Server;
  fd: number;
  // The listening socket `fd` was when the watch began (its inode): a reused number is not it.
  inode: number;
  stop: () => void;
  o: DeafWatchOptions;
  warning: RateLimitedWarning;
  // TCP_INFO counts the queue; a Unix socket's is only known to be empty or not.
  tcp: boolean;
  accepted: number;
  // At the last check: whether connections waited, and how many had been accepted.
  queued: boolean;
  acceptedThen: number;
  relistening: boolean;
  // The handle is closed and listening anew failed: tried again at the next check.
  down: boolean;
}

const watched = new Set<Watched>();
let timer: ReturnType<typeof setInterval> | undefined;
let soon: ReturnType<typeof setTimeout> | undefined;

/**
 * Watches `server` (a `node:net` or `node:http` server listening on a
 * duplicate of instar's TCP or Unix socket `fd`) until it closes or the
 * returned function is called, or until `fd` no longer is that listening
 * socket. Only on Deno: elsewhere (and for an fd that is not a listening
 * socket) it does nothing. Costs one counter increment per accepted connection.
 */
export function watchDeafness(server: net.Server, fd: number, o: DeafWatchOptions): () => void {
  const inode = runtimeName() === "deno" ? listeningInode(fd) : null;
  if (inode === null) return () => {};
  const w: Watched = {
    server,
    fd,
    inode,
    stop: () => {},
    o,
    warning: new RateLimitedWarning(o.warn),
    tcp: acceptQueueLength(fd) !== null,
    accepted: 0,
    queued: false,
    acceptedThen: 0,
    relistening: false,
    down: false,
  };
  const counted = () => void w.accepted++;
  const stop = () => {
    server.off("connection", counted);
    server.off("close", stop);
    watched.delete(w);
    if (watched.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  w.stop = stop;
  server.on("connection", counted);
  server.once("close", stop);
  watched.add(w);
  if (timer === undefined) {
    timer = setInterval(checkAll, WATCH_EVERY_MS);
    (timer as { unref?: () => void }).unref?.();
  }
  return stop;
}

/** The inode of `fd` if it is a listening socket, else `null` (closed, not a socket, not listening). */
function listeningInode(fd: number): number | null {
  const inode = socketInode(fd);
  if (inode === null) return null;
  try {
    return getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN) === 1 ? inode : null;
  } catch {
    return null; // closed since
  }
}

function checkAll(): void {
  for (const w of watched) check(w);
}

// One extra check, CONFIRM_MS from now (one timer at most, unref'd like the interval).
function checkSoon(): void {
  if (soon !== undefined || watched.size === 0) return;
  soon = setTimeout(() => {
    soon = undefined;
    checkAll();
  }, CONFIRM_MS);
  (soon as { unref?: () => void }).unref?.();
}

function check(w: Watched): void {
  // Closed (the drain closes the server soon) or its number reused: nothing of ours to read.
  if (listeningInode(w.fd) !== w.inode) return w.stop();
  if (w.relistening || w.o.paused?.()) {
    w.queued = false;
    return;
  }
  if (w.down) return relisten(w, 0);
  if (!w.server.listening) return;
  const queue = waiting(w);
  const idle = queue > 0 && w.accepted === w.acceptedThen;
  const deaf = w.queued && idle;
  w.queued = queue > 0;
  w.acceptedThen = w.accepted;
  if (deaf) relisten(w, queue);
  else if (idle) checkSoon();
}

/**
 * How many connections wait in the accept queue of the watched listening
 * socket (TCP_INFO); for a Unix socket 1 or 0 (poll(2): whether one waits).
 */
function waiting(w: Watched): number {
  const queue = w.tcp ? acceptQueueLength(w.fd) : null;
  if (queue !== null) return queue;
  const p = { fd: w.fd, events: C.POLLIN, revents: 0 };
  poll([p], 0);
  return p.revents & C.POLLIN ? 1 : 0;
}

// A Unix socket's queue is only known to be empty or not.
function waitingText(w: Watched, queue: number): string {
  return w.tcp ? `${queue} connections waiting` : "connections waiting";
}

// Closes the deaf handle and listens on a fresh duplicate; the duplicate is made first,
// so a failure (EMFILE again) leaves everything as it was until the next check.
function relisten(w: Watched, queue: number): void {
  let dup: number;
  try {
    dup = dupCloexec(w.fd);
  } catch (err) {
    w.warning.report(
      `node:net server deaf (${waitingText(w, queue)}), cannot listen anew yet: ${
        (err as Error).message
      }`,
    );
    return;
  }
  // Deno's node:net keeps the listening handle in `_handle`, as Node does.
  const s = w.server as net.Server & { _handle?: { close(): void } | null };
  s._handle?.close();
  s._handle = null;
  w.relistening = true;
  const done = (err?: Error) => {
    s.off("error", done);
    w.relistening = false;
    w.queued = false;
    w.down = err !== undefined;
    if (!err) {
      checkSoon();
      return w.warning.report(
        `node:net server stopped accepting (${waitingText(w, queue)}): listening anew`,
      );
    }
    try {
      closeFd(dup);
    } catch { /* the runtime closed it */ }
    w.warning.report(`node:net server deaf, listening anew failed: ${err.message}`);
  };
  s.once("error", done);
  const listen = w.o.listen ?? ((opts, cb) => void s.listen(opts, cb));
  listen({ fd: dup }, () => done());
}
