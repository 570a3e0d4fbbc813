// `npm run bench`: lists the benchmarks in bench/ with their first line of description;
// `npm run bench -- <name> [--bun] [args...]` runs bench/<name>.ts under the pinned deno
// (`deno run -A`), or bun with --bun, passing args on. docs/benchmarks.md has each one's
// method, figures and flags.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
// Servers and shared code the benchmarks start or import: not benchmarks themselves.
const HELPERS = new Set([
  "idle_bare",
  "metrics_server",
  "serve_node_server",
  "serve_server",
  "supervisor_floor",
  "wrk_run",
]);
const bin = (name) => {
  const local = join(root, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};

/** The first sentence of a bench file's leading comment. */
function describe(file) {
  const text = readFileSync(join(root, "bench", file), "utf8");
  const comment = text.match(/^(?:\/\*\*([\s\S]*?)\*\/|((?:\/\/.*\n)+))/)?.[0] ?? "";
  const words = comment.replace(/^\s*(\/\*\*|\*\/|\*|\/\/)/gm, " ").replace(/\s+/g, " ").trim();
  return words.split(/(?<=[.:])\s/)[0].replace(/:$/, "");
}

const benches = readdirSync(join(root, "bench"))
  .filter((f) => f.endsWith(".ts") && !HELPERS.has(f.slice(0, -3)))
  .sort();
const [name, ...rest] = process.argv.slice(2);
if (!name) {
  console.log("npm run bench -- <name> [--bun] [args...]   (docs/benchmarks.md)\n");
  for (const f of benches) console.log(`${f.slice(0, -3).padEnd(18)} ${describe(f)}`);
  process.exit(0);
}
if (!benches.includes(`${name}.ts`)) {
  console.error(`no benchmark bench/${name}.ts; \`npm run bench\` lists them`);
  process.exit(2);
}
const bun = rest.includes("--bun");
const args = rest.filter((a) => a !== "--bun");
const script = join("bench", `${name}.ts`);
const r = bun
  ? spawnSync(bin("bun"), [script, ...args], { cwd: root, stdio: "inherit" })
  : spawnSync(bin("deno"), ["run", "-A", script, ...args], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
