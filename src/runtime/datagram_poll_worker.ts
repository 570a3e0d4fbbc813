/**
 * The worker thread of the portable datagram reader (`datagram_reader.ts`):
 * it blocks in `poll(2)` so that the JS thread never does, and posts a message
 * when the socket is readable. It polls again only when the JS thread arms it
 * (after reading the socket empty), so a paused socket costs nothing.
 *
 * @module
 */

import { C, poll } from "../ffi/mod.ts";

interface Start {
  fd: number;
  wake: number;
  state: SharedArrayBuffer;
}

const self_ = globalThis as unknown as {
  onmessage: ((e: { data: Start }) => void) | null;
  postMessage(m: unknown): void;
  close(): void;
};

self_.onmessage = (e) => {
  self_.onmessage = null;
  const { fd, wake, state } = e.data;
  const s = new Int32Array(state);
  for (;;) {
    Atomics.wait(s, 0, 0); // until armed (or closed)
    if (Atomics.load(s, 1)) break;
    const fds = [{ fd, events: C.POLLIN }, { fd: wake, events: C.POLLIN }];
    poll(fds, -1);
    if (Atomics.load(s, 1)) break;
    Atomics.store(s, 0, 0);
    self_.postMessage("readable");
  }
  self_.postMessage("exited");
  self_.close();
};
