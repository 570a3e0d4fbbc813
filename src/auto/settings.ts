/**
 * instar/auto's settings. The application is unmodified, so they come from
 * the environment (each optional, in milliseconds):
 *
 * | variable | meaning | default |
 * | --- | --- | --- |
 * | `INSTAR_DRAIN_TIMEOUT` | the Upgrader's `drainTimeout` | the Upgrader's |
 * | `INSTAR_READY_TIMEOUT` | the Upgrader's `readyTimeout` (how long an old generation waits) | the Upgrader's |
 * | `INSTAR_AUTO_LISTEN_TIMEOUT` | how long a generation waits for the application to listen | 10000 |
 * | `INSTAR_AUTO_SETTLE` | a first generation is ready this long after its last listen | 100 |
 * | `INSTAR_AUTO_READY_URL` | ready only once `GET <path>` answers 2xx on the new generation (ready_url.ts) | none |
 * | `INSTAR_PID_FILE` | the Upgrader's `pidFile` | none |
 * | `INSTAR_CONTROL` | the Upgrader's `controlSocket` | none |
 * | `INSTAR_LOG` | the lifecycle's log lines on stderr (`logLifecycle`): `text`, `json` or `off` | `text` |
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import * as host from "../host.ts";
import type { UpgraderOptions } from "../lifecycle/options.ts";
import type { ReadinessSettings } from "./readiness.ts";

/** What instar/auto starts with. */
export interface AutoSettings {
  /** The Upgrader's options. */
  upgrader: UpgraderOptions;
  /** When the application counts as ready. */
  readiness: ReadinessSettings;
  /** How the lifecycle is logged on stderr. */
  log: "text" | "json" | "off";
}

/** The settings from the environment; a malformed value is `INVALID_ARGUMENT` naming the variable. */
export function autoSettings(): AutoSettings {
  const upgrader: UpgraderOptions = {};
  const drain = ms("INSTAR_DRAIN_TIMEOUT"), ready = ms("INSTAR_READY_TIMEOUT");
  if (drain !== undefined) upgrader.drainTimeout = drain;
  if (ready !== undefined) upgrader.readyTimeout = ready;
  const pidFile = host.getEnv("INSTAR_PID_FILE"), control = host.getEnv("INSTAR_CONTROL");
  if (pidFile) upgrader.pidFile = pidFile;
  if (control) upgrader.controlSocket = control;
  const log = host.getEnv("INSTAR_LOG") || "text";
  if (log !== "text" && log !== "json" && log !== "off") {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `INSTAR_LOG is ${JSON.stringify(log)}; expected text, json or off`,
    );
  }
  return {
    upgrader,
    log,
    readiness: {
      timeoutMs: ms("INSTAR_AUTO_LISTEN_TIMEOUT") ?? 10_000,
      settleMs: ms("INSTAR_AUTO_SETTLE") ?? 100,
      ...readyUrl(),
    },
  };
}

function readyUrl(): { readyUrl?: string } {
  const raw = host.getEnv("INSTAR_AUTO_READY_URL");
  if (raw === undefined || raw === "") return {};
  return { readyUrl: checkReadyPath("INSTAR_AUTO_READY_URL", raw) };
}

/**
 * A ready URL's path (`/ready`, `/health?deep=1`): it goes into a request line as it is,
 * so it starts with `/` and holds no space or control character. Else `INVALID_ARGUMENT`
 * naming `what`.
 */
export function checkReadyPath(what: string, raw: string): string {
  if (!/^\/[\x21-\x7e]*$/.test(raw)) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `${what} is ${JSON.stringify(raw)}; expected a path such as /ready (no spaces)`,
    );
  }
  return raw;
}

function ms(name: string): number | undefined {
  const raw = host.getEnv(name);
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,9}$/.test(raw)) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `${name} is ${JSON.stringify(raw)}; expected milliseconds`,
    );
  }
  return Number(raw);
}

/**
 * A server API instar/auto cannot serve through an Upgrader: thrown where the
 * application called it (`AUTO_UNSUPPORTED`), so that no server runs that an
 * upgrade would silently cut.
 */
export function unsupported(call: string, why: string): never {
  throw new InstarError("AUTO_UNSUPPORTED", `instar/auto: ${call} ${why}`);
}
