/**
 * Running out of fds (EMFILE: this process's limit; ENFILE: the system's)
 * while accepting. Deno's accept loops end for good on it (`Deno.serve`'s
 * whole server finishes with "Too many open files (os error 24)"); Node and
 * Bun sleep and accept again. The accept paths here do as Node does: back
 * off, retry, and say so at most once per {@link WARN_EVERY_MS}.
 *
 * @module
 */

/** How long an accept loop waits after EMFILE/ENFILE before it tries again (Node: up to 1 s). */
export const FD_BACKOFF_MS = 100;

/** The shortest interval between two warnings about running out of fds. */
export const WARN_EVERY_MS = 10_000;

/** Whether `err` says the process (EMFILE, os error 24) or the system (ENFILE, 23) ran out of fds. */
export function isFdExhaustion(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e?.code === "EMFILE" || e?.code === "ENFILE") return true;
  return typeof e?.message === "string" && /os error 2[34]\b|EMFILE|ENFILE/.test(e.message);
}

/** Says what happened at most once per {@link WARN_EVERY_MS}, with how many times it happened since. */
export class RateLimitedWarning {
  #last = -Infinity;
  #since = 0;

  /** `warn` gets the message, e.g. "… (3 times in the last 10 s)". */
  constructor(readonly warn: (message: string) => void) {}

  /** Counts one occurrence; warns when the last warning is old enough. */
  report(message: string): void {
    this.#since++;
    const now = performance.now();
    if (now - this.#last < WARN_EVERY_MS) return;
    const times = this.#since > 1 ? ` (${this.#since} times since the last warning)` : "";
    this.#last = now;
    this.#since = 0;
    this.warn(message + times);
  }
}

const recoveredHooks = new Set<() => void>();

/**
 * Runs `hook` each time an accept path of this process that ran out of fds
 * accepts again. Deno's `node:net` servers (the control socket's) stop
 * accepting for good at EMFILE without any event: they listen anew then.
 * Returns a function that unsubscribes.
 */
export function onFdsRecovered(hook: () => void): () => void {
  recoveredHooks.add(hook);
  return () => recoveredHooks.delete(hook);
}

/** Says that an accept path that ran out of fds accepts again. */
export function fdsRecovered(): void {
  for (const hook of [...recoveredHooks]) {
    try {
      hook();
    } catch {
      // a hook reports its own failures
    }
  }
}
