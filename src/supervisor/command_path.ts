/**
 * Where `instar run` finds the program it starts (options.ts), and where
 * `--auto` looks at it (auto_argv.ts).
 *
 * @module
 */

import { accessSync, constants } from "node:fs";
import { delimiter, isAbsolute, join, resolve } from "node:path";
import process from "node:process";
import { InstarError } from "../errors.ts";

/**
 * The absolute path of `command`: as given when it holds a slash, else the
 * first executable of that name on `PATH`. Throws `ENOENT` naming the search.
 *
 * @example
 * ```ts
 * import { resolveCommand } from "./command_path.ts";
 *
 * console.log(resolveCommand("sh")); // "/usr/bin/sh" or "/bin/sh"
 * ```
 */
export function resolveCommand(command: string, path = process.env.PATH ?? ""): string {
  const executable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (command.includes("/")) {
    const abs = isAbsolute(command) ? command : resolve(command);
    if (executable(abs)) return abs;
    throw new InstarError("ENOENT", `${command} is not an executable file`);
  }
  for (const dir of path.split(delimiter)) {
    if (dir && executable(join(dir, command))) return resolve(join(dir, command));
  }
  throw new InstarError(
    "ENOENT",
    `${command} was not found on PATH (${path || "empty"}): give its absolute path`,
  );
}
