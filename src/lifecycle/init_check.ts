/**
 * Whether a fork/exec upgrade would take the whole service down: the
 * situations of a container without a supervisor.
 *
 * - PID 1 of a pid namespace (`docker run`, Kubernetes, `unshare --pid`):
 *   when it exits after handing over, the kernel kills every other process of
 *   the namespace, the new generation included.
 * - A child of an init that exits with its only child (`tini`,
 *   `docker run --init`'s docker-init, `dumb-init`, podman's `catatonit`): the
 *   init exits when the old generation does, and the container ends.
 *
 * In both, `instar run -- <command>` (src/supervisor/) is the fix: it stays
 * PID 1 (or the init's only child) and keeps the new generations. An upgrade
 * through the control socket's handover (a process started independently)
 * does not depend on the old generation's parent or children, so only fork/exec
 * upgrades are refused.
 *
 * @module
 */

import { pid as ownPid, ppid as ownPpid } from "../host.ts";
import { UpgradeRefusedError } from "../errors.ts";
import { commandName, executablePath, namespacePid, parentOf } from "../proc.ts";

/**
 * Inits that exit as soon as their (only) child exits. Matched on the
 * parent's command name and on its executable's file name.
 */
const EXITING_INITS = new Set(["tini", "tini-static", "docker-init", "dumb-init", "catatonit"]);

/**
 * Why a process cannot be upgraded by fork/exec without a supervisor.
 *
 * @example
 * ```ts
 * import { initHazard } from "./src/lifecycle/init_check.ts"; // internal: used by the Upgrader
 *
 * const hazard = initHazard();
 * if (hazard) console.error(`upgrades will be refused (${hazard.reason}): ${hazard.message}`);
 * ```
 */
export interface InitHazard {
  /**
   * `pid-1`: PID 1 of its pid namespace; `init-parent`: its parent is an init that exits with it;
   * `unsupported-platform`: portable mode, where no socket can pass to a next generation.
   */
  readonly reason: "pid-1" | "init-parent" | "unsupported-platform";
  /** What happens, and what to do instead (names `instar run`). */
  readonly message: string;
}

const ADVICE = "run the server under the supervisor instead, `instar run [options] -- <command>` " +
  "(it stays and keeps each new generation), or hand over through the control socket to a " +
  "process started outside this pid namespace";

/**
 * Detects, for process `pid` (this one by default), whether a fork/exec
 * upgrade would end the service; `null` when it would not or when `/proc`
 * cannot tell. Reads `/proc`: call it once at start-up, not per request.
 *
 * @example
 * ```ts
 * import { initHazard } from "./src/lifecycle/init_check.ts"; // internal: used by the Upgrader
 *
 * console.log(initHazard()?.reason ?? "fork/exec upgrades are safe here");
 * ```
 */
export function initHazard(pid: number | "self" = "self"): InitHazard | null {
  const self = pid === "self";
  if ((self && ownPid() === 1) || namespacePid(pid) === 1) {
    return {
      reason: "pid-1",
      message: "this generation is PID 1 of its pid namespace (a container's main process): " +
        "when it exits after an upgrade the kernel kills every process of the namespace, " +
        `the new generation too; ${ADVICE}`,
    };
  }
  const ppid = self ? ownPpid() : parentOf(pid);
  if (!ppid || ppid <= 0) return null; // the parent is outside this pid namespace
  const fileName = (n: string | null) => n && n.slice(n.lastIndexOf("/") + 1);
  const names = [commandName(ppid), executablePath(ppid)].map(fileName);
  const init = names.find((n) => n !== null && EXITING_INITS.has(n));
  if (!init) return null;
  return {
    reason: "init-parent",
    message: `the parent of this generation, pid ${ppid}, is ${init}, an init that exits ` +
      "when its only child exits: the container would end with the old generation, the new " +
      `one with it; ${ADVICE} (e.g. \`${init} -- instar run -- <command>\`)`,
  };
}

/**
 * Portable mode's hazard (src/runtime/platform.ts): every upgrade trigger is
 * refused; `why` says why portable mode runs, `enable` what would upgrade.
 *
 * @example
 * ```ts
 * import { portableHazard } from "./src/lifecycle/init_check.ts"; // internal: used by the Upgrader
 *
 * console.log(portableHazard("darwin-arm64", "upgrades need Linux").reason); // "unsupported-platform"
 * ```
 */
export function portableHazard(why: string, enable: string): InitHazard {
  return {
    reason: "unsupported-platform",
    message: `portable mode (${why}) cannot upgrade: ${enable}; this generation serves on`,
  };
}

/**
 * The refusal of a fork/exec upgrade for a detected hazard (a fresh error
 * each time, for the `upgrade-refused` event), or `null` when there is none.
 *
 * @example
 * ```ts
 * import { forkUpgradeRefusal, initHazard } from "./src/lifecycle/init_check.ts";
 *
 * const refused = forkUpgradeRefusal(initHazard());
 * if (refused) console.error(refused.reason, refused.message);
 * ```
 */
export function forkUpgradeRefusal(hazard: InitHazard | null): UpgradeRefusedError | null {
  return hazard && new UpgradeRefusedError(hazard.reason, hazard.message);
}

/**
 * The refusal of a handover to the process `peerPid` (from SO_PEERCRED, as
 * this process's pid namespace sees it), or `null`. With a hazard, a peer this
 * namespace can see (pid > 0) lives in it or below it and would be killed
 * with it when this generation exits; a peer outside (pid 0: another
 * container sharing the control socket's volume, or the host) survives, and
 * is let through.
 *
 * @example
 * ```ts
 * import { handoverRefusal, initHazard } from "./src/lifecycle/init_check.ts";
 *
 * console.log(handoverRefusal(initHazard(), 0)); // null: a peer outside this pid namespace
 * ```
 */
export function handoverRefusal(
  hazard: InitHazard | null,
  peerPid: number,
): UpgradeRefusedError | null {
  if (!hazard || peerPid <= 0) return null;
  return new UpgradeRefusedError(
    hazard.reason,
    `handover refused: process ${peerPid} runs in this generation's pid namespace and would be ` +
      `killed with it: ${hazard.message}`,
  );
}
