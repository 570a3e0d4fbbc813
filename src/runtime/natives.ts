/**
 * The runtime's own `Bun.serve` / `Deno.serve`, as they were before anything
 * replaced the globals. `instar/auto` (src/auto/) replaces them so that an
 * unmodified application's calls go through an Upgrader; instar's own
 * adapters (serve_bun.ts, serve_deno.ts) must then still reach the real
 * server, not the replacement, or every serve would call itself.
 *
 * @module
 */

type Fn = (...args: unknown[]) => unknown;

const kept = new Map<"Bun" | "Deno", Fn>();

function current(ns: "Bun" | "Deno"): Fn | undefined {
  const space = (globalThis as unknown as Record<string, { serve?: Fn } | undefined>)[ns];
  return typeof space?.serve === "function" ? space.serve.bind(space) as Fn : undefined;
}

/** Remembers the runtime's own `serve` before the global is replaced (idempotent). */
export function keepNativeServe(): void {
  for (const ns of ["Bun", "Deno"] as const) {
    const fn = current(ns);
    if (fn && !kept.has(ns)) kept.set(ns, fn);
  }
}

/** `Bun.serve` or `Deno.serve` as the runtime made it, whatever the global now holds. */
export function nativeServe(ns: "Bun" | "Deno"): Fn {
  const fn = kept.get(ns) ?? current(ns);
  if (!fn) throw new TypeError(`${ns}.serve is not available in this runtime`);
  return fn;
}
