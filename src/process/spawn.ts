/**
 * Starts a new program with exactly the given fds inherited, without ever
 * running JavaScript in the child (an FFI-forked child of Deno or Bun crashes
 * as soon as it does).
 *
 * Two backends:
 * - `fork`: a few hundred bytes of machine code (src/trampoline/<arch>.S)
 *   mapped executable. It blocks all signals, calls
 *   clone(CLONE_VM | CLONE_VFORK), and the child, on its own small stack,
 *   resets every signal disposition to SIG_DFL, clears FD_CLOEXEC on the listed
 *   fds, changes directory, unblocks signals and calls execve. The child
 *   reports a failure through the shared memory; the parent reaps it and throws.
 * - `posix_spawn`: glibc's (or musl's) posix_spawn with
 *   `adddup2(fd, fd)` per fd, an empty signal mask and every signal reset.
 *
 * @module
 */

import { openFds } from "../proc.ts";
import * as host from "../host.ts";
import { InstarError, invalid, SystemError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import { TRAMPOLINE_HEX } from "./trampoline/bytes.ts";

/**
 * How {@link spawn} starts the child: `auto` picks `fork` where a trampoline
 * exists for this CPU (and the kernel has CLOSE_RANGE_CLOEXEC), else `posix_spawn`.
 *
 * @example
 * ```ts
 * import { type SpawnBackend, spawn } from "@instar/instar/unstable";
 *
 * const backend: SpawnBackend = "posix_spawn";
 * spawn({ path: "/bin/true", argv: ["true"], env: [], fds: [], backend });
 * ```
 */
export type SpawnBackend = "fork" | "posix_spawn" | "auto";

/**
 * What {@link spawn} starts.
 *
 * @example
 * ```ts
 * import { type SpawnOptions, spawn } from "@instar/instar/unstable";
 *
 * const options: SpawnOptions = {
 *   path: "/usr/bin/env",
 *   argv: ["env"],
 *   env: ["LISTEN_FDS=1"],
 *   cwd: "/",
 *   fds: [],
 * };
 * spawn(options);
 * ```
 */
export interface SpawnOptions {
  /** Absolute path of the executable (no PATH search). */
  path: string;
  /** The argument vector, including argv[0]. */
  argv: readonly string[];
  /** Exactly the new environment, as `KEY=VALUE` entries. */
  env: readonly string[];
  /** The child's working directory; the parent's when absent. */
  cwd?: string;
  /** The fds the child inherits, each under its own number. FD_CLOEXEC is cleared in the child only. */
  fds: readonly number[];
  /** `auto` (default): `fork` where available, else `posix_spawn`. */
  backend?: SpawnBackend;
  /**
   * Fds the child gets under another number: `from` (open here, and not itself a
   * `to`) becomes `to` in the child (socket activation wants fds 3, 4, …, which the
   * runtime holds in this process). Only the `posix_spawn` backend can (`auto` picks it).
   */
  moves?: readonly { from: number; to: number }[];
}

/**
 * Starts `options.path` with exactly `options.argv`, `options.env` and the fds
 * in `options.fds` (plus whatever 0, 1 and 2 are; no other fd, not even one this
 * process inherited without FD_CLOEXEC), every signal at its default disposition
 * and none blocked. Returns the child's pid once the child has begun executing
 * the new program; the caller reaps it.
 * A failed exec throws a {@link SystemError} whose `code` is the errno name and
 * whose `syscall` is `execve`; the failed child has been reaped by then.
 *
 * @example
 * ```ts
 * import { spawn } from "@instar/instar/unstable";
 *
 * const pid = spawn({ path: "/bin/true", argv: ["true"], env: [], fds: [] });
 * console.log("started", pid); // the caller reaps it with waitpid(2)
 * ```
 */
export function spawn(options: SpawnOptions): number {
  const o = validate(options);
  const backend = o.moves.length && o.backend === "auto"
    ? "posix_spawn"
    : resolveBackend(o.backend);
  if (backend === "fork" && o.moves.length) {
    invalid("spawn backend", "fork", '"posix_spawn" or "auto" when fds are moved');
  }
  const args = encodeArgs(o);
  return backend === "fork" ? spawnFork(o, args) : spawnPosix(o, args);
}

/**
 * The backends {@link spawn} can use on this machine, concrete ones only
 * (`auto` resolves to the first).
 *
 * @example
 * ```ts
 * import { availableBackends } from "@instar/instar/unstable";
 *
 * console.log(availableBackends()); // [ "fork", "posix_spawn" ] on Linux x86_64
 * ```
 */
export function availableBackends(): ("fork" | "posix_spawn")[] {
  return forkSupported() ? ["fork", "posix_spawn"] : ["posix_spawn"];
}

// ---------------------------------------------------------------- validation

function hasNul(s: string): boolean {
  return s.includes("\0");
}

function validate(
  options: SpawnOptions,
): Required<Omit<SpawnOptions, "cwd" | "moves">> & { cwd?: string; moves: Move[] } {
  if (typeof options !== "object" || options === null) {
    invalid("spawn options", options, "an object");
  }
  const { path, argv, env, cwd, fds } = options;
  const backend = options.backend ?? "auto";
  if (typeof path !== "string" || !path.startsWith("/") || hasNul(path)) {
    invalid("spawn path", path, "an absolute path to an executable, without NUL bytes");
  }
  if (!Array.isArray(argv) || argv.length === 0) {
    invalid("spawn argv", argv, "a non-empty array of strings (argv[0] included)");
  }
  argv.forEach((a, i) => {
    if (typeof a !== "string" || hasNul(a)) invalid(`spawn argv[${i}]`, a, "a string without NUL");
  });
  if (!Array.isArray(env)) invalid("spawn env", env, 'an array of "KEY=VALUE" strings');
  env.forEach((e, i) => {
    if (typeof e !== "string" || hasNul(e) || e.indexOf("=") < 1) {
      invalid(`spawn env[${i}]`, e, 'a "KEY=VALUE" string without NUL');
    }
  });
  if (cwd !== undefined && (typeof cwd !== "string" || cwd === "" || hasNul(cwd))) {
    invalid("spawn cwd", cwd, "a directory path without NUL bytes, or undefined");
  }
  if (!Array.isArray(fds)) invalid("spawn fds", fds, "an array of open fds");
  fds.forEach((fd, i) => {
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
      invalid(`spawn fds[${i}]`, fd, "a non-negative integer fd");
    }
    try {
      sys.fcntl(fd, sys.C.F_GETFD);
    } catch (err) {
      throw new InstarError(
        "INVALID_ARGUMENT",
        `spawn fds[${i}] is ${fd}, which is not an open fd of this process; ` +
          "pass only fds that stay open until spawn() returns",
        { cause: err },
      );
    }
  });
  if (backend !== "fork" && backend !== "posix_spawn" && backend !== "auto") {
    invalid("spawn backend", backend, '"fork", "posix_spawn" or "auto"');
  }
  return { path, argv, env, cwd, fds, backend, moves: validMoves(options.moves ?? []) };
}

