/**
 * `instar run --auto -- bun run <script>` and `-- deno task <task>`: the
 * package.json script (or deno.json task) read and started as the command it
 * names, with instar/auto preloaded (auto_argv.ts).
 *
 * Why not the runner itself: `bun run start` and `deno task start` start the
 * server as their own child, so the process `instar run` starts is the
 * runner, not the server. The server's READY=1 would come from a process the
 * supervisor does not deem the generation, its exit would be reaped by the
 * runner, and a SIGHUP would reach the runner, which does not upgrade.
 * (`BUN_OPTIONS=--preload=…` does reach the server through `bun run`, tested on
 * Bun 1.4.5, but leaves this process tree, and reaches every other bun process
 * the script starts.) So the script is read here and its command started
 * directly, in the same directory, with what the runner would have added to
 * the environment (`node_modules/.bin` first on `PATH`, `npm_lifecycle_event`,
 * `npm_package_name`, …). The runner is gone from every generation's command
 * line, which is also what every later generation is started from.
 *
 * Only scripts that are one command are taken: `[NAME=value …] bun …`,
 * `[NAME=value …] deno …`, or a package binary (`next start`) run with
 * `bun run --bun`, or one whose `#!` line names bun. Refused with
 * `INVALID_ARGUMENT`, naming the script and why: shell syntax (`&&`, `|`,
 * quotes, `$`), a script that runs `node` (or any other program instar/auto
 * does not load into), `pre`/`post` scripts, deno task dependencies.
 *
 * @module
 */

import { existsSync, readFileSync } from "node:fs";
import { basename, delimiter, join, resolve as resolvePath } from "node:path";
import process from "node:process";
import { invalid } from "../errors.ts";
import { AUTO_PRELOAD, AUTO_SERVE_LAUNCHER, autoArgv } from "./auto_argv.ts";

/** A command line with instar/auto preloaded, and what it adds to every generation's environment. */
export interface AutoCommand {
  /** argv, `argv[0]` the runtime (as given, or `bun` / `deno` as the script names it). */
  argv: string[];
  /** Variables a script runner would set (empty for a command given directly). */
  env: Record<string, string>;
}

interface Script {
  /** `bun run start`, `deno task start`: how the refusals name it. */
  what: string;
  text: string;
  /** Where it is defined. */
  file: string;
  /** package.json's name and version, for `npm_package_*`. */
  pkg: Record<string, unknown>;
}

