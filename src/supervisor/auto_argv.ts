/**
 * `instar run --auto`: the command line of an unmodified Bun or Deno server
 * with instar/auto (src/auto/preload.ts) loaded before it, through the
 * runtime's own `--preload` flag. The flag stays in the process's command
 * line, so every later generation (started from `/proc/self/cmdline`) loads
 * it too.
 *
 * - `bun [flags] <file> …` and `bun run <file> …` → `bun --preload <auto> …`
 * - `deno run [flags] <file> …` → `deno run --preload <auto> [flags] <file> …`
 *
 * Opt-in, never guessed: an application that creates its own Upgrader must
 * not get a second one. Refused with `INVALID_ARGUMENT`, naming why: another
 * program (instar/auto runs in Bun and Deno only), `bun run <script>` (a
 * package.json script starts the server as another process, which the
 * preload would not reach), `deno serve` (Deno 2.9.6 does not run a preload
 * there) and any other deno subcommand.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { basename } from "node:path";
import { invalid } from "../errors.ts";

/** The preload's path in this copy of instar. */
export const AUTO_PRELOAD: string = decodeURIComponent(
  new URL("../auto/preload.ts", import.meta.url).pathname,
);

/** `argv` (argv[0] the runtime) with instar/auto preloaded; throws for a command it cannot serve. */
export function autoArgv(argv: readonly string[], preload: string = AUTO_PRELOAD): string[] {
  const [runtime, ...rest] = argv;
  const name = basename(runtime);
  if (name === "bun") {
    if (rest[0] === "run" && !(rest[1] !== undefined && existsSync(rest[1]))) {
      invalid(
        "--auto with",
        argv.join(" "),
        "`bun <server file>`: `bun run <script>` starts the server as another process, " +
          "which instar/auto would not reach",
      );
    }
    return [runtime, "--preload", preload, ...rest];
  }
  if (name === "deno") {
    if (rest[0] !== "run") {
      invalid(
        "--auto with",
        argv.join(" "),
        "`deno run [flags] <file>` (`deno serve` does not run a preload on Deno 2.9.6: " +
          "serve the default export with Deno.serve under `deno run`)",
      );
    }
    return [runtime, "run", "--preload", preload, ...rest.slice(1)];
  }
  return invalid("--auto with", argv.join(" "), "a bun or deno command (instar/auto runs in those)");
}
