/**
 * `instar run`: the supervisor reads its own options; its bad usage
 * (`INVALID_ARGUMENT`) is the CLI's usage error (exit status 2).
 *
 * @module
 */

import type { InstarError } from "../errors.ts";
import { runSupervisor } from "../supervisor/run.ts";
import { UsageError } from "./args.ts";

/** Runs `instar run` with `args` (what follows `run`); resolves with the exit status. */
export async function run(
  args: string[],
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  try {
    return await runSupervisor(args, out, err);
  } catch (e) {
    if ((e as InstarError).code === "INVALID_ARGUMENT") throw new UsageError((e as Error).message);
    throw e;
  }
}