const SHELL = /[|&;<>()$`\\*?{}[\]~#!'"\n]/;
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;
const MAX_DEPTH = 4; // a script that runs `bun run <another script>`, and so on

/**
 * `argv` with instar/auto preloaded, a package.json script or deno task
 * resolved to the command it runs (`cwd` holds package.json / deno.json).
 * Throws `INVALID_ARGUMENT` for a command or script it cannot preload.
 */
export function autoCommand(
  argv: readonly string[],
  cwd: string = process.cwd(),
  preload: string = AUTO_PRELOAD,
  launcher: string = AUTO_SERVE_LAUNCHER,
): AutoCommand {
  const env: Record<string, string> = {};
  const out = resolve(argv, cwd, env, 0);
  return { argv: autoArgv(out, preload, launcher), env };
}

function resolve(
  argv: readonly string[],
  cwd: string,
  env: Record<string, string>,
  depth: number,
): readonly string[] {
  if (depth > MAX_DEPTH) invalid("--auto with", argv.join(" "), "scripts that end in a command");
  const [runtime, ...rest] = argv;
  const name = basename(runtime);
  if (name === "bun") {
    const run = bunRun(rest, cwd);
    if (!run) return argv;
    if (run.bin) return binArgv(runtime, run.bun, run.name, [...run.args], cwd, argv.join(" "));
    const script = packageScript(cwd, run.name, `bun run ${run.name}`);
    return fromScript(script, runtime, run.bun, [...run.args], cwd, env, depth);
  }
  if (name === "deno" && rest[0] === "task") {
    const i = rest.findIndex((a, k) => k > 0 && !a.startsWith("-"));
    if (i < 0) invalid("--auto with", argv.join(" "), "`deno task <task>`");
    const script = denoTask(cwd, rest[i]);
    return fromScript(script, runtime, false, rest.slice(i + 1), cwd, env, depth);
  }
  return argv;
}

/**
 * `bun [--bun] run [--bun] <name> [args]` or `bun [--bun] <name>` where `<name>` is
 * not a file: a package.json script (`bin` false) or else a package binary
 * (`bin` true, in node_modules/.bin), its name and args; else null.
 */
function bunRun(
  rest: readonly string[],
  cwd: string,
): { name: string; args: readonly string[]; bun: boolean; bin: boolean } | null {
  let i = 0, bun = false, run = false;
  for (; i < rest.length; i++) {
    if (rest[i] === "--bun" || rest[i] === "-b") bun = true;
    else if (rest[i] === "run" && !run) run = true;
    else if (rest[i] === "--silent") continue;
    else break;
  }
  const name = rest[i];
  if (name === undefined || name.startsWith("-") || existsSync(resolvePath(cwd, name))) return null;
  // `bun <name>` runs a script by that name when there is one, else a package binary,
  // as `bun run <name>` does; either in a child process the preload would not reach.
  const args = rest.slice(i + 1);
  if (scriptsOf(cwd)?.[name] !== undefined) return { name, args, bun, bin: false };
  if (existsSync(join(cwd, "node_modules", ".bin", name))) return { name, args, bun, bin: true };
  return run ? { name, args, bun, bin: false } : null;
}

/**
 * A package binary (`next start`) run by bun in this process: its path, with
 * `--bun` when given (or its `#!` line names bun). Without, bun would start it
 * with node, which instar/auto cannot be loaded into: refused.
 */
function binArgv(
  runtime: string,
  bunFlag: boolean,
  program: string,
  args: string[],
  cwd: string,
  shown: string,
): string[] {
  const bin = join(cwd, "node_modules", ".bin", program);
  if (basename(runtime) === "bun" && existsSync(bin) && (bunFlag || shebangIsBun(bin))) {
    return [runtime, ...(bunFlag ? ["--bun"] : []), bin, ...args];
  }
  const why = existsSync(bin)
    ? `\`${program}\` (${bin}) would run under node`
    : `\`${program}\` is neither bun nor deno`;
  return invalid(
    "--auto with",
    shown,
    `a command that runs bun or deno: ${why}, and instar/auto loads into bun and deno only ` +
      "(make it `bun <file>` or `deno run -A <file>`; `bun --bun` or `bun run --bun <script>` " +
      "runs node and package binaries with bun)",
  );
}

function readJson(file: string, what: string): Record<string, unknown> {
  try {
    const value = JSON.parse(stripJsonc(readFileSync(file, "utf8")));
    if (value !== null && typeof value === "object") return value as Record<string, unknown>;
  } catch (err) {
    invalid("--auto with", what, `a readable ${file} (${(err as Error).message})`);
  }
  return invalid("--auto with", what, `${file} holding an object`);
}

function scriptsOf(cwd: string): Record<string, unknown> | null {
  const file = join(cwd, "package.json");
  if (!existsSync(file)) return null;
  const scripts = readJson(file, file).scripts;
  return scripts !== null && typeof scripts === "object" ? scripts as Record<string, unknown> : {};
}

function packageScript(cwd: string, name: string, what: string): Script {
  const file = join(cwd, "package.json");
  const scripts = scriptsOf(cwd);
  if (scripts === null) invalid("--auto with", what, `a package.json in ${cwd} (none there)`);
  const text = scripts[name];
  if (typeof text !== "string") invalid("--auto with", what, `a script "${name}" in ${file}`);
  for (const extra of [`pre${name}`, `post${name}`]) {
    if (scripts[extra] !== undefined) {
      invalid(
        "--auto with",
        what,
        `a script without "${extra}" (instar run starts "${name}"'s command itself ` +
          `and would not run "${extra}": run it before, or fold it into "${name}")`,
      );
    }
  }
  return { what, text, file, pkg: readJson(file, what) };
}

function denoTask(cwd: string, name: string): Script {
  const what = `deno task ${name}`;
  for (const config of ["deno.json", "deno.jsonc"]) {
    const file = join(cwd, config);
    if (!existsSync(file)) continue;
    const tasks = readJson(file, what).tasks as Record<string, unknown> | undefined;
    const task = tasks?.[name];
    if (task === undefined) break;
    if (typeof task === "string") return { what, text: task, file, pkg: {} };
    const t = task as { command?: unknown; dependencies?: unknown[] };
    if (t.dependencies?.length) {
      invalid("--auto with", what, `a task without dependencies (${file} lists some)`);
    }
    if (typeof t.command !== "string") invalid("--auto with", what, `a command in ${file}`);
    return { what, text: t.command, file, pkg: {} };
  }
  // Deno runs package.json's scripts too when no deno.json task has the name.
  return packageScript(cwd, name, what);
}

function fromScript(
  s: Script,
  runtime: string,
  bunFlag: boolean,
  args: string[],
  cwd: string,
  env: Record<string, string>,
  depth: number,
): readonly string[] {
  const shown = `${s.what} (${JSON.stringify(s.text)} in ${s.file})`;
  if (SHELL.test(s.text)) {
    invalid("--auto with", shown, "a script that is one command, without shell syntax");
  }
  const words = s.text.trim().split(/\s+/);
  while (words.length > 1 && ASSIGNMENT.test(words[0])) {
    const [k, v] = words.shift()!.split(/=(.*)/s, 2);
    env[k] = v;
  }
  scriptEnv(s, cwd, env);
  const [program, ...more] = words;
  const rest = [...more, ...args];
  // `bun run --bun` runs `node` as bun (Bun puts a `node` that is bun first on PATH).
  if (program === "node" && bunFlag && basename(runtime) === "bun") {
    return resolve([runtime, "--bun", ...rest], cwd, env, depth + 1);
  }
  if (program === "bun" || program === "deno") {
    // The same binary as given when the script names the same runtime.
    const exe = basename(runtime) === program ? runtime : program;
    const flag = program === "bun" && bunFlag ? ["--bun"] : [];
    return resolve([exe, ...flag, ...rest], cwd, env, depth + 1);
  }
  return binArgv(runtime, bunFlag, program, rest, cwd, shown);
}

/** What `bun run` / `deno task` add: node_modules/.bin first on PATH, npm_* names. */
function scriptEnv(s: Script, cwd: string, env: Record<string, string>): void {
  env.PATH ??= [join(cwd, "node_modules", ".bin"), process.env.PATH ?? ""].join(delimiter);
  env.npm_lifecycle_event ??= s.what.split(" ").at(-1)!;
  env.npm_lifecycle_script ??= s.text;
  if (basename(s.file) !== "package.json") return;
  env.npm_package_json ??= s.file;
  for (const key of ["name", "version"]) {
    if (typeof s.pkg[key] === "string") env[`npm_package_${key}`] ??= s.pkg[key] as string;
  }
}

function shebangIsBun(file: string): boolean {
  const head = readFileSync(file, "utf8").slice(0, 200).split("\n")[0];
  return /^#!.*\bbun\b/.test(head);
}

/** JSON with comments and trailing commas (deno.jsonc) as plain JSON. */
function stripJsonc(text: string): string {
  let out = "", i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      const end = stringEnd(text, i);
      out += text.slice(i, end);
      i = end;
    } else if (text.startsWith("//", i)) {
      i = text.indexOf("\n", i) < 0 ? text.length : text.indexOf("\n", i);
    } else if (text.startsWith("/*", i)) {
      i = text.indexOf("*/", i) < 0 ? text.length : text.indexOf("*/", i) + 2;
    } else {
      out += c;
      i++;
    }
  }
  return out.replace(/,(\s*[}\]])/g, "$1");
}

function stringEnd(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
  return i + 1;
}
