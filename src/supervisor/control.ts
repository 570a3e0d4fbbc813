/**
 * The supervisor's control socket (`instar run --control <path>`): the same
 * server and protocol as a generation's (src/lifecycle/control.ts, with its
 * limits), answering `instar status` with the current generation and
 * `instar upgrade` by upgrading it. Handovers are refused: the supervisor
 * holds no generation's sockets to hand over.
 *
 * @module
 */

import { UpgradeRefusedError } from "../errors.ts";
import { ControlServer } from "../lifecycle/control.ts";
import type { Supervisor, SupervisorLog } from "./supervisor.ts";

/**
 * Opens the control socket at `path` (mode 0600) and answers it for `sup`.
 *
 * @example
 * ```ts
 * import { openControl } from "./control.ts";
 * import type { Supervisor } from "./supervisor.ts";
 *
 * declare const sup: Supervisor;
 * const control = await openControl("/run/app/instar.sock", sup, console);
 * control.release();
 * ```
 */
export async function openControl(
  path: string,
  sup: Supervisor,
  log: SupervisorLog,
): Promise<ControlServer> {
  const server = await ControlServer.open(path, undefined);
  try {
    await server.start({
      status: () => sup.status(),
      upgrade: () => sup.upgrade("instar upgrade"),
      handover: () =>
        Promise.reject(
          new UpgradeRefusedError(
            "not-ready",
            "instar run does not hand over sockets: ask it for an upgrade instead",
          ),
        ),
      warn: (m) => log.warn(`control socket: ${m}`),
    });
  } catch (err) {
    server.release();
    server.unlink();
    throw err;
  }
  return server;
}
