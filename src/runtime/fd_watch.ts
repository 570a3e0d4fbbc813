/**
 * A watchdog for Deno's `node:net` servers on instar's sockets. At EMFILE
 * such a server stops accepting for good, with no event (Deno 2.9.6); when
 * no other accept path of the process reports that fds are free again
 * (`onFdsRecovered`), nothing would tell it. One unref'd timer per process
 * reads each watched socket's accept queue (TCP_INFO) every
 * {@link WATCH_EVERY_MS}: a queue that is not empty at two checks in a row
 * while the server accepted nothing in between means the server is deaf. Its
 * handle is closed and it listens anew on a fresh close-on-exec duplicate;
 * a relisten that fails (EMFILE again) is tried at the next check.
 *
 * Unix sockets are not watched: TCP_INFO has no queue for them, and the
 * kernel's sock_diag (which has) is a layer above.
 *
 * @module
 */

import type * as net from "node:net";
import { acceptQueueLength, close as closeFd, dupCloexec, runtimeName } from "../ffi/mod.ts";
import { RateLimitedWarning } from "./fd_exhaustion.ts";

/** How often the watchdog reads the watched sockets' accept queues. */
export const WATCH_EVERY_MS = 500;

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
  o: DeafWatchOptions;
  warning: RateLimitedWarning;
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

/**
 * Watches `server` (a `node:net` or `node:http` server listening on a
 * duplicate of instar's TCP socket `fd`) until it closes or the returned
 * function is called. Only on Deno, only TCP: elsewhere it does nothing.
 * Costs one counter increment per accepted connection.
 */
export function watchDeafness(server: net.Server, fd: number, o: DeafWatchOptions): () => void {
  if (runtimeName() !== "deno" || acceptQueueLength(fd) === null) return () => {};
  const w: Watched = {
    server,
    fd,
    o,
    warning: new RateLimitedWarning(o.warn),
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
  server.on("connection", counted);
  server.once("close", stop);
  watched.add(w);
  if (timer === undefined) {
    timer = setInterval(checkAll, WATCH_EVERY_MS);
    (timer as { unref?: () => void }).unref?.();
  }
  return stop;
}

function checkAll(): void {
  for (const w of watched) check(w);
}

function check(w: Watched): void {
  if (w.relistening || w.o.paused?.()) {
    w.queued = false;
    return;
  }
  if (w.down) return relisten(w, 0);
  if (!w.server.listening) return;
  let queue: number | null;
  try {
    queue = acceptQueueLength(w.fd);
  } catch {
    return; // instar's fd was closed: the drain closes the server soon
  }
  const deaf = w.queued && (queue ?? 0) > 0 && w.accepted === w.acceptedThen;
  w.queued = (queue ?? 0) > 0;
  w.acceptedThen = w.accepted;
  if (deaf) relisten(w, queue!);
}

// Closes the deaf handle and listens on a fresh duplicate; the duplicate is made first,
// so a failure (EMFILE again) leaves everything as it was until the next check.
function relisten(w: Watched, queue: number): void {
  let dup: number;
  try {
    dup = dupCloexec(w.fd);
  } catch (err) {
    w.warning.report(
      `node:net server deaf (${queue} connections waiting), cannot listen anew yet: ${
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
      return w.warning.report(
        `node:net server stopped accepting (${queue} connections waiting): listening anew`,
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
