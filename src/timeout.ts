/**
 * The one way instar waits with a deadline: every timer it starts is cleared
 * whichever way the wait ends.
 *
 * @module
 */

/** Resolves after `ms`; the timer does not keep the process alive when `unref` is true. */
export function sleep(ms: number, unref = false): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (unref) (t as { unref?: () => void }).unref?.();
  });
}

/**
 * Waits for `p` at most `ms`: resolves `{ done: true, value }` when it settles
 * in time, `{ done: false }` when the time is up. The timer is cleared either way;
 * a rejection of `p` rejects.
 */
export async function deadline<T>(
  p: Promise<T>,
  ms: number,
): Promise<{ done: true; value: T } | { done: false }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<{ done: false }>((
    r,
  ) => (timer = setTimeout(() => r({ done: false }), ms)));
  try {
    return await Promise.race([p.then((value) => ({ done: true as const, value })), late]);
  } finally {
    clearTimeout(timer);
  }
}
