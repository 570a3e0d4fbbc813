/**
 * The one way instar waits with a deadline: every timer it starts is cleared
 * whichever way the wait ends; and the one way it spreads many calls over a
 * window (closes and notices to long-lived connections), one timer at a time.
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

/** The pause between two batches of {@link spread}: fine enough for a smooth spread, one timer at a time. */
export const SPREAD_TICK_MS = 10;

/**
 * Calls `each` for every item of `items`, spread evenly over `windowMs` in
 * batches {@link SPREAD_TICK_MS} apart (the first at once, the last about one
 * tick before the window ends), with one timer at a time however many items
 * there are. The items are taken when called; an item deleted from a `Set`
 * before its turn is skipped. A `windowMs` of 0 calls every one at once.
 * Resolves with how many were called; an exception from `each` does not stop
 * the others: each goes to `onError`, or without one the first rejects once
 * every item had its turn.
 */
export async function spread<T>(
  items: Iterable<T>,
  each: (item: T) => void,
  windowMs: number,
  onError?: (err: unknown) => void,
): Promise<number> {
  const all = [...items];
  const still = items instanceof Set ? (x: T) => items.has(x) : () => true;
  const batches = Math.max(1, Math.min(all.length, Math.ceil(windowMs / SPREAD_TICK_MS)));
  const start = performance.now();
  let called = 0, failure: { err: unknown } | undefined;
  for (let b = 0; b < batches; b++) {
    // Against the start, not the last batch: a slow batch does not stretch the window.
    const wait = start + (b * windowMs) / batches - performance.now();
    if (wait > 0) await sleep(wait);
    const end = Math.floor(((b + 1) * all.length) / batches);
    for (let i = Math.floor((b * all.length) / batches); i < end; i++) {
      if (!still(all[i])) continue;
      try {
        each(all[i]);
        called++;
      } catch (err) {
        if (onError) onError(err);
        else failure ??= { err };
      }
    }
  }
  if (failure) throw failure.err;
  return called;
}
