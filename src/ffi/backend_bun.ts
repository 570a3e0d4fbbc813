/**
 * The Bun backend: `bun:ffi` over libc. `bun:ffi` is loaded with
 * `import.meta.require` so that Deno never tries to resolve it.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import type { Backend } from "./backend.ts";
import {
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
  ): { symbols: Record<string, (...args: unknown[]) => unknown> };
  ptr(view: Uint8Array): number;
  read: { i32(ptr: number, offset?: number): number };
  CString: new (ptr: number) => { toString(): string };
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

type BunSymbols = Record<string, (...args: unknown[]) => unknown>;

/**
 * The table's functions, each compiled by `bun:ffi` on its first use: `dlopen`
 * compiles a trampoline per symbol, and compiling all of them up front costs a
 * generation ~1 MB resident for functions most never call (docs/benchmarks.md,
 * "A minimal app's memory"). A getter compiles its symbol once and replaces
 * itself with the function, so later calls cost what they did. A symbol the
 * library lacks (a libc instar does not support) fails with the error opening
 * the whole table gave: `FFI_UNAVAILABLE`, naming the libraries tried.
 */
function lazySymbols(ffi: BunFfi, path: string, tried: readonly string[]): BunSymbols {
  const out: BunSymbols = {};
  for (const name of Object.keys(SYMBOLS) as (keyof typeof SYMBOLS)[]) {
    Object.defineProperty(out, name, {
      configurable: true,
      enumerable: true,
      get() {
        let f;
        try {
          f = ffi.dlopen(path, toBun({ [name]: SYMBOLS[name] })).symbols[name];
        } catch (err) {
          throw new InstarError(
            "FFI_UNAVAILABLE",
            `could not load libc (tried ${tried.join(", ")})`,
            { cause: err },
          );
        }
        Object.defineProperty(out, name, { value: f, enumerable: true });
        return f;
      },
    });
  }
  return out;
}

/** Opens the first library of `candidates` that loads; returns the Bun backend. */
export function openBun(candidates: readonly string[], darwin: boolean): Backend {
  const ffi = (import.meta as unknown as { require(id: string): BunFfi }).require("bun:ffi");
  let symbols: BunSymbols | undefined;
  let errnoFn: (() => unknown) | undefined;
  let lastError: unknown;
  let loaded = "";
  for (const path of candidates) {
    try {
      // Opening the errno symbol checks that the library loads; the others compile on first use.
      const e = ffi.dlopen(path, toBun(darwin ? ERRNO_SYMBOLS_DARWIN : ERRNO_SYMBOLS)).symbols;
      errnoFn = Object.values(e)[0];
      symbols = lazySymbols(ffi, path, candidates);
      loaded = path;
      break;
    } catch (err) {
      lastError = err;
    }
  }
  if (!symbols || !errnoFn) {
    throw new InstarError(
      "FFI_UNAVAILABLE",
      `could not load libc (tried ${candidates.join(", ")})`,
      { cause: lastError },
    );
  }
  let errnoAddr: number | undefined;
  return {
    runtime: "bun",
    path: loaded,
    libc: symbols as unknown as LibcSymbols,
    errno(): number {
      // The errno address is per thread and never changes for the JS thread.
      errnoAddr ??= Number(errnoFn());
      return ffi.read.i32(errnoAddr, 0);
    },
    addressOf(buf: Uint8Array): bigint {
      return BigInt(ffi.ptr(buf));
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
