/**
 * The Deno backend: `Deno.dlopen` over libc.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { type Backend, checkTable, type DlLibrary, lazySymbols } from "./backend.ts";
import {
  DL_SYMBOLS,
  ERRNO_SYMBOLS,
  ERRNO_SYMBOLS_DARWIN,
  type NativeFunction,
  type Signature,
  SYMBOLS,
} from "./symbols.ts";

function permissionHint(err: unknown): never {
  throw new InstarError(
    "FFI_UNAVAILABLE",
    "instar calls libc through FFI and Deno refused it: run with --allow-ffi " +
      "(or -A); compiled binaries need --allow-ffi at `deno compile` time",
    { cause: err },
  );
}

/**
 * instar reads /proc/self (its fds, epoll registrations, how the program was
 * started), which Deno allows only with --allow-all. Say so at once rather
 * than fail later in a way that looks like something else.
 */
function requireProcAccess(): void {
  try {
    Deno.readDirSync("/proc/self/fd");
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return; // no procfs: the platform check speaks
    throw new InstarError(
      "PERMISSION_DENIED",
      "instar reads /proc/self, which Deno allows only with --allow-all: run with -A " +
        "(FFI access to libc, which instar also needs, already grants as much)",
      { cause: err },
    );
  }
}

/**
 * Opens the first library of `candidates` that loads and has every symbol of
 * the table (checked now, so that a libc that lacks one fails at start-up, not
 * at its first use); returns the Deno backend.
 */
export function openDeno(candidates: readonly string[], darwin: boolean): Backend {
  let errnoLib: { symbols: Record<string, () => number | bigint>; close(): void } | undefined;
  let lastError: unknown;
  let loaded = "";
  for (const path of candidates) {
    try {
      errnoLib = Deno.dlopen(path, darwin ? ERRNO_SYMBOLS_DARWIN : ERRNO_SYMBOLS);
      checkTable(
        path,
        () => Deno.dlopen(path, DL_SYMBOLS) as unknown as DlLibrary,
        () => Deno.dlopen(path, SYMBOLS).close(), // throws naming what is missing
      );
      loaded = path;
      break;
    } catch (err) {
      if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
        permissionHint(err);
      }
      errnoLib?.close(); // a candidate passed over keeps nothing open
      errnoLib = undefined;
      lastError = err;
    }
  }
  if (!errnoLib) {
    throw new InstarError(
      "FFI_UNAVAILABLE",
      `could not load libc (tried ${candidates.join(", ")})`,
      { cause: lastError },
    );
  }
  requireProcAccess();
  const errnoFn = Object.values(errnoLib.symbols)[0];
  let errnoView: Deno.UnsafePointerView | undefined;
  return {
    runtime: "deno",
    path: loaded,
    libc: lazySymbols(
      loaded,
      (name) => Deno.dlopen(loaded, { [name]: SYMBOLS[name] }).symbols[name],
    ),
    errno(): number {
      // The errno address is per thread and never changes for the JS thread.
      errnoView ??= new Deno.UnsafePointerView(
        Deno.UnsafePointer.create(BigInt(errnoFn()))!,
      );
      return errnoView.getInt32(0);
    },
    addressOf(buf: Uint8Array): bigint {
      return BigInt(
        Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>)),
      );
    },
    arrayBufferAt(addr: bigint, length: number): ArrayBuffer {
      const p = Deno.UnsafePointer.create(addr);
      if (!p) throw new InstarError("INVALID_ARGUMENT", "memory address is NULL");
      return Deno.UnsafePointerView.getArrayBuffer(p, length);
    },
    readCString(addr: bigint): string {
      const p = Deno.UnsafePointer.create(addr);
      return p ? Deno.UnsafePointerView.getCString(p) : "";
    },
    fn<S extends Signature>(addr: bigint, sig: S): NativeFunction<S> {
      const p = Deno.UnsafePointer.create(addr);
      if (!p) throw new InstarError("INVALID_ARGUMENT", "function address is NULL");
      const f = new Deno.UnsafeFnPointer(
        p as Deno.PointerObject<Deno.ForeignFunction>,
        sig as unknown as Deno.ForeignFunction,
      );
      return f.call.bind(f) as unknown as NativeFunction<S>;
    },
  };
}
