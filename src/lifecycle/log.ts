/**
 * One log line per lifecycle event: text for people (the default), or one
 * JSON object per line for journald, Loki or CloudWatch.
 *
 * @module
 */

import * as host from "../host.ts";
import { InstarError } from "../errors.ts";
import { formatAddr } from "../ffi/sockaddr.ts";
import { formatReport } from "../observe/report.ts";
import type { UpgraderEvents } from "./events.ts";
import type { Upgrader } from "./upgrader.ts";

/**
 * Options of {@link logLifecycle}.
 *
 * @example
 * ```ts
 * import { logLifecycle, type LogOptions, Upgrader } from "@instar/instar";
 *
 * const options: LogOptions = { name: "api", format: "json" };
 * logLifecycle(await Upgrader.create(), options);
 * ```
 */
export interface LogOptions {
  /** The program's name in text lines and the `name` field of JSON lines (default `instar`). */
  name?: string;
  /** `text` (default): `[name pid=… gen=…] event: …`; `json`: one JSON object per line. */
  format?: "text" | "json";
  /** Where lines go (without the newline); default stderr. */
  write?: (line: string) => void;
}

const EVENTS: readonly (keyof UpgraderEvents)[] = [
  "state",
  "upgrade-started",
  "upgrade-spawned",
  "upgrade-succeeded",
  "upgrade-failed",
  "upgrade-refused",
  "promotion-window",
  "rolled-back",
  "upgrade-report",
  "draining",
  "drained",
  "serve-fallback",
  "warning",
];

/**
 * Writes one line per lifecycle event of `up` to stderr (or `write`). Text,
 * e.g. `[app pid=4242 gen=2] upgrade-failed: exited: generation 3 (pid 4250)
 * exited with code 1…`; or, with `{ format: "json" }`, one object per line:
 * `{"time":"2026-…Z","level":"error","name":"app","pid":4242,"generation":2,
 * "event":"upgrade-failed","fields":{"error":{"reason":"exited",…}}}`.
 *
 * @example
 * ```ts
 * import { logLifecycle, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * logLifecycle(up, "api"); // or logLifecycle(up, { name: "api", format: "json" })
 * ```
 */
export function logLifecycle(
  up: Upgrader,
  nameOrOptions: string | LogOptions = "instar",
  write?: (line: string) => void,
): void {
  const o = typeof nameOrOptions === "string" ? { name: nameOrOptions } : nameOrOptions;
  const name = o.name ?? "instar";
  const out = write ?? o.write ?? ((line: string) => host.writeStderr(line + "\n"));
  if (o.format === "json") return logJson(up, name, out);
  if (o.format !== undefined && o.format !== "text") {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `logLifecycle: format ${JSON.stringify(o.format)} is not "text" or "json"`,
    );
  }
  logText(up, name, out);
}

// An error as plain fields (JSON.stringify of an Error is `{}`).
function plain(value: unknown): unknown {
  if (!(value instanceof Error)) return value;
  const { message } = value;
  return { ...(value as unknown as Record<string, unknown>), name: value.name, message };
}

function level(event: keyof UpgraderEvents, fields: Record<string, unknown>): string {
  if (event === "upgrade-failed" || event === "rolled-back") return "error";
  if (event === "warning" || event === "upgrade-refused" || event === "serve-fallback") {
    return "warn";
  }
  if (event === "upgrade-report" && fields.outcome !== "succeeded") return "warn";
  return "info";
}

function logJson(up: Upgrader, name: string, write: (line: string) => void): void {
  for (const event of EVENTS) {
    up.on(event, (payload) => {
      const fields: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(payload)) fields[k] = plain(v);
      if (event === "state" && fields.state === "ready") fields.addrs = up.addrs().map(formatAddr);
      const time = new Date().toISOString();
      const lvl = level(event, fields);
      write(
        JSON.stringify({
          time,
          level: lvl,
          name,
          pid: up.pid,
          generation: up.generation,
          event,
          fields,
        }),
      );
    });
  }
}

function logText(up: Upgrader, name: string, write: (line: string) => void): void {
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
  up.on("upgrade-report", (r) => {
    const lines = formatReport(r).trim().split("\n").map((l) => l.trim());
    say(`upgrade-report: ${lines.join("; ")}`);
  });
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
