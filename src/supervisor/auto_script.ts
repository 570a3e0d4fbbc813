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
 * does not load into), `pre`/`post` scripts, deno task dependencies, an empty
 * script or a bare `bun`/`deno`, a config file over 1 MiB, bun flags other
 * than `--bun` before a script (they would apply to the runner, not started)
 * and flags before a deno task's name other than `-q`.
 *
 * @module
 */

import { closeSync, existsSync, openSync, readSync } from "node:fs";
import { basename, delimiter, join, resolve as resolvePath } from "node:path";
import process from "node:process";
import { invalid } from "../errors.ts";
import { AUTO_PRELOAD, AUTO_SERVE_LAUNCHER, autoArgv, bunPositional } from "./auto_argv.ts";

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
/** The largest package.json / deno.json(c) read: a larger one is refused, not read whole. */
const MAX_CONFIG_BYTES = 1 << 20;
/** Bun flags a script or package binary may be run with: the others would apply to the runner, which is gone. */
const RUNNER_FLAGS = new Set(["--bun", "-b", "--silent"]);

/** One resolution's directory, environment, and the config files it has read (each once). */
interface Ctx {
  cwd: string;
  env: Record<string, string>;
  json: Map<string, Record<string, unknown>>;
}

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
  const ctx: Ctx = { cwd, env: {}, json: new Map() };
  const out = resolve(argv, ctx, 0);
  return { argv: autoArgv(out, preload, launcher), env: ctx.env };
}

function resolve(argv: readonly string[], ctx: Ctx, depth: number): readonly string[] {
  if (depth > MAX_DEPTH) invalid("--auto with", argv.join(" "), "scripts that end in a command");
  const [runtime, ...rest] = argv;
  const name = basename(runtime);
  if (name === "bun") {
    const run = bunRun(rest, ctx, argv.join(" "));
    if (!run) return argv;
    if (run.bin) return binArgv(runtime, run.bun, run.name, [...run.args], ctx.cwd, argv.join(" "));
    const script = packageScript(ctx, run.name, `bun run ${run.name}`);
    return fromScript(script, runtime, run.bun, [...run.args], ctx, depth);
  }
  if (name === "deno" && rest[0] === "task") {
    const i = taskIndex(rest, argv.join(" "));
    const script = denoTask(ctx, rest[i]);
    return fromScript(script, runtime, false, rest.slice(i + 1), ctx, depth);
  }
  return argv;
}

/**
 * Where `deno task [-q] <task>`'s task name is. Other flags before it are
 * refused: `--config` / `--cwd` name another file or directory than the one
 * instar run reads, and a flag's value would be taken for the task.
 */
function taskIndex(rest: readonly string[], shown: string): number {
  let i = 1;
  while (rest[i] === "-q" || rest[i] === "--quiet") i++;
  if (rest[i]?.startsWith("-")) {
    invalid(
      "--auto with",
      shown,
      `\`deno task [-q] <task>\` without other flags before the task (\`${rest[i]}\`: ` +
        "run instar run in the directory that holds deno.json, or name the command itself)",
    );
  }
  if (rest[i] === undefined) invalid("--auto with", shown, "`deno task <task>`");
  return i;
}

/**
 * `bun [--bun] run [--bun] <name> [args]` or `bun [--bun] <name>` where `<name>` is
 * not a file: a package.json script (`bin` false) or else a package binary
 * (`bin` true, in node_modules/.bin), its name and args; else null.
 */
function bunRun(
  rest: readonly string[],
  ctx: Ctx,
  shown: string,
): { name: string; args: readonly string[]; bun: boolean; bin: boolean } | null {
  let i = bunPositional(rest, 0, shown);
  const run = rest[i] === "run";
  if (run) i = bunPositional(rest, i + 1, shown);
  const name = rest[i];
  if (name === undefined || existsSync(resolvePath(ctx.cwd, name))) return null;
  const flags = rest.slice(0, i).filter((a) => a !== "run");
  // `bun <name>` runs a script by that name when there is one, else a package binary,
  // as `bun run <name>` does; either in a child process the preload would not reach.
  const args = rest.slice(i + 1);
  const bun = flags.some((f) => f === "--bun" || f === "-b");
  let out: { name: string; args: readonly string[]; bun: boolean; bin: boolean } | null = null;
  if (scriptsOf(ctx)?.[name] !== undefined) out = { name, args, bun, bin: false };
  else if (existsSync(join(ctx.cwd, "node_modules", ".bin", name))) {
    out = { name, args, bun, bin: true };
  } else if (run) out = { name, args, bun, bin: false };
  if (out) runnerFlagsOnly(flags, name, shown);
  return out;
}

