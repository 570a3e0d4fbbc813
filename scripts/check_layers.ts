/**
 * The layer check (`npm run check:layers`, part of `npm run check`): every
 * import of src/, mod.ts and unstable.ts points down the layer order below,
 * and no files import each other in a cycle.
 *
 * A unit is a folder under src/ (`src/net/`), a file directly in src/
 * (`src/proc.ts`, named without `.ts`, so a file that later becomes a folder
 * keeps its place), or mod.ts / unstable.ts. A unit may import from units on
 * a lower line of {@link LAYERS}, and from units on its own line (peers, such
 * as src/types.ts and src/errors.ts); never from a higher line. Type imports,
 * re-exports (`export … from`) and dynamic `import("…")` count: each is an
 * arrow from one unit to another. docs/architecture.md ("Layers") writes the
 * same order down.
 *
 *   deno run -A scripts/check_layers.ts    # exits 1 and lists what breaks the order
 *
 * @module
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";

/** The units, lowest first; units on one line are peers. */
const LAYERS: readonly (readonly string[])[] = [
  ["src/types", "src/errors", "src/timeout"],
  ["src/ffi"],
  ["src/host"],
  ["src/proc"],
  ["src/process", "src/systemd"],
  ["src/runtime"],
  ["src/net"],
  ["src/serve"],
  ["src/observe"],
  ["src/protocol"],
  ["src/lifecycle"],
  ["src/supervisor"],
  ["src/cli"],
  ["mod", "unstable"],
];

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");

/** Every .ts file under `dir`, as paths relative to the repository root. */
function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, dir)).sort()) {
    const path = join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) out.push(...tsFiles(path));
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

/** The line of `unit` in {@link LAYERS}, or -1 when it has none. */
function layerOf(unit: string): number {
  return LAYERS.findIndex((line) => line.includes(unit));
}

// An import or export-from at the start of a line (so not in a JSDoc example,
// whose lines start with `*`), with or without `type` and names; and a dynamic
// import anywhere.
const STATIC = /^\s*(?:import|export)\s(?:[^;'"`]*?\sfrom\s*)?["']([^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["'`]([^"'`$]+)["'`]\s*\)/g;

/** The relative specifiers `file` imports, resolved to repository paths. */
function importsOf(file: string): string[] {
  const code = readFileSync(join(ROOT, file), "utf8")
    .split("\n")
    .filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))
    .join("\n");
  const specs = [...code.matchAll(STATIC), ...code.matchAll(DYNAMIC)].map((m) => m[1]);
  return [
    ...new Set(
      specs.filter((s) => s.startsWith("./") || s.startsWith("../"))
        .map((s) => relative(ROOT, resolve(ROOT, dirname(file), s))),
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
      if (from === to || layerOf(to) < 0 || layerOf(to) <= layerOf(from)) continue;
      out.push(`${file} -> ${target} (${from} may not import ${to})`);
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

const files = [...tsFiles("src"), "mod.ts", "unstable.ts"];
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const problems = [...layerViolations(graph), ...cycles(graph)];
if (problems.length) {
  console.error(`check_layers: ${problems.length} import(s) break the layer order:`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`check_layers: ${files.length} files, every import points down the layer order`);
