/**
 * The process and file-system calls instar's start-up path needs (pid, env,
 * exit, signals, `/proc` reads, temp dirs), from what costs least in each
 * runtime: `Deno.*` on Deno, where the first `node:` module or the first touch
 * of `globalThis.process` sets up the whole Node compatibility layer (+8 MB
 * resident, docs/benchmarks.md "A minimal app's memory"); Bun's `process`
 * (+0.3 MB), `Bun.file` and libc (src/ffi/files.ts) on Bun, where `node:fs`
 * (+3 MB) is loaded only to make or remove a temporary directory, or by an
 * asynchronous readlink or readdir. Like `ffi/` and `runtime/`, this unit asks
 * which runtime runs; code above it does not.
 *
 * @module
 */

import type * as fs from "node:fs";
import type * as fsPromises from "node:fs/promises";
import { readDirNames, readFileBytes, readLinkText } from "./ffi/files.ts";
import { osArch } from "./ffi/mod.ts";

/** A signal name such as `SIGHUP`. */
export type HostSignal = string;

interface DenoHost {
  pid: number;
  ppid: number;
  env: {
    get(k: string): string | undefined;
    set(k: string, v: string): void;
    delete(k: string): void;
    toObject(): Record<string, string>;
  };
  execPath(): string;
  cwd(): string;
  addSignalListener(sig: string, fn: () => void): void;
  removeSignalListener(sig: string, fn: () => void): void;
  readFileSync(path: string): Uint8Array;
  readTextFileSync(path: string): string;
  readTextFile(path: string): Promise<string>;
  readLinkSync(path: string): string;
  readLink(path: string): Promise<string>;
  readDirSync(path: string): Iterable<{ name: string }>;
  readDir(path: string): AsyncIterable<{ name: string }>;
  makeTempDirSync(o: { dir: string; prefix: string }): string;
  removeSync(path: string, o: { recursive: boolean }): void;
  lstatSync(path: string): { isSocket: boolean | null };
  chmodSync(path: string, mode: number): void;
  errors: { NotFound: new (...a: never[]) => Error };
}

interface NodeProcess {
  pid: number;
  ppid: number;
  env: Record<string, string | undefined>;
  execPath: string;
  cwd(): string;
  exit(code: number): never;
  on(sig: string, fn: () => void): void;
  off(sig: string, fn: () => void): void;
  getBuiltinModule(id: string): unknown;
}

const G = globalThis as unknown as {
  Deno?: DenoHost;
  Bun?: { file(path: string): { text(): Promise<string> } };
  process: NodeProcess;
};
const D = G.Deno;

/** Bun's (and Node's) process object: cheap on Bun, never touched on Deno. */
function proc(): NodeProcess {
  return G.process;
}

/** node:fs, loaded on Bun by the first temporary directory (never on Deno). */
function nodeFs(): typeof fs {
  return builtin<typeof fs>("node:fs");
}

/** This process's pid. */
export function pid(): number {
  return D ? D.pid : proc().pid;
}

/** The parent's pid (0 when the parent is outside this pid namespace). */
export function ppid(): number {
  return D ? D.ppid : proc().ppid;
}

/** The platform, as `process.platform` names it (`linux`, `darwin`). */
export function platform(): string {
  return osArch().os;
}

/** The CPU architecture, as `process.arch` names it (`x64`, `arm64`). */
export function arch(): string {
  return osArch().arch;
}

/** The environment variable `name`, or `undefined`. */
export function getEnv(name: string): string | undefined {
  return D ? D.env.get(name) : proc().env[name];
}

/** Removes the environment variable `name` (so that children do not inherit it). */
export function deleteEnv(name: string): void {
  if (D) D.env.delete(name);
  else delete proc().env[name];
}

let denoEnv: Record<string, string | undefined> | undefined;

/**
 * The environment as a record (reads, writes and deletes reach the process's
 * environment), like `process.env`.
 */
export function envRecord(): Record<string, string | undefined> {
  if (!D) return proc().env;
  const env = D.env;
  return denoEnv ??= new Proxy({} as Record<string, string | undefined>, {
    get: (_, k) => typeof k === "string" ? env.get(k) : undefined,
    set: (_, k, v) => (typeof k === "string" && env.set(k, String(v)), true),
    deleteProperty: (_, k) => (typeof k === "string" && env.delete(k), true),
    has: (_, k) => typeof k === "string" && env.get(k) !== undefined,
    ownKeys: () => Object.keys(env.toObject()),
    getOwnPropertyDescriptor: (_, k) => {
      const value = typeof k === "string" ? env.get(k) : undefined;
      return value === undefined
        ? undefined
        : { value, writable: true, enumerable: true, configurable: true };
    },
  });
}

/** The runtime's executable. */
export function execPath(): string {
  return D ? D.execPath() : proc().execPath;
}

/** The working directory. */
export function cwd(): string {
  return D ? D.cwd() : proc().cwd();
}

/**
 * Ends this process with `code` through `process.exit()` in both runtimes: on
 * Deno, `Deno.exit()` would skip the `exit` event an application may listen
 * for, and memory no longer matters.
 */
