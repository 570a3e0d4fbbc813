/**
 * What a runtime backend provides: the libc symbols and the few pointer
 * operations that differ between `Deno.dlopen` and `bun:ffi`.
 *
 * @module
 */

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

/** dlopen(3) and dlsym(3) as a backend bound them from {@link DL_SYMBOLS}. */
export type DlFunctions = {
  readonly [K in keyof typeof DL_SYMBOLS]: NativeFunction<(typeof DL_SYMBOLS)[K]>;
};

/**
 * The symbols of {@link SYMBOLS} that the library at `path` lacks, looked up
 * with `dl` (dlopen(3)/dlsym(3) of that same library), so that a libc missing
 * one fails at start-up rather than at that function's first use; null when
 * dlopen(3) cannot open it by that name.
 */
export function missingSymbols(dl: DlFunctions, path: string): string[] | null {
  const cString = (text: string) => new TextEncoder().encode(`${text}\0`);
  const RTLD_LAZY = 1; // the same on Linux and macOS
  const handle = dl.dlopen(cString(path), RTLD_LAZY);
  if (!handle) return null;
  return Object.keys(SYMBOLS).filter((name) => !dl.dlsym(handle, cString(name)));
}
