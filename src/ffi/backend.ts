/**
 * What a runtime backend provides: the libc symbols and the few pointer
 * operations that differ between `Deno.dlopen` and `bun:ffi`.
 *
 * @module
 */

import type { LibcSymbols, NativeFunction, Signature } from "./symbols.ts";

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