type Move = { from: number; to: number };

function validMoves(moves: readonly Move[]): Move[] {
  if (!Array.isArray(moves)) invalid("spawn moves", moves, "an array of { from, to } fds");
  const targets = new Set(moves.map((m) => m?.to));
  moves.forEach((m, i) => {
    const ok = (fd: unknown) => Number.isInteger(fd) && (fd as number) >= 0;
    if (typeof m !== "object" || m === null || !ok(m.from) || !ok(m.to)) {
      invalid(`spawn moves[${i}]`, JSON.stringify(m), "{ from, to } with non-negative fds");
    }
    // dup2 runs in order in the child: a source that is an earlier target would be gone.
    if (targets.has(m.from)) {
      invalid(`spawn moves[${i}].from`, m.from, "an fd that is not also a target (dup it higher)");
    }
    sys.fcntl(m.from, sys.C.F_GETFD); // EBADF now, not in the child
  });
  return [...moves];
}

function resolveBackend(b: SpawnBackend): "fork" | "posix_spawn" {
  if (b === "auto") return availableBackends()[0];
  if (b === "fork" && !forkSupported()) {
    throw new InstarError(
      "UNSUPPORTED_PLATFORM",
      `spawn backend "fork" needs a trampoline for this CPU (there are ${
        Object.keys(TRAMPOLINE_HEX).join(", ")
      }; this is ${host.platform()}-${host.arch()}) and Linux 5.11+ (close_range with ` +
        'CLOSE_RANGE_CLOEXEC); use backend "posix_spawn" or "auto"',
    );
  }
  return b;
}

// ---------------------------------------------------------------- argument block

// Offsets in the struct the trampoline reads (see src/trampoline/x86_64.S).
const A = {
  path: 0,
  argv: 8,
  envp: 16,
  cwd: 24,
  fds: 32,
  nfds: 40,
  stackTop: 48,
  err: 56,
  step: 60,
  fullMask: 72,
  header: 120,
} as const;

/** One buffer holding the header, the pointer arrays, the fd array and every string. */
interface Args {
  buf: Uint8Array;
  dv: DataView;
  /** Offsets into `buf`. */
  path: number;
  argv: number;
  envp: number;
  cwd: number; // -1: none
  fds: number;
}

const encoder = new TextEncoder();

