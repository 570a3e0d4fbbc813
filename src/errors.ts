/**
 * instar's errors. Every failure carries a machine-readable `code`: an errno
 * name (`EADDRINUSE`, `EMFILE`, …) for a failed libc call, or one of instar's
 * own codes (`INVALID_ARGUMENT`, `FFI_UNAVAILABLE`, `UPGRADE_FAILED`, …).
 *
 * @module
 */

import type { UpgradeFailure, UpgradeRefusal } from "./types.ts";

/**
 * The error instar throws. `code` names what went wrong; the message says what
 * the value was and what to do.
 *
 * @example
 * ```ts
 * import { InstarError, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * try {
 *   await up.listen({ port: 70000 });
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
 * import { SystemError, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * try {
 *   await up.listen({ port: 80 }); // another server has it, or no permission
 * } catch (err) {
 *   if (err instanceof SystemError) console.error(err.code, err.syscall); // e.g. "EADDRINUSE" "bind"
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

/**
 * An upgrade was started and failed; `reason` says why. The running
 * generation keeps serving.
 *
 * @example
 * ```ts
 * import { Upgrader, UpgradeError } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * try {
 *   console.log("new generation", await up.upgrade());
 * } catch (err) {
 *   if (err instanceof UpgradeError) console.error(err.reason, err.message);
 * }
 * ```
 */
export class UpgradeError extends InstarError {
  /** Why: the child exited, was killed, timed out, could not be executed or broke the protocol. */
  readonly reason: UpgradeFailure;
  /** The new generation's pid, when one was started. */
  readonly pid?: number;
  /** Its exit code (`exited`). */
  readonly exitCode?: number;
  /** The signal that killed it (`killed`). */
  readonly signal?: string;
  /** The errno name (`exec-failed`). */
  readonly errno?: string;

  /**
   * Creates the error of a failed upgrade.
   *
   * @param reason why the upgrade failed
   * @param message what happened and what to do
   * @param details pid, exit code, signal or errno
   * @param options the underlying cause
   */
  constructor(
    reason: UpgradeFailure,
    message: string,
    details: { pid?: number; exitCode?: number; signal?: string; errno?: string } = {},
    options?: ErrorOptions,
  ) {
    super("UPGRADE_FAILED", message, options);
    this.name = "UpgradeError";
    this.reason = reason;
    Object.assign(this, details);
  }
}

/**
 * A trigger did not start an upgrade: one is in flight, `ready()` was not
 * called yet, or the generation stops. Nothing was started; nothing failed.
 *
 * @example
 * ```ts
 * import { Upgrader, UpgradeRefusedError } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * await up.upgrade().catch((err) => {
 *   if (err instanceof UpgradeRefusedError) console.log("refused:", err.reason); // "not-ready"
 * });
 * ```
 */
export class UpgradeRefusedError extends InstarError {
  /** Why the trigger was refused. */
  readonly reason: UpgradeRefusal;

  /**
   * Creates the error of a refused trigger.
   *
   * @param reason why it was refused
   * @param message what to do instead
   */
  constructor(reason: UpgradeRefusal, message: string) {
    super("UPGRADE_REFUSED", message);
    this.name = "UpgradeRefusedError";
    this.reason = reason;
  }
}
