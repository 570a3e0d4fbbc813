/**
 * `instar run --auto`: the command line of an unmodified Bun or Deno server
 * with instar/auto (src/auto/preload.ts) loaded before it, through the
 * runtime's own `--preload` flag. The flag stays in the process's command
 * line, so every later generation (started from `/proc/self/cmdline`) loads
 * it too.
 *
 * - `bun [flags] <file> …` and `bun [flags] run [flags] <file> …` → `bun --preload <auto> …`
 *   (bun's flags known by name, so that the file is found: an unknown one is refused)
 * - `deno run [flags] <file> …` → `deno run --preload <auto> [flags] <file> …`
 * - `deno serve [flags] <file>` → `deno run [flags] <auto/deno_serve_main.ts> <file> --port
 *   <p> --host <h>`: Deno 2.9.6 does not run a preload for `deno serve`, so a launcher
 *   imports the module and serves its default export (`--port`/`--host` as `deno serve`
 *   has them, default 8000 and 0.0.0.0; other flags' values written with `=`; no
 *   `--parallel`, no arguments after the file)
 *
 * Opt-in, never guessed: an application that creates its own Upgrader must
 * not get a second one. Refused with `INVALID_ARGUMENT`, naming why: another
 * program (instar/auto runs in Bun and Deno only), `bun run <script>` (a
 * package.json script starts the server as another process, which the
 * preload would not reach: `instar run` resolves scripts to their command
 * first, auto_script.ts) and any other deno subcommand.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { basename } from "node:path";
import { invalid } from "../errors.ts";
import { isCompiledBun } from "./bun_binary.ts";
import { resolveCommand } from "./command_path.ts";

/** The preload's path in this copy of instar. */
export const AUTO_PRELOAD: string = decodeURIComponent(
  new URL("../auto/preload.ts", import.meta.url).pathname,
);

/** The `deno serve` launcher's path in this copy of instar. */
export const AUTO_SERVE_LAUNCHER: string = decodeURIComponent(
  new URL("../auto/deno_serve_main.ts", import.meta.url).pathname,
);

/** `deno serve [flags] <file>` as `deno run [flags] <launcher> <file> --port <p> --host <h>`. */
function denoServeArgv(argv: readonly string[], launcher: string): string[] {
  const [runtime, , ...rest] = argv;
  const flags: string[] = [];
  let port = "8000", host = "0.0.0.0", i = 0;
  for (; i < rest.length && rest[i].startsWith("-"); i++) {
    const [flag, inline] = rest[i].split(/=(.*)/s, 2);
    if (flag === "--port" || flag === "--host") {
      const value = inline ?? rest[++i];
      if (value === undefined) invalid(flag, "missing", "a value");
      if (flag === "--port") port = value;
      else host = value;
    } else if (flag === "--parallel") {
      invalid(
        "--auto with",
        argv.join(" "),
        "`deno serve` without --parallel (one process serves)",
      );
    } else flags.push(rest[i]);
  }
  const file = rest[i];
  if (file === undefined || i + 1 !== rest.length) {
    invalid(
      "--auto with",
      argv.join(" "),
      "`deno serve [flags] <file>` with nothing after the file",
    );
  }
  return [runtime, "run", ...flags, launcher, file, "--port", port, "--host", host];
}

/** Bun 1.4.5's flags (`bun --help`) that take the next word as their value. */
const BUN_VALUE_FLAGS = new Set(
  ("-r --preload --require --import --elide-lines -F --filter --shell --watch-kill-signal " +
    "--cpu-prof-name --cpu-prof-dir --cpu-prof-interval --heap-prof-name --heap-prof-dir " +
    "--heap-prof-interval --install -e --eval -p --print --port --conditions " +
    "--fetch-preconnect --max-http-header-size --dns-result-order --redirect-warnings " +
    "--disable-warning --title --unhandled-rejections --console-depth --user-agent " +
    "--cron-title --cron-period --main-fields --extension-order --tsconfig-override -d " +
    "--define --drop --feature -l --loader --jsx-factory --jsx-fragment --jsx-import-source " +
    "--jsx-runtime --env-file -c --config").split(" "),
);

