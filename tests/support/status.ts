/**
 * Reads a running server's state through its control socket, as
 * `instar status --control <path> --json` does, so that lifecycle tests wait
 * on the state a server reports (generation, pid, state, listeners) instead
 * of matching the wording of its log lines. Test support, not a test file:
 * the test runners only run `*_test.ts`.
 *
 * The request is made without blocking the event loop (unlike the CLI's
 * synchronous read), so a load client running in the test process keeps
 * running while a test waits.
 *
 * @module
 */
import { PROTOCOL_VERSION, type StatusReport } from "../../src/protocol/messages.ts";
import { messageOf } from "../../src/protocol/validate.ts";
import { connectControl, nobodyThere } from "../../src/protocol/client.ts";
import { readFileSync } from "node:fs";
import { processRuns } from "../../src/proc.ts";
import { sleep } from "./procs.ts";

export type { StatusReport };

/**
 * The status report of the generation answering on the control socket at
 * `controlPath`, or null when none answered: nobody listens there (yet), the
 * connection was closed (a generation that stops serving the control socket
 * closes its peers), the server's limits turned the request away for now
 * (`busy`, `rate-limited`), or no reply came within `timeoutMs`. Throws when the
 * server answers something else than a status reply (e.g. a refusal).
 */
export async function serverStatus(
  controlPath: string,
  timeoutMs = 5_000,
): Promise<StatusReport | null> {
  let channel: ReturnType<typeof connectControl>;
  try {
    channel = connectControl(controlPath);
  } catch (err) {
    if (nobodyThere(err)) return null;
    throw err;
  }
  try {
    try {
      channel.send({ type: "status", v: PROTOCOL_VERSION });
    } catch {
      return null; // closed before it read the request
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [got] = channel.receive();
      if (got) {
        const m = messageOf(got.msg);
        if (m.type === "status-reply") return m.status;
        // The control socket's limits (src/lifecycle/control.ts): transient, ask again later.
        if (m.type === "failed" && ["busy", "rate-limited", "idle"].includes(m.reason)) return null;
        throw new Error(`control socket ${controlPath} answered ${JSON.stringify(m)}`);
      }
      if (channel.eof || Date.now() > deadline) return null;
      await sleep(10);
    }
  } catch (err) {
    // A generation that exits while the request is on its way resets the connection.
    if ((err as { code?: string }).code === "ECONNRESET") return null;
    throw err;
  } finally {
    channel.close();
  }
}

/** Options of {@link waitForState}. */
export interface WaitForStateOptions {
  /** Give up after this many ms (default 30 s). */
  timeoutMs?: number;
  /** Poll interval (default 50 ms). */
  intervalMs?: number;
  /** The server's log lines, whose tail goes into the timeout error for diagnosis. */
  log?: readonly string[];
}

/**
 * Polls {@link serverStatus} every ~50 ms until a report satisfies `predicate`
 * and resolves with that report; rejects after `timeoutMs` with the last
 * report seen (and the tail of `log`, if given).
 */
export async function waitForState(
  controlPath: string,
  predicate: (s: StatusReport) => boolean,
  { timeoutMs = 30_000, intervalMs = 50, log }: WaitForStateOptions = {},
): Promise<StatusReport> {
  const deadline = Date.now() + timeoutMs;
  let last: StatusReport | null = null;
  for (;;) {
    const left = deadline - Date.now();
    const s = await serverStatus(controlPath, Math.max(100, Math.min(left, 5_000)));
    if (s) {
      last = s;
      if (predicate(s)) return s;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${predicate} on ${controlPath}; ` +
          `last status: ${JSON.stringify(last)}` +
          (log ? `\nlog:\n${log.slice(-30).join("\n")}` : ""),
      );
    }
    await sleep(intervalMs);
  }
}

/**
 * Waits until generation `generation` (pid `pid`, if given) answers on
 * `controlPath` in state "ready", and resolves with its report.
 */
export function readyGeneration(
  controlPath: string,
  generation: number,
  opts: WaitForStateOptions & { pid?: number } = {},
): Promise<StatusReport> {
  const { pid, ...rest } = opts;
  return waitForState(
    controlPath,
    (s) =>
      s.generation === generation && s.state === "ready" && (pid === undefined || s.pid === pid),
    rest,
  );
}

/** The port of the report's first listener (or `udp:` socket) on `hostname` (127.0.0.1 by default). */
export function portOf(s: StatusReport, hostname = "127.0.0.1"): number {
  for (const { addr } of s.listeners) {
    const m = /^(?:udp:)?(.*):(\d+)$/.exec(addr);
    if (m && m[1] === hostname) return Number(m[2]);
  }
  throw new Error(`no ${hostname} listener in ${JSON.stringify(s.listeners)}`);
}

/**
 * Waits until the PID file at `pidFile` names a running process other than
 * `previousPid` (a generation writes it in `ready()`), and resolves with that
 * pid: the next generation is ready. It reads no control socket, so it can
 * be polled while the previous generation drains without adding work to the
 * server: while a previous generation runs, a status reply counts its
 * connections (a kernel dump of every TCP socket of the namespace).
 */
export async function nextPidInPidFile(
  pidFile: string,
  previousPid: number,
  { timeoutMs = 30_000, intervalMs = 10, log }: WaitForStateOptions = {},
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      last = readFileSync(pidFile, "utf8").trim();
    } catch {
      last = "(no PID file)";
    }
    const pid = Number(last);
    if (/^\d+$/.test(last) && pid !== previousPid && processRuns(pid)) return pid;
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${pidFile} to name a generation after ` +
          `${previousPid}; it holds ${last}` + (log ? `\nlog:\n${log.slice(-30).join("\n")}` : ""),
      );
    }
    await sleep(intervalMs);
  }
}
