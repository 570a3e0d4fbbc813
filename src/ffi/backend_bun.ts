/**
 * The Bun backend: `bun:ffi` over libc. `bun:ffi` is loaded with
 * `import.meta.require` so that Deno never tries to resolve it.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { type Backend, checkTable, type DlLibrary, lazySymbols } from "./backend.ts";
import {
  DL_SYMBOLS,
  ERRNO_SYMBOLS,
  ERRNO_SYMBOLS_DARWIN,
  type LibcSymbols,
  type NativeFunction,
  type NativeType,
  type Signature,
  SYMBOLS,
} from "./symbols.ts";

interface BunFfiFunction {
  args: string[];
  returns: string;
}

/** The part of `bun:ffi` instar uses. */
interface BunFfi {
  dlopen(
    path: string,
    symbols: Record<string, BunFfiFunction>,
  ): { symbols: Record<string, (...args: unknown[]) => unknown>; close(): void };
  ptr(view: Uint8Array): number;
  read: { i32(ptr: number, offset?: number): number };
  CString: new (ptr: number) => { toString(): string };
  toArrayBuffer(ptr: number, byteOffset: number, byteLength: number): ArrayBuffer;
  CFunction(fn: BunFfiFunction & { ptr: number | bigint }): (...args: unknown[]) => unknown;
}

// Bun's names for Deno's type names; "buffer" becomes "ptr" so that null is accepted.
const BUN_TYPE: Record<NativeType, string> = {
  i8: "i8",
  u8: "u8",
  i16: "i16",
  u16: "u16",
  i32: "i32",
  u32: "u32",
  i64: "i64",
  u64: "u64",
  usize: "usize",
  isize: "i64",
  f64: "f64",
  buffer: "ptr",
  void: "void",
};

/** A signature of the table in `bun:ffi`'s notation. */
export function toBunSignature(sig: Signature): { args: string[]; returns: string } {
  return { args: sig.parameters.map((t) => BUN_TYPE[t]), returns: BUN_TYPE[sig.result] };
}

function toBun(table: Record<string, Signature>): Record<string, BunFfiFunction> {
  const out: Record<string, BunFfiFunction> = {};
  for (const [name, sig] of Object.entries(table)) {
    out[name] = { args: sig.parameters.map((t) => BUN_TYPE[t]), returns: BUN_TYPE[sig.result] };
  }
  return out;
}

/**
 * Opens the first library of `candidates` that loads and has every symbol of
 * the table (checked now, so a libc that lacks one fails at start-up as on
 * Deno, not at its first use); returns the Bun backend.
 */
export function openBun(candidates: readonly string[], darwin: boolean): Backend {
  const ffi = (import.meta as unknown as { require(id: string): BunFfi }).require("bun:ffi");
  let symbols: LibcSymbols | undefined;
  let errnoFn: (() => unknown) | undefined;
  const errors: string[] = [];
  let lastError: unknown;
  let loaded = "";
  for (const path of candidates) {
    let errnoLib: ReturnType<BunFfi["dlopen"]> | undefined;
    try {
      // The errno symbol is compiled now; the others compile on first use, once checked present.
      errnoLib = ffi.dlopen(path, toBun(darwin ? ERRNO_SYMBOLS_DARWIN : ERRNO_SYMBOLS));
      const e = errnoLib.symbols;
      checkTable(
        path,
        () => ffi.dlopen(path, toBun(DL_SYMBOLS)) as unknown as DlLibrary,
        () => ffi.dlopen(path, toBun(SYMBOLS)).close(), // throws naming what is missing
      );
      errnoFn = Object.values(e)[0];
      symbols = lazySymbols(
        path,
        (name) => ffi.dlopen(path, toBun({ [name]: SYMBOLS[name] })).symbols[name],
      );
      loaded = path;
      break;
    } catch (err) {
      errnoLib?.close(); // a candidate passed over keeps nothing open
      lastError = err;
      errors.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (!symbols || !errnoFn) {
    throw new InstarError(
      "FFI_UNAVAILABLE",
      `could not load libc (tried ${candidates.join(", ")}: ${errors.join("; ")})`,
      { cause: lastError },
    );
  }
  let errnoAddr: number | undefined;
  return {
    runtime: "bun",
    path: loaded,
    libc: symbols,
    errno(): number {
      // The errno address is per thread and never changes for the JS thread.
      errnoAddr ??= Number(errnoFn());
      return ffi.read.i32(errnoAddr, 0);
    },
    addressOf(buf: Uint8Array): bigint {
      return BigInt(ffi.ptr(buf));
    },
    arrayBufferAt(addr: bigint, length: number): ArrayBuffer {
      if (addr === 0n) throw new InstarError("INVALID_ARGUMENT", "memory address is NULL");
      return ffi.toArrayBuffer(Number(addr), 0, length);
    },
    readCString(addr: bigint): string {
      return addr === 0n ? "" : new ffi.CString(Number(addr)).toString();
    },
    fn<S extends Signature>(addr: bigint, sig: S): NativeFunction<S> {
      const def = toBun({ f: sig }).f;
      return ffi.CFunction({ ...def, ptr: addr }) as unknown as NativeFunction<S>;
    },
  };
}
