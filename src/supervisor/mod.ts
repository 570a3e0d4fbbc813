/**
 * `instar run`: the supervisor, module by module (docs/supervisor.md).
 *
 * @module
 */

export { runSupervisor } from "./run.ts";
export {
  type Generation,
  Supervisor,
  type SupervisorLog,
  type SupervisorState,
} from "./supervisor.ts";
export { parseRunArgs, RUN_HELP, type RunOptions } from "./options.ts";
export { type ListenSpec, parseListenSpec } from "./listen_spec.ts";
