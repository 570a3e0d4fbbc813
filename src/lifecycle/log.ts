/**
 * One log line per lifecycle event.
 *
 * @module
 */

import process from "node:process";
import { formatAddr } from "../ffi/sockaddr.ts";
import type { Upgrader } from "./upgrader.ts";

/**
 * Writes one line per lifecycle event of `up` to stderr (or `write`), e.g.
 * `[app pid=4242 gen=2] upgrade-failed: exited: generation 3 (pid 4250) exited with code 1…`.
 *
 * @example
 * ```ts
 * import { logLifecycle, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * logLifecycle(up, "api");
 * ```
 */
export function logLifecycle(
  up: Upgrader,
  name = "instar",
  write: (line: string) => void = (line) => process.stderr.write(line + "\n"),
): void {
  const say = (what: string) => write(`[${name} pid=${up.pid} gen=${up.generation}] ${what}`);
  up.on("state", ({ state }) => {
    if (state !== "ready") return;
    const addrs = up.addrs().map(formatAddr).join(", ");
    say(`ready on ${addrs || "(no listeners)"}`);
  });
  up.on(
    "upgrade-started",
    ({ generation }) => say(`upgrade-started: starting generation ${generation}`),
  );
  up.on("upgrade-spawned", ({ pid }) => say(`upgrade-spawned: pid ${pid}`));
  up.on(
    "upgrade-succeeded",
    ({ pid, ms }) => say(`upgrade-succeeded: pid ${pid} ready after ${ms.toFixed(0)} ms`),
  );
  up.on("upgrade-failed", ({ error }) => say(`upgrade-failed: ${error.reason}: ${error.message}`));
  up.on(
    "upgrade-refused",
    ({ error }) => say(`upgrade-refused: ${error.reason}: ${error.message}`),
  );
  up.on(
    "promotion-window",
    ({ pid, ms }) => say(`promotion-window: pid ${pid} is ready; this generation waits ${ms} ms`),
  );
  up.on(
    "rolled-back",
    ({ pid, generation, reason }) =>
      say(`rolled-back: generation ${generation} (pid ${pid}): ${reason}`),
  );
  up.on("draining", ({ reason }) => say(`draining: ${reason}`));
  up.on(
    "drained",
    ({ forced }) => say(`drained: ${forced} connection(s) closed at the drain timeout`),
  );
  up.on(
    "serve-fallback",
    ({ addr, reason }) =>
      say(`serve-fallback: ${addr} served through the node:net proxy: ${reason.message}`),
  );
  up.on("warning", ({ message }) => say(`warning: ${message}`));
}
