/**
 * instar's errors. Every failure carries a machine-readable `code`: an errno
 * name (`EADDRINUSE`, `EMFILE`, …) for a failed libc call, or one of instar's
 * own codes (`INVALID_ARGUMENT`, `FFI_UNAVAILABLE`, `UPGRADE_FAILED`, …).
 *
 * @module
 */

/**
 * The error instar throws. `code` names what went wrong; the message says what
 * the value was and what to do.
 *
 * @example
 * ```ts
 * import { InstarError, listen } from "@instar/instar";
 *
 * try {
 *   await listen({ port: 70000 });
 * } catch (err) {
 *   if (err instanceof InstarError) console.error(err.code); // "INVALID_ARGUMENT"
 * }
 * ```
 */
export class InstarError extends Error {
  /** What went wrong, e.g. `INVALID_ARGUMENT` or an errno name such as `EADDRINUSE`. */
  readonly code: string;

  /**
   * Creates an error with a code.
   *
   * @param code what went wrong
   * @param message what the value was and what to do
   * @param options the underlying cause, if any
   */
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InstarError";
    this.code = code;
  }
}

/**
 * A libc call failed. `code` is the errno name, `errno` its number and
 * `syscall` the function that failed.
 *
 * @example
 * ```ts
 * import { listen, SystemError } from "@instar/instar";
 *
 * const first = await listen({ hostname: "127.0.0.1", port: 0 });
 * try {
 *   await listen({ hostname: "127.0.0.1", port: first.addr.port });
 * } catch (err) {
 *   if (err instanceof SystemError) console.error(err.code, err.syscall); // "EADDRINUSE" "bind"
 * } finally {
 *   first.close();
 * }
 * ```
 */
export class SystemError extends InstarError {
  /** The errno number. */
  readonly errno: number;
  /** The libc function that failed, e.g. `bind`. */
  readonly syscall: string;

  /**
   * Creates the error of a failed libc call.
   *
   * @param syscall the libc function that failed
   * @param errno the errno it left
   * @param name the errno name
   * @param detail what instar was doing, naming the values involved
   */
  constructor(syscall: string, errno: number, name: string, detail?: string) {
    super(
      name,
      `${syscall} failed: ${name} (errno ${errno})${detail ? `: ${detail}` : ""}`,
    );
    this.name = "SystemError";
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** Throws `INVALID_ARGUMENT` naming the option, the value and what is expected. */
export function invalid(option: string, value: unknown, expected: string): never {
  let shown: string;
  try {
    shown = typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    shown = typeof value;
  }
  throw new InstarError(
    "INVALID_ARGUMENT",
    `${option} is ${shown}; expected ${expected}`,
  );
}