export function exit(code: number): never {
  return (keptExit ?? proc().exit.bind(proc()))(code);
}

let keptExit: ((code: number) => never) | null = null;

/**
 * Remembers `process.exit` as it is now, for {@link exit}: instar/auto then
 * replaces the global (an application's `process.exit()` during a drain waits
 * for the drain), and instar's own exits must not wait for themselves.
 * `wrap` may put something around it (instar/auto marks its own exits, since
 * Deno's `process.exit` calls the global `Deno.exit`, which it replaces too).
 */
export function keepNativeExit(
  wrap: (exit: (code: number) => never) => (code: number) => never = (e) => e,
): (code: number) => never {
  keptExit ??= wrap(proc().exit.bind(proc()));
  return keptExit;
}

/**
 * Calls `fn` on `sig` until {@link offSignal}: while one listener is added the
 * signal's default action (ending the process) does not happen, as with
 * `process.on()`.
 */
export function onSignal(sig: HostSignal, fn: () => void): void {
  if (D) D.addSignalListener(sig, fn);
  else proc().on(sig, fn);
}

/** Removes a listener {@link onSignal} added. */
export function offSignal(sig: HostSignal, fn: () => void): void {
  if (D) D.removeSignalListener(sig, fn);
  else proc().off(sig, fn);
}

/**
 * Whether this process may read `path` without asking: always on Bun; on Deno
 * when the read permission is granted. A read Deno has not granted would
 * prompt on a terminal (or throw): callers that can do without skip it.
 */
export function mayRead(path: string): boolean {
  if (!D) return true;
  const permissions = (D as unknown as {
    permissions: { querySync(d: { name: string; path: string }): { state: string } };
  }).permissions;
  return permissions.querySync({ name: "read", path }).state === "granted";
}

/** The bytes of file `path`; throws when it cannot be read. */
export function readFileSync(path: string): Uint8Array {
  return D ? D.readFileSync(path) : readFileBytes(path);
}

/** The text (UTF-8) of file `path`; throws when it cannot be read. */
export function readTextSync(path: string): string {
  return D ? D.readTextFileSync(path) : new TextDecoder().decode(readFileBytes(path));
}

/** The text (UTF-8) of file `path`, read off the event loop. */
export function readText(path: string): Promise<string> {
  return D ? D.readTextFile(path) : G.Bun!.file(path).text();
}

/** Where symbolic link `path` points; throws when it is none. */
export function readLinkSync(path: string): string {
  return D ? D.readLinkSync(path) : readLinkText(path);
}

/** The names in directory `path`; throws when it cannot be read. */
export function readDirSync(path: string): string[] {
  return D ? Array.from(D.readDirSync(path), (e) => e.name) : readDirNames(path);
}

/** node:fs/promises on Bun, loaded by the first call that needs it. */
async function nodeFsPromises(): Promise<typeof fsPromises> {
  return await import("node:fs/promises");
}

/** Where symbolic link `path` points, read off the event loop. */
export async function readLink(path: string): Promise<string> {
  return D ? await D.readLink(path) : await (await nodeFsPromises()).readlink(path);
}

/** The names in directory `path`, read off the event loop. */
export async function readDir(path: string): Promise<string[]> {
  if (!D) return await (await nodeFsPromises()).readdir(path);
  const names: string[] = [];
  for await (const e of D.readDir(path)) names.push(e.name);
  return names;
}

/** The directory for temporary files, as `os.tmpdir()` gives it. */
export function tmpDir(): string {
  const dir = getEnv("TMPDIR") || getEnv("TMP") || getEnv("TEMP") || "/tmp";
  return dir.length > 1 && dir.endsWith("/") ? dir.slice(0, -1) : dir;
}

/** Creates a new directory (mode 0700) under {@link tmpDir} named `prefix` + random characters. */
export function makeTempDirSync(prefix: string): string {
  if (D) return D.makeTempDirSync({ dir: tmpDir(), prefix });
  return nodeFs().mkdtempSync(`${tmpDir()}/${prefix}`);
}

/** Removes `path` and what it holds; nothing when it does not exist (`rm -rf`). */
export function removeTreeSync(path: string): void {
  if (!D) return nodeFs().rmSync(path, { recursive: true, force: true });
  try {
    D.removeSync(path, { recursive: true });
  } catch (err) {
    if (!(err instanceof D.errors.NotFound)) throw err;
  }
}

/**
 * The `node:` builtin `id` (`node:net`, `node:crypto`), loaded now: for the code
 * that needs one only on a path a minimal generation never takes.
 */
export function builtin<T>(id: string): T {
  return proc().getBuiltinModule(id) as T;
}

/** Writes `text` to standard error. */
export function writeStderr(text: string): void {
  if (!D) {
    (proc() as unknown as { stderr: { write(s: string): void } }).stderr.write(text);
    return;
  }
  const out = (D as unknown as { stderr: { writeSync(b: Uint8Array): number } }).stderr;
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(out.writeSync(bytes));
}
