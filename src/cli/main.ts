#!/usr/bin/env bun
/**
 * The `instar` command: asks a running server to upgrade, or reports its
 * status, through its control socket (or, with less detail, its PID file);
 * `instar run` supervises one.
 *
 *   instar upgrade --control /run/app/instar.sock
 *   instar upgrade --pid-file /run/app.pid
 *   instar status  --control /run/app/instar.sock [--json]
 *
 * Runs under Bun (`bunx instar …` after `bun add instar`) and Deno
 * (`deno run -A jsr:@instar/instar/cli …`).
 *
 * @module
 */

import process from "node:process";
import type { InstarError } from "../errors.ts";
import { parseCommand, UsageError } from "./args.ts";
import { run } from "./run.ts";
import { status } from "./status.ts";
import { upgrade } from "./upgrade.ts";

/**
 * The exit status of `instar upgrade` when the new generation was rolled back.
 *
 * @example
 * ```ts
 * import { EXIT_ROLLED_BACK, main } from "@instar/instar/cli";
 *
 * const code = await main(["upgrade", "--control", "/run/app/instar.sock"]);
 * if (code === EXIT_ROLLED_BACK) console.log("the old generation serves on");
 * ```
 */
export const EXIT_ROLLED_BACK = 3;

/**
 * Runs the command line `args`; returns the exit status. Output goes to `out` and `err`.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { main } from "@instar/instar/cli";
 *
 * process.exitCode = await main(["status", "--control", "/run/app/instar.sock", "--json"]);
 * ```
 */
export async function main(
  args: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  try {
    const cmd = parseCommand(args);
    if (cmd.name === "help") {
      out(cmd.text);
      return cmd.exitCode;
    }
    if (cmd.name === "run") return await run(cmd.args, out, err);
    if (cmd.name === "status") return status(cmd, out);
    return await upgrade(cmd, out, err);
  } catch (e) {
    return failed(e, err);
  }
}

// Bad usage exits 2, a rollback 3, any other failure 1; the reason goes to stderr.
function failed(e: unknown, err: (s: string) => void): number {
  if (e instanceof UsageError) {
    err(`instar: ${e.message} (see instar --help)\n`);
    return 2;
  }
  err(`instar: ${(e as Error).message}\n`);
  return (e as InstarError).code === "ROLLED_BACK" ? EXIT_ROLLED_BACK : 1;
}

if (import.meta.main) {
  process.exit(await main(process.argv.slice(2)));
}
