/**
 * The Bun side of `serveNode()`. Bun's `node:http` runs on the same native
 * server as `Bun.serve` (uSockets), and its `listen({ fd })` silently listens
 * somewhere else: the server starts on a throwaway address and the socket is
 * transplanted under it (src/runtime/transplant.ts), at Bun's native speed. When
 * a precondition of the transplant fails, `mode: "auto"` falls back to the
 * `node:net` proxy, and says why.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import type { NodeServeAdapter } from "./serve_types.ts";

/** `serveNode()` on Bun: transplant, else the proxy. */
export const bunNodeAdapter: NodeServeAdapter = {
  auto: "transplant",
  listenOnFd(): Promise<void> {
    // Measured on Bun 1.4.5: the server listens, but not on the fd it was given.
    return Promise.reject(
      new InstarError(
        "UNSUPPORTED_RUNTIME",
        "Bun's node:http listen({ fd }) does not listen on the fd: use mode auto or transplant",
      ),
    );
  },
};