/** Refuses bun flags (other than --bun) given to the runner of a script or package binary. */
function runnerFlagsOnly(flags: readonly string[], name: string, shown: string): void {
  const other = flags.filter((f) => !RUNNER_FLAGS.has(f));
  if (other.length === 0) return;
  invalid(
    "--auto with",
    shown,
    `no bun flags but --bun before the script or binary \`${name}\` (${other.join(" ")} ` +
      "would apply to the runner, which instar run replaces by the command the script names: " +
      "put them in the script, e.g. `bun --smol server.js`)",
  );
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

/** `file`'s object, read once per resolution, at most MAX_CONFIG_BYTES of it. */
function readJson(file: string, what: string, ctx: Ctx): Record<string, unknown> {
  const known = ctx.json.get(file);
  if (known) return known;
  let head: Uint8Array;
  try {
    head = readHead(file, MAX_CONFIG_BYTES + 1);
  } catch (err) {
    return invalid("--auto with", what, `a readable ${file} (${(err as Error).message})`);
  }
  if (head.length > MAX_CONFIG_BYTES) {
    invalid("--auto with", what, `a ${file} of at most 1 MiB (it is larger)`);
  }
  try {
    const value = JSON.parse(stripJsonc(new TextDecoder().decode(head)));
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      ctx.json.set(file, value);
      return value as Record<string, unknown>;
    }
  } catch (err) {
    invalid("--auto with", what, `a readable ${file} (${(err as Error).message})`);
  }
  return invalid("--auto with", what, `${file} holding an object`);
}

/** The first `max` bytes of `file` (fewer when it is shorter). */
function readHead(file: string, max: number): Uint8Array {
  const fd = openSync(file, "r");
  try {
    const buf = new Uint8Array(max);
    let n = 0;
    for (let got = -1; got !== 0 && n < max; n += got) got = readSync(fd, buf, n, max - n, null);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

function scriptsOf(ctx: Ctx): Record<string, unknown> | null {
  const file = join(ctx.cwd, "package.json");
  if (!existsSync(file)) return null;
  const scripts = readJson(file, file, ctx).scripts;
  return scripts !== null && typeof scripts === "object" ? scripts as Record<string, unknown> : {};
}

function packageScript(ctx: Ctx, name: string, what: string): Script {
  const file = join(ctx.cwd, "package.json");
  const scripts = scriptsOf(ctx);
  if (scripts === null) invalid("--auto with", what, `a package.json in ${ctx.cwd} (none there)`);
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
  return { what, text, file, pkg: readJson(file, what, ctx) };
}

function denoTask(ctx: Ctx, name: string): Script {
  const what = `deno task ${name}`;
  for (const config of ["deno.json", "deno.jsonc"]) {
    const file = join(ctx.cwd, config);
    if (!existsSync(file)) continue;
    const tasks = readJson(file, what, ctx).tasks as Record<string, unknown> | undefined;
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
  return packageScript(ctx, name, what);
}

function fromScript(
  s: Script,
  runtime: string,
  bunFlag: boolean,
  args: string[],
  ctx: Ctx,
  depth: number,
): readonly string[] {
  const shown = `${s.what} (${JSON.stringify(s.text)} in ${s.file})`;
  if (SHELL.test(s.text)) {
    invalid("--auto with", shown, "a script that is one command, without shell syntax");
  }
  const words = s.text.trim().split(/\s+/).filter((w) => w !== "");
  while (words.length > 1 && ASSIGNMENT.test(words[0])) {
    const [k, v] = words.shift()!.split(/=(.*)/s, 2);
    ctx.env[k] = v;
  }
  const [program, ...more] = words;
  if (program === undefined || ((program === "bun" || program === "deno") && !more.length)) {
    invalid("--auto with", shown, "a script that names the command to run and its file");
  }
  scriptEnv(s, ctx);
  const rest = [...more, ...args];
  // `bun run --bun` runs `node` as bun (Bun puts a `node` that is bun first on PATH).
  if (program === "node" && bunFlag && basename(runtime) === "bun") {
    return resolve([runtime, "--bun", ...rest], ctx, depth + 1);
  }
  if (program === "bun" || program === "deno") {
    // The same binary as given when the script names the same runtime.
    const exe = basename(runtime) === program ? runtime : program;
    const flag = program === "bun" && bunFlag ? ["--bun"] : [];
    return resolve([exe, ...flag, ...rest], ctx, depth + 1);
  }
  return binArgv(runtime, bunFlag, program, rest, ctx.cwd, shown);
}

/** What `bun run` / `deno task` add: node_modules/.bin first on PATH, npm_* names. */
function scriptEnv(s: Script, ctx: Ctx): void {
  const { cwd, env } = ctx;
  env.PATH ??= [join(cwd, "node_modules", ".bin"), process.env.PATH ?? ""].join(delimiter);
  env.npm_lifecycle_event ??= s.what.split(" ").at(-1)!;
  env.npm_lifecycle_script ??= s.text;
  if (basename(s.file) !== "package.json") return;
  env.npm_package_json ??= s.file;
  for (const key of ["name", "version"]) {
    if (typeof s.pkg[key] === "string") env[`npm_package_${key}`] ??= s.pkg[key] as string;
  }
}

/** Whether `file`'s `#!` line names bun: its first 256 bytes read, not the whole (maybe large) binary. */
function shebangIsBun(file: string): boolean {
  const head = new TextDecoder().decode(readHead(file, 256)).split("\n")[0];
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