function encodeArgs(
  o: {
    path: string;
    argv: readonly string[];
    env: readonly string[];
    cwd?: string;
    fds: readonly number[];
  },
): Args {
  const strings = [o.path, ...(o.cwd !== undefined ? [o.cwd] : []), ...o.argv, ...o.env].map((
    s,
  ) => encoder.encode(s));
  const argvOff = A.header;
  const envpOff = argvOff + 8 * (o.argv.length + 1);
  const fdsOff = envpOff + 8 * (o.env.length + 1);
  let strOff = fdsOff + ((4 * o.fds.length + 7) & ~7);
  const size = strOff + strings.reduce((n, s) => n + s.byteLength + 1, 0);
  const buf = new Uint8Array(size); // zeroed: NUL terminators and NULL array ends come free
  const dv = new DataView(buf.buffer);
  const base = sys.backend().addressOf(buf);
  const offsets = strings.map((s) => {
    const off = strOff;
    buf.set(s, off);
    strOff += s.byteLength + 1;
    return off;
  });
  let k = 0;
  const path = offsets[k++];
  const cwd = o.cwd !== undefined ? offsets[k++] : -1;
  for (let i = 0; i < o.argv.length; i++) {
    dv.setBigUint64(argvOff + 8 * i, base + BigInt(offsets[k++]), true);
  }
  for (let i = 0; i < o.env.length; i++) {
    dv.setBigUint64(envpOff + 8 * i, base + BigInt(offsets[k++]), true);
  }
  o.fds.forEach((fd, i) => dv.setInt32(fdsOff + 4 * i, fd, true));
  dv.setBigUint64(A.path, base + BigInt(path), true);
  dv.setBigUint64(A.argv, base + BigInt(argvOff), true);
  dv.setBigUint64(A.envp, base + BigInt(envpOff), true);
  dv.setBigUint64(A.cwd, cwd >= 0 ? base + BigInt(cwd) : 0n, true);
  dv.setBigUint64(A.fds, base + BigInt(fdsOff), true);
  dv.setBigUint64(A.nfds, BigInt(o.fds.length), true);
  return { buf, dv, path, argv: argvOff, envp: envpOff, cwd, fds: fdsOff };
}

function execError(errno: number, syscall: string, detail: string): SystemError {
  return new SystemError(syscall, errno, sys.errnoName(errno), detail);
}

// ---------------------------------------------------------------- fork backend

const CODE_SIZE = 0x10000; // one page on 4 KiB and 64 KiB page kernels
const STACK_SIZE = 0x10000; // the child's stack; it needs a few bytes at most

const TRAMPOLINE_SIG = { parameters: ["buffer"], result: "i64" } as const;

let trampoline:
  | { fn: (args: Uint8Array) => number | bigint; stackTop: bigint }
  | undefined;

function trampolineHex(): string | undefined {
  if (host.platform() !== "linux") return undefined;
  const arch = host.arch() === "x64" ? "x86_64" : host.arch() === "arm64" ? "aarch64" : "";
  return TRAMPOLINE_HEX[arch];
}

let closeRangeCloexec: boolean | undefined;

/** Whether the fork backend can run here: a trampoline for this CPU and CLOSE_RANGE_CLOEXEC. */
function forkSupported(): boolean {
  if (!trampolineHex()) return false;
  if (closeRangeCloexec === undefined) {
    // Probe on an fd that is close-on-exec already, so the probe changes nothing.
    const [r, w] = sys.pipe2(sys.C.O_CLOEXEC);
    try {
      sys.closeRange(r, r, sys.C.CLOSE_RANGE_CLOEXEC);
      closeRangeCloexec = true;
    } catch {
      closeRangeCloexec = false;
    } finally {
      sys.close(r);
      sys.close(w);
    }
  }
  return closeRangeCloexec;
}

