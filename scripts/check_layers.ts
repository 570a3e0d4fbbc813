/**
 * The layer check (`npm run check:layers`, part of `npm run check`): every
 * import of src/, mod.ts and unstable.ts points down the layer order below,
 * and no files import each other in a cycle.
 *
 * A unit is a folder under src/ (`src/net/`), a file directly in src/
 * (`src/proc.ts`, named without `.ts`, so a file that later becomes a folder
 * keeps its place), or mod.ts / unstable.ts. A unit may import from units
 * lower in {@link LAYERS}; never from a higher one, and never from a file in
 * no unit (tests/, bench/). Every unit has a place of its own, so no two units
 * can import each other. Type imports, re-exports (`export … from`) and
 * dynamic `import("…")` count: each is an arrow from one unit to another.
 * docs/architecture.md ("Layers") writes the same order down;
 * tests/check_layers_test.ts runs the check on trees that break it.
 *
 *   deno run -A scripts/check_layers.ts    # exits 1 and lists what breaks the order
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The units, lowest first. */
export const LAYERS: readonly string[] = [
  "src/types",
  "src/errors",
  "src/timeout",
  "src/ffi",
  "src/host",
  "src/proc",
  "src/process",
  "src/systemd",
  "src/runtime",
  "src/net",
  "src/serve",
  "src/observe",
  "src/protocol",
  "src/lifecycle",
  "src/auto",
  "src/supervisor",
  "src/cli",
  "mod",
  "unstable",
];

/** Every .ts file under `dir`, as paths relative to the repository root `root`. */
function tsFiles(root: string, dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir)).sort()) {
    const path = join(dir, name);
    if (statSync(join(root, path)).isDirectory()) out.push(...tsFiles(root, path));
    else if (name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/** The unit of a file: `src/<folder>`, `src/<file without .ts>`, or `mod`/`unstable`. */
function unitOf(file: string): string {
  const parts = file.split("/");
  if (parts[0] !== "src") return file.replace(/\.ts$/, "");
  return `src/${parts[1].replace(/\.ts$/, "")}`;
}

/** The place of `unit` in {@link LAYERS}, or -1 when it has none. */
function layerOf(unit: string): number {
  return LAYERS.indexOf(unit);
}

// An import or export-from at the start of a line (so not in a JSDoc example,
// whose lines start with `*`), with or without `type` and names; and a dynamic
// import anywhere.
const STATIC = /^\s*(?:import|export)\s(?:[^;'"`]*?\sfrom\s*)?["']([^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["'`]([^"'`$]+)["'`]\s*\)/g;

/** The relative specifiers `file` imports, resolved to repository paths. */
function importsOf(root: string, file: string): string[] {
  const code = readFileSync(join(root, file), "utf8")
    .split("\n")
    .filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))
    .join("\n");
  const specs = [...code.matchAll(STATIC), ...code.matchAll(DYNAMIC)].map((m) => m[1]);
  return [
    ...new Set(
      specs.filter((s) => s.startsWith("./") || s.startsWith("../"))
        .map((s) => relative(root, resolve(root, dirname(file), s))),
    ),
  ];
}

/** Each import that goes up the order, or into a unit the order does not name. */
function layerViolations(graph: Map<string, string[]>): string[] {
  const out: string[] = [];
  for (const [file, targets] of graph) {
    const from = unitOf(file);
    if (layerOf(from) < 0) {
      out.push(`${file} (unit ${from} is in no layer of scripts/check_layers.ts)`);
    }
    for (const target of targets) {
      const to = unitOf(target);
      if (from === to || (layerOf(to) >= 0 && layerOf(to) < layerOf(from))) continue;
      const why = layerOf(to) < 0 ? `${to} is in no layer` : `${from} may not import ${to}`;
      out.push(`${file} -> ${target} (${why})`);
    }
  }
  return out;
}

/** Every file-level import cycle, once each, as `a -> b -> a` (Tarjan's strongly connected components). */
function cycles(graph: Map<string, string[]>): string[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    for (let w = ""; w !== v;) {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    }
    const selfLoop = graph.get(v)!.includes(v);
    if (component.length > 1 || selfLoop) out.push(cyclePath(graph, new Set(component)));
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

/** One cycle through the files of a strongly connected component, for the message. */
function cyclePath(graph: Map<string, string[]>, component: Set<string>): string {
  const start = [...component].sort()[0];
  const path = [start];
  const seen = new Set([start]);
  for (let at = start;;) {
    const next = graph.get(at)!.filter((t) => component.has(t));
    const back = next.includes(start) && path.length > 1 ? start : undefined;
    const step = back ?? next.find((t) => !seen.has(t)) ?? start;
    path.push(step);
    if (step === start) break;
    seen.add(step);
    at = step;
  }
  return `cycle: ${path.join(" -> ")}`;
}

/**
 * Checks the repository at `root`: the files read, and every import that
 * breaks the order or closes a cycle (empty when none does).
 *
 * @example
 * ```ts
 * import { checkLayers } from "./check_layers.ts";
 *
 * const { problems } = checkLayers(".");
 * ```
 */
export function checkLayers(root: string): { files: number; problems: string[] } {
  const entries = ["mod.ts", "unstable.ts"].filter((f) => existsSync(join(root, f)));
  const files = [...tsFiles(root, "src"), ...entries];
  const graph = new Map(files.map((f) => [f, importsOf(root, f)]));
  return { files: files.length, problems: [...layerViolations(graph), ...cycles(graph)] };
}

if (import.meta.main) {
  const { files, problems } = checkLayers(resolve(dirname(fileURLToPath(import.meta.url)), ".."));
  if (problems.length) {
    console.error(`check_layers: ${problems.length} import(s) break the layer order:`);
    for (const p of problems) console.error(`  ${p}`);
    process.exit(1);
  }
  console.log(`check_layers: ${files} files, every import points down the layer order`);
}