/** Bun 1.4.5's flags that take no value (or only one written with `=`, like `--inspect`). */
const BUN_BOOLEAN_FLAGS = new Set(
  ("-b --bun --silent --smol --hot --watch --no-clear-screen --if-present --no-install -i " +
    "--prefer-offline --prefer-latest --expose-gc --no-deprecation --throw-deprecation " +
    "--no-warnings --trace-warnings --trace-deprecation --pending-deprecation " +
    "--zero-fill-buffers --use-system-ca --use-openssl-ca --use-bundled-ca --no-addons " +
    "--no-ffi-cc --no-macros --no-env-file --preserve-symlinks --preserve-symlinks-main " +
    "--insecure-http-parser --inspect --inspect-wait --inspect-brk --check --cpu-prof " +
    "--cpu-prof-md --heap-prof --heap-prof-md --no-orphans --jsx-side-effects " +
    "--ignore-dce-annotations --experimental-http2-fetch --experimental-http3-fetch " +
    "--experimental-stream-iter --tls-min-v1.0 --tls-min-v1.1 --tls-min-v1.2 --tls-min-v1.3 " +
    "--tls-max-v1.2 --tls-max-v1.3 --redis-preconnect --sql-preconnect").split(" "),
);

/**
 * The index of the first word of `args` from `from` on that is not a bun flag
 * (or a flag's value): where `run`, a script, or a file is. A flag it does not
 * know is refused, as is `--cwd` (scripts and files would be looked up
 * elsewhere than where instar run looks): whether it takes the next word
 * decides what the command runs.
 */
export function bunPositional(args: readonly string[], from: number, shown: string): number {
  let i = from;
  for (; i < args.length && args[i].startsWith("-") && args[i] !== "-"; i++) {
    const flag = args[i].split("=", 1)[0];
    if (flag === "--cwd") {
      invalid(
        "--auto with",
        shown,
        "a command without bun's --cwd (run instar run in that directory)",
      );
    }
    if (args[i].includes("=") && flag.startsWith("--")) continue;
    if (BUN_VALUE_FLAGS.has(flag)) i++;
    else if (!BUN_BOOLEAN_FLAGS.has(flag)) {
      invalid(
        "--auto with",
        shown,
        `bun flags of Bun 1.4.5 (\`${flag}\` is not one instar run knows; ` +
          "whether it takes a value decides which word is the file or script)",
      );
    }
  }
  return i;
}

/** `argv` (argv[0] the runtime) with instar/auto preloaded; throws for a command it cannot serve. */
export function autoArgv(
  argv: readonly string[],
  preload: string = AUTO_PRELOAD,
  launcher: string = AUTO_SERVE_LAUNCHER,
): string[] {
  const [runtime, ...rest] = argv;
  const name = basename(runtime);
  if (name === "bun") {
    const shown = argv.join(" ");
    const first = bunPositional(rest, 0, shown);
    const file = rest[first] === "run" ? rest[bunPositional(rest, first + 1, shown)] : "";
    if (file !== "" && !(file !== undefined && existsSync(file))) {
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
    if (rest[0] === "serve") return denoServeArgv(argv, launcher);
    if (rest[0] !== "run") {
      invalid(
        "--auto with",
        argv.join(" "),
        "`deno run [flags] <file>` or `deno serve [flags] <file>`",
      );
    }
    return [runtime, "run", "--preload", preload, ...rest.slice(1)];
  }
  return invalid("--auto with", argv.join(" "), notBunNorDeno(runtime));
}

/** What a program that is neither bun nor deno should be instead; a compiled Bun binary gets the entry form. */
function notBunNorDeno(program: string): string {
  let path: string;
  try {
    path = resolveCommand(program);
  } catch {
    return "a bun or deno command (instar/auto runs in those)";
  }
  if (!isCompiledBun(path)) return "a bun or deno command (instar/auto runs in those)";
  return `a bun or deno command: ${program} is a compiled Bun binary (bun build --compile), ` +
    "which takes no preload at run time. Compile instar/auto into it, from an entry file " +
    '`import "instar/auto"; await import("./server.js");` (docs/compiled-binaries.md), ' +
    `and run it without --auto: instar run -- ${program}`;
}