function loadTrampoline(): NonNullable<typeof trampoline> {
  if (trampoline) return trampoline;
  const hex = trampolineHex()!;
  const code = new Uint8Array(hex.length / 2);
  for (let i = 0; i < code.length; i++) code[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  const C = sys.C;
  // Mapped once and kept for the life of the process: code, then the child's stack.
  const addr = sys.mmapAnonymous(CODE_SIZE + STACK_SIZE, C.PROT_READ | C.PROT_WRITE);
  sys.copyToAddress(addr, code);
  sys.mprotect(addr, CODE_SIZE, C.PROT_READ | C.PROT_EXEC);
  const fn = sys.backend().fn(addr, TRAMPOLINE_SIG);
  trampoline = { fn, stackTop: addr + BigInt(CODE_SIZE + STACK_SIZE) };
  return trampoline;
}

const STEP_SYSCALL = ["", "fcntl", "chdir", "execve", "close_range"];

function spawnFork(o: { path: string; cwd?: string; fds: readonly number[] }, a: Args): number {
  const t = loadTrampoline();
  a.dv.setBigUint64(A.stackTop, t.stackTop, true);
  a.dv.setBigUint64(A.fullMask, 0xffffffffffffffffn, true);
  // The child has called execve (or exited) when this returns: CLONE_VFORK.
  const r = Number(t.fn(a.buf));
  if (r < 0) throw execError(-r, "clone", `starting ${o.path}`);
  const errno = a.dv.getInt32(A.err, true);
  if (errno === 0) return r;
  sys.waitpidBlocking(r);
  const step = STEP_SYSCALL[a.dv.getInt32(A.step, true)] ?? "execve";
  const detail = step === "chdir"
    ? `changing the child's directory to ${o.cwd}`
    : step === "fcntl"
    ? `clearing FD_CLOEXEC on one of fds ${o.fds.join(", ")} in the child`
    : o.path;
  throw execError(errno, step, detail);
}

// ---------------------------------------------------------------- posix_spawn backend

/** This process's fds from 3 up that lack FD_CLOEXEC and are not in `keep`. */
function strayFds(keep: readonly number[]): number[] {
  const { libc } = sys.backend();
  const out: number[] = [];
  for (const fd of openFds()) {
    if (fd < 3 || keep.includes(fd)) continue;
    const flags = libc.fcntl(fd, sys.C.F_GETFD, 0); // -1: the directory listing's own fd, now closed
    if (flags >= 0 && (flags & sys.C.FD_CLOEXEC) === 0) out.push(fd);
  }
  return out;
}

function spawnPosix(
  o: { path: string; cwd?: string; fds: readonly number[]; moves: Move[] },
  a: Args,
): number {
  const { libc } = sys.backend();
  const C = sys.C;
  const opaque = sys.platform().layout.spawnOpaque.size;
  const sigset = sys.platform().layout.sigset.size;
  const fa = new Uint8Array(opaque);
  const attr = new Uint8Array(opaque);
  const check = (rc: number, what: string) => {
    if (rc !== 0) throw execError(rc, what, `preparing to start ${o.path}`);
  };
  check(libc.posix_spawn_file_actions_init(fa), "posix_spawn_file_actions_init");
  try {
    check(libc.posix_spawnattr_init(attr), "posix_spawnattr_init");
    try {
      // dup2(fd, fd) clears FD_CLOEXEC in the child only (glibc >= 2.29, musl).
      for (const fd of o.fds) {
        check(
          libc.posix_spawn_file_actions_adddup2(fa, fd, fd),
          "posix_spawn_file_actions_adddup2",
        );
      }
      for (const { from, to } of o.moves) {
        check(
          libc.posix_spawn_file_actions_adddup2(fa, from, to),
          "posix_spawn_file_actions_adddup2",
        );
      }
      // posix_spawn has no "close everything else": close the fds this process
      // inherited without FD_CLOEXEC (the runtimes' own fds all have it).
      for (const fd of strayFds([...o.fds, ...o.moves.map((m) => m.to)])) {
        check(libc.posix_spawn_file_actions_addclose(fa, fd), "posix_spawn_file_actions_addclose");
      }
      if (o.cwd !== undefined) {
        check(
          libc.posix_spawn_file_actions_addchdir_np(fa, a.buf.subarray(a.cwd)),
          "posix_spawn_file_actions_addchdir_np",
        );
      }
      const empty = new Uint8Array(sigset);
      // Every signal 1..64 by hand: glibc's sigfillset leaves out its internal
      // signals 32 and 33, which posix_spawn would then leave ignored.
      const all = new Uint8Array(sigset);
      all.fill(0xff, 0, 8);
      check(
        libc.posix_spawnattr_setflags(attr, C.POSIX_SPAWN_SETSIGMASK | C.POSIX_SPAWN_SETSIGDEF),
        "posix_spawnattr_setflags",
      );
      check(libc.posix_spawnattr_setsigmask(attr, empty), "posix_spawnattr_setsigmask");
      check(libc.posix_spawnattr_setsigdefault(attr, all), "posix_spawnattr_setsigdefault");
      const pid = new Int32Array(2);
      const rc = libc.posix_spawn(
        new Uint8Array(pid.buffer),
        a.buf.subarray(a.path),
        fa,
        attr,
        a.buf.subarray(a.argv),
        a.buf.subarray(a.envp),
      );
      // posix_spawn has reaped a child whose exec failed.
      if (rc !== 0) {
        throw execError(
          rc,
          "execve",
          o.cwd !== undefined ? `${o.path} (or changing directory to ${o.cwd})` : o.path,
        );
      }
      return pid[0];
    } finally {
      libc.posix_spawnattr_destroy(attr);
    }
  } finally {
    libc.posix_spawn_file_actions_destroy(fa);
  }
}
