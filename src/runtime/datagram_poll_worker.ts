/**
 * The worker thread of the portable datagram reader (`datagram_reader.ts`):
 * it blocks in `poll(2)` so that the JS thread never does, and posts a message
 * when the socket is readable. It polls again only when the JS thread arms it
 * (after reading the socket empty), so a paused socket costs nothing.
 *
 * The worker runs from source text (a `blob:` module), not from a file next
 * to this one: a file would have to be found at run time, which fails in a
 * `bun build --compile` binary (every module's `import.meta.url` is the
 * binary's) and needs extra permissions for a module loaded from JSR. It
 * loads `poll` itself, with the signature of the one symbol table
 * (`src/ffi/symbols.ts`) handed over in the start message.
 *
 * @module
 */

import { C, platform, symbolForWorker } from "../ffi/mod.ts";
import { InstarError } from "../errors.ts";

// Plain JavaScript, run by either runtime. Messages: in, one start message; out,
// "started" (poll loaded), then "readable" each time it was armed and the socket
// (or the wake-up pipe) became readable, and "exited".
const SOURCE = `
const ffi = globalThis.Deno ? null : await import("bun:ffi");
globalThis.onmessage = (e) => {
  globalThis.onmessage = null;
  const { fd, wake, state, lib, deno, bun, pollfd, POLLIN } = e.data;
  const poll = ffi
    ? ffi.dlopen(lib, { poll: bun }).symbols.poll
    : Deno.dlopen(lib, { poll: deno }).symbols.poll;
  const fds = new Uint8Array(pollfd.size * 2);
  const dv = new DataView(fds.buffer);
  [fd, wake].forEach((f, i) => {
    dv.setInt32(i * pollfd.size + pollfd.fd, f, true);
    dv.setInt16(i * pollfd.size + pollfd.events, POLLIN, true);
  });
  const s = new Int32Array(state);
  postMessage("started");
  for (;;) {
    Atomics.wait(s, 0, 0); // until armed, or closed
    if (Atomics.load(s, 1)) break;
    poll(fds, 2, -1); // EINTR or not: the JS thread reads until EAGAIN and arms again
    if (Atomics.load(s, 1)) break;
    Atomics.store(s, 0, 0);
    postMessage("readable");
  }
  postMessage("exited");
  close();
};
`;

/** How long a worker may take to load `poll`. */
const START_TIMEOUT_MS = 10_000;

/**
 * Starts the poll worker on `fd` and the wake-up pipe's read end `wake`,
 * sharing `state` ([0]: armed, [1]: closed). Resolves once it loaded `poll`;
 * rejects with `DATAGRAM_READER_FAILED` when it cannot start.
 */
export function startPollWorker(
  fd: number,
  wake: number,
  state: SharedArrayBuffer,
): Promise<Worker> {
  const url = URL.createObjectURL(new Blob([SOURCE], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  const start = {
    fd,
    wake,
    state,
    ...symbolForWorker("poll"),
    pollfd: platform().layout.pollfd,
    POLLIN: C.POLLIN,
  };
  return new Promise((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      worker.terminate();
      URL.revokeObjectURL(url);
      reject(
        new InstarError(
          "DATAGRAM_READER_FAILED",
          `the worker thread that waits for datagrams did not start: ${why}`,
        ),
      );
    };
    const timer = setTimeout(() => fail(`no answer in ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    worker.onerror = (e: Event) => {
      e.preventDefault?.();
      fail((e as ErrorEvent).message ?? "error");
    };
    worker.onmessage = (e: MessageEvent) => {
      if (e.data !== "started") return fail(`unexpected message ${String(e.data)}`);
      clearTimeout(timer);
      URL.revokeObjectURL(url);
      resolve(worker);
    };
    worker.postMessage(start);
  });
}
