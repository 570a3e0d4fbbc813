/**
 * The Deno side of `serveNode()`. Deno's `node:http` server is built on its
 * `node:net` TCP handles (not on `Deno.serve`), and its documented
 * `listen({ fd })` serves the socket directly: measured in one interleaved
 * run (docs/benchmarks.md, bench/serve_node.ts) at the speed of the
 * transplanted server, so `auto` takes it and depends on no reactor detail.
 * `mode: "transplant"` still transplants (for the benchmark).
 *
 * @module
 */

import type * as http from "node:http";
import type * as net from "node:net";
import { close as closeFd, dupCloexec } from "../ffi/mod.ts";
import type { NodeServeAdapter } from "./serve_types.ts";

/** A `listen()` of a `node:net` server: its own, or the one instar/auto kept before replacing it. */
export type ListenOnFd = (options: { fd: number }, callback: () => void) => void;

/**
 * Has `server` listen on a close-on-exec duplicate of `fd` through `listen`:
 * the runtime owns (and closes) the fd it listens on, and no child inherits
 * it; the caller keeps `fd`. Resolves once the server listens.
 */
export function listenOnDup(
  server: net.Server,
  fd: number,
  listen: ListenOnFd = (o, cb) => void server.listen(o, cb),
): Promise<void> {
  const dup = dupCloexec(fd);
  return new Promise<void>((resolve, reject) => {
    const failed = (err: Error) => {
      try {
        closeFd(dup);
      } catch { /* the runtime closed it */ }
      reject(err);
    };
    server.once("error", failed);
    listen({ fd: dup }, () => {
      server.off("error", failed);
      resolve();
    });
  });
}

/** `serveNode()` on Deno: `listen({ fd })` on a duplicate of the socket. */
export const denoNodeAdapter: NodeServeAdapter = {
  auto: "fd",
  listenOnFd: (server: http.Server, fd: number): Promise<void> => listenOnDup(server, fd),
};
