/**
 * PR_SET_CHILD_SUBREAPER: the processes this one starts, and theirs, become its
 * children when their parent exits (a later generation outlives the one that
 * started it), instead of going to PID 1 of the namespace.
 *
 * @module
 */

import * as sys from "../ffi/mod.ts";

/**
 * Makes this process a child subreaper; throws a `SystemError` (`prctl`, errno
 * name) when the kernel refuses.
 *
 * @example
 * ```ts
 * import { becomeSubreaper, isSubreaper } from "./subreaper.ts";
 *
 * becomeSubreaper();
 * console.log(isSubreaper()); // true
 * ```
 */
export function becomeSubreaper(): void {
  const r = sys.backend().libc.prctl(sys.C.PR_SET_CHILD_SUBREAPER, 1n, 0n, 0n, 0n);
  if (r === -1) sys.fail("prctl", "PR_SET_CHILD_SUBREAPER");
}

/**
 * Whether this process is a child subreaper (PR_GET_CHILD_SUBREAPER).
 *
 * @example
 * ```ts
 * import { isSubreaper } from "./subreaper.ts";
 *
 * if (!isSubreaper()) console.log("orphans go to PID 1");
 * ```
 */
export function isSubreaper(): boolean {
  const out = new Int32Array(1);
  const addr = sys.backend().addressOf(new Uint8Array(out.buffer));
  const r = sys.backend().libc.prctl(sys.C.PR_GET_CHILD_SUBREAPER, addr, 0n, 0n, 0n);
  if (r === -1) sys.fail("prctl", "PR_GET_CHILD_SUBREAPER");
  return out[0] !== 0;
}
