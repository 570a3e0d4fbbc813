/**
 * `instar run [options] -- <command> [args...]`: parses the command line,
 * starts the {@link Supervisor}, wires the signals, the control socket and
 * `--watch`, and returns the exit status once every generation is gone.
 *
 * @module
 */

import process from "node:process";
import type { ControlServer } from "../lifecycle/control.ts";
import { openControl } from "./control.ts";
import { parseRunArgs, RUN_HELP, type RunOptions } from "./options.ts";
import { Supervisor, type SupervisorLog } from "./supervisor.ts";
import { watchPaths } from "./watch.ts";
import { checkPortable, PortableSupervisor } from "./portable.ts";
import { platformMode } from "../runtime/platform.ts";

/**
 * Runs `instar run` with `args` (what follows `run`); resolves with the exit
 * status. Bad usage throws `INVALID_ARGUMENT` (the CLI exits with 2).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { runSupervisor } from "./run.ts";
 *
 * process.exit(await runSupervisor(["--", "deno", "run", "-A", "app.ts"]));
 * ```
 */
export async function runSupervisor(
  args: readonly string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  const o = parseRunArgs(args);
  if (!o) {
    out(RUN_HELP);
    return 0;
  }
  const log: SupervisorLog = {
    info: (m) => err(`instar run[${process.pid}]: ${m}\n`),
    warn: (m) => err(`instar run[${process.pid}]: warning: ${m}\n`),
  };
  const mode = platformMode();
  if (mode.mode === "portable") return await runPortable(o, log, mode.why);
  const sup = await Supervisor.start(o, log);
  const removeSignals = installSignals(sup, log);
  let control: ControlServer | null = null;
  let watcher: { close(): void } | null = null;
  try {
    if (o.control) control = await openControl(o.control, sup, log);
    watcher = startWatch(o, sup, log);
  } catch (e) {
    log.warn((e as Error).message);
    sup.stop("start-up failed");
  }
  const code = await sup.done;
  watcher?.close();
  if (control) {
    control.release();
    control.unlink();
  }
  removeSignals();
  log.info(`exiting with status ${code}`);
  return code;
}

// Portable mode (docs/portable.md): the command restarts instead of upgrading in place.
async function runPortable(o: RunOptions, log: SupervisorLog, why: string): Promise<number> {
  checkPortable(o, why);
  log.warn(
    `portable mode (${why}): crashes restart the command; SIGHUP and --watch restart it too, ` +
      "refusing connections between its stop and its next start (upgrades need Linux)",
  );
  const sup = new PortableSupervisor(o, log);
  const handlers: [string, () => void][] = [
    ["SIGHUP", () => sup.restart("SIGHUP")],
    ["SIGTERM", () => sup.stop("SIGTERM")],
    ["SIGINT", () => sup.stop("SIGINT")],
  ];
  for (const [sig, h] of handlers) {
    try {
      process.on(sig, h);
    } catch { /* a platform without it (Windows: SIGHUP, SIGTERM) */ }
  }
  const watcher = o.watch.length
    ? watchPaths(
      o.watch,
      { debounceMs: o.watchDebounceMs },
      (changed) => sup.restart(`watch: ${changed.slice(0, 3).join(", ")}`),
    )
    : null;
  const code = await sup.done;
  watcher?.close();
  for (const [sig, h] of handlers) process.off(sig, h);
  log.info(`exiting with status ${code}`);
  return code;
}

// SIGHUP upgrades, SIGTERM and SIGINT stop; none reaches its default action.
function installSignals(sup: Supervisor, log: SupervisorLog): () => void {
  const onHup = () => {
    sup.upgrade("SIGHUP").then(
      (pid) => log.info(`upgraded: pid ${pid} serves`),
      () => {/* logged by the supervisor */},
    );
  };
  const onTerm = () => sup.stop("SIGTERM");
  const onInt = () => sup.stop("SIGINT");
  process.on("SIGHUP", onHup);
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  return () => {
    process.off("SIGHUP", onHup);
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
  };
}

// --watch: a change upgrades the current generation (a static import, so a compiled binary has it).
function startWatch(
  o: RunOptions,
  sup: Supervisor,
  log: SupervisorLog,
): { close(): void } | null {
  if (o.watch.length === 0) return null;
  return watchPaths(o.watch, { debounceMs: o.watchDebounceMs }, watchUpgrades(sup, log));
}

// A change seen while an upgrade runs is upgraded again once that one ends: joining it would
// keep a generation that may have read the files before the change (the edit would be lost).
function watchUpgrades(sup: Supervisor, log: SupervisorLog): (changed: string[]) => void {
  let running = false;
  let again: string[] | null = null;
  const upgrade = (changed: string[]): void => {
    if (running) {
      again = changed;
      return;
    }
    running = true;
    sup.upgrade(`watch: ${changed.slice(0, 3).join(", ")}`).then(
      (pid) => log.info(`upgraded after a change: pid ${pid} serves`),
      () => {/* logged by the supervisor; the running generation serves on */},
    ).finally(() => {
      running = false;
      const next = again;
      again = null;
      if (next) upgrade(next);
    });
  };
  return upgrade;
}
