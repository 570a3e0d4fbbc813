/**
 * What a runtime backend provides: the libc symbols and the few pointer
 * operations that differ between `Deno.dlopen` and `bun:ffi`.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import {
  type DL_SYMBOLS,
  type LibcSymbols,
  type NativeFunction,
  type Signature,
  SYMBOLS,
} from "./symbols.ts";

/** One runtime's FFI over libc. */
export interface Backend {
  /** Which runtime this backend serves. */
  readonly runtime: "deno" | "bun";
  /** The library file the symbols were loaded from (for a worker thread that loads its own). */
  readonly path: string;
  /** The functions of the symbol table. */
  readonly libc: LibcSymbols;
  /** The calling thread's errno; read it right after the failing call. */
  errno(): number;
  /** The address of a buffer's first byte. The buffer must stay referenced while the address is used. */
  addressOf(buf: Uint8Array): bigint;
  /**
   * The `length` bytes of native memory at `addr` as an ArrayBuffer (no copy;
   * the memory must stay mapped for as long as the buffer is reachable).
   */
  arrayBufferAt(addr: bigint, length: number): ArrayBuffer;
  /** Reads the NUL-terminated string at `addr`. */
  readCString(addr: bigint): string;
  /** A callable for native code at `addr` with the given signature. */
  fn<S extends Signature>(addr: bigint, sig: S): NativeFunction<S>;
}

/** dlopen(3), dlsym(3) and dlclose(3) as a backend bound them from {@link DL_SYMBOLS}. */
export type DlFunctions = {
  readonly [K in keyof typeof DL_SYMBOLS]: NativeFunction<(typeof DL_SYMBOLS)[K]>;
};

/** The runtime's library object for {@link DL_SYMBOLS}: both runtimes' have these two members. */
export interface DlLibrary {
  readonly symbols: DlFunctions;
  close(): void;
}

/**
 * Checks that the library at `path` has every symbol of {@link SYMBOLS}, so
 * that a libc that lacks one fails at start-up rather than at that function's
 * first use. They are looked up with dlopen(3)/dlsym(3) of that library
 * (`openDl` binds only {@link DL_SYMBOLS}), without binding any other; the
 * handle and the library object are closed after. Where it has no dlsym of its
 * own (glibc before 2.34 keeps it in libdl), `bindAll` binds the whole table
 * once instead, which fails the same way.
 */
export function checkTable(path: string, openDl: () => DlLibrary, bindAll: () => void): void {
  let lib: DlLibrary | undefined;
  try {
    lib = openDl();
  } catch { /* no dlsym of its own */ }
  let missing: string[] | null = null;
  try {
    missing = lib ? missingSymbols(lib.symbols, path) : null;
  } finally {
    lib?.close(); // used once: its trampolines are not kept
  }
  if (missing === null) bindAll();
  else if (missing.length) throw new Error(`${path} lacks ${missing.join(", ")}`);
}

// The symbols of the table that `dl`'s library lacks; null when dlopen(3) cannot open it by `path`.
function missingSymbols(dl: DlFunctions, path: string): string[] | null {
  const cString = (text: string) => new TextEncoder().encode(`${text}\0`);
  const RTLD_LAZY = 1; // the same on Linux and macOS
  const handle = dl.dlopen(cString(path), RTLD_LAZY);
  if (!handle) return null;
  try {
    return Object.keys(SYMBOLS).filter((name) => !dl.dlsym(handle, cString(name)));
  } finally {
    dl.dlclose(handle); // the library stays loaded: the runtime links it, and instar binds from it
  }
}

/**
 * The table's functions, each bound by `bind` on its first use: both
 * runtimes build a trampoline per symbol (Deno ~0.35 ms each, `bun:ffi` ~45 KB
 * resident each), so binding all of them up front cost every generation for
 * functions most never call (docs/benchmarks.md, "Start-up time of a
 * generation" and "A minimal app's memory"). A getter binds its symbol once
 * and replaces itself with the function, so later calls cost what they did.
 * The library at `path` has been checked to have each; binding one can still
 * fail (out of memory): `FFI_UNAVAILABLE`, naming the symbol.
 */
export function lazySymbols(
  path: string,
  bind: (name: keyof typeof SYMBOLS) => unknown,
): LibcSymbols {
  const out = {};
  for (const name of Object.keys(SYMBOLS) as (keyof typeof SYMBOLS)[]) {
    Object.defineProperty(out, name, {
      configurable: true,
      enumerable: true,
      get() {
        let f;
        try {
          f = bind(name);
        } catch (err) {
          throw new InstarError("FFI_UNAVAILABLE", `could not load ${name} from ${path}`, {
            cause: err,
          });
        }
        Object.defineProperty(out, name, { value: f, enumerable: true });
        return f;
      },
    });
  }
  return out as LibcSymbols;
}
