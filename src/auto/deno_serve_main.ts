/**
 * `deno serve main.ts` under instar/auto. Deno 2.9.6 does not run a
 * `--preload` module for `deno serve`, so this launcher stands in for it:
 *
 * ```sh
 * deno run -A jsr:@instar/instar/auto/serve main.ts --port 8000 --host 0.0.0.0
 * ```
 *
 * (`instar run --auto -- deno serve -A --port 8000 main.ts` writes that
 * command line). It loads instar/auto first (a static import: it creates the
 * Upgrader before the application's module runs), imports `main.ts` and
 * serves its default export `{ fetch }` with `Deno.serve`, which instar/auto
 * serves through the Upgrader: port 8000 and host 0.0.0.0 by default, as
 * `deno serve`. A module without a default export that has `fetch` is
 * refused with `INVALID_ARGUMENT`.
 *
 * @module
 */

import "./preload.ts";
import { InstarError, invalid } from "../errors.ts";
import * as host from "../host.ts";

/** What `deno serve` takes from a module: its default export. */
interface ServeDefault {
  fetch(request: Request, info: unknown): Response | Promise<Response>;
}

/** The launcher's arguments: the module, then `--port <n>` and `--host <name>`. */
export function launcherArgs(
  args: readonly string[],
): { main: string; port: number; hostname: string } {
  const [main, ...rest] = args;
  if (main === undefined || main.startsWith("-")) {
    invalid("the module to serve", main ?? "missing", "a path");
  }
  let port = 8000, hostname = "0.0.0.0";
  for (let i = 0; i < rest.length; i += 2) {
    const [flag, value] = [rest[i], rest[i + 1]];
    if (flag === "--port" && /^\d{1,5}$/.test(value ?? "")) port = Number(value);
    else if (flag === "--host" && value) hostname = value;
    else invalid("a launcher argument", flag, "--port <n> or --host <name>");
  }
  return { main, port, hostname };
}

const deno = (globalThis as unknown as {
  Deno: { args: string[]; serve(o: object, h: ServeDefault["fetch"]): unknown };
}).Deno;
const { main, port, hostname } = launcherArgs(deno.args);
const url = main.includes("://") ? main : new URL(main, `file://${host.cwd()}/`).href;
const mod = await import(url) as { default?: Partial<ServeDefault> };
const entry = mod.default;
if (!entry || typeof entry.fetch !== "function") {
  throw new InstarError(
    "INVALID_ARGUMENT",
    `${main} has no default export with a fetch() handler, which deno serve needs`,
  );
}
deno.serve({ port, hostname }, (req, info) => entry.fetch!.call(entry, req, info));
