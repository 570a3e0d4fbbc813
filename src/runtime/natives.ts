/**
 * The runtime's own `Bun.serve` / `Deno.serve` and `Bun.listen` /
 * `Deno.listen` / `Deno.listenTls`, as they were before anything replaced the
 * globals. `instar/auto` (src/auto/) replaces them: the serves so that an
 * unmodified application's calls go through an Upgrader, the listens so that
 * an application's raw listener fails at the call instead of running where no
 * upgrade reaches it. instar's own adapters (serve_bun.ts, serve_deno.ts,
 * listener_bun.ts, listener_deno.ts) must then still reach the real functions,
 * not the replacements, or every serve would call itself and every listen
 * would be refused.
 *
 * @module
 */

type Fn = (...args: unknown[]) => unknown;

/** A runtime function instar/auto replaces. */
export type NativeName = "serve" | "listen" | "listenTls";

const NAMES: readonly NativeName[] = ["serve", "listen", "listenTls"];
const kept = new Map<string, Fn>();

function current(ns: "Bun" | "Deno", name: NativeName): Fn | undefined {
  const space = (globalThis as unknown as Record<string, Record<string, unknown> | undefined>)[ns];
  const fn = space?.[name];
  return typeof fn === "function" ? (fn as Fn).bind(space) as Fn : undefined;
}

/** Remembers the runtime's own functions before the globals are replaced (idempotent). */
export function keepNativeServe(): void {
  for (const ns of ["Bun", "Deno"] as const) {
    for (const name of NAMES) {
      const fn = current(ns, name);
      if (fn && !kept.has(`${ns}.${name}`)) kept.set(`${ns}.${name}`, fn);
    }
  }
}

/** `Bun.<name>` or `Deno.<name>` as the runtime made it, whatever the global now holds. */
export function native(ns: "Bun" | "Deno", name: NativeName): Fn {
  const fn = kept.get(`${ns}.${name}`) ?? current(ns, name);
  if (!fn) throw new TypeError(`${ns}.${name} is not available in this runtime`);
  return fn;
}

/** `Bun.serve` or `Deno.serve` as the runtime made it, whatever the global now holds. */
export function nativeServe(ns: "Bun" | "Deno"): Fn {
  return native(ns, "serve");
}
