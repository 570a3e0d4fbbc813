// What loading mod.ts loads: every `node:` builtin costs a generation memory (2–9 MB resident
// each, docs/benchmarks.md "A minimal app's memory"), so the rarely needed ones are loaded where
// they are first used (`await import()` or src/host.ts's `builtin()`), never by a static import
// on mod.ts's graph. A static one added by mistake shows up here, naming the file.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { spawnSync } from "node:child_process";
import { ROOT, runtimeCmd } from "./support/procs.ts";

/** Builtins a generation may never need: loaded on first use only. */
const LAZY = [
  "node:net",
  "node:http",
  "node:https",
  "node:tls",
  "node:crypto",
  "node:dgram",
  "node:dns",
  "node:dns/promises",
  "node:fs/promises",
  "node:util",
  "node:child_process",
  "node:worker_threads",
  // On Deno the first node: module sets up the Node compatibility layer (+8 MB): the start-up path
  // asks src/host.ts (Deno.* there) for the pid, env, signals and /proc reads instead.
  "node:process",
  "node:fs",
  "node:path",
  "node:os",
];

/**
 * instar's own modules that a generation serving HTTP with up.serve() never runs: imported by the
 * first up.serveNode(), up.listenDatagram() or up.listen() (this runtime's acceptor only), by the
 * proxy fallback, by ready() with a control socket, or in portable mode (docs/benchmarks.md, "A minimal app's memory").
 */
const LAZY_MODULES = [
  "src/serve/serve_node.ts",
  "src/serve/proxy.ts",
  "src/net/datagram.ts",
  "src/net/datagram_portable.ts",
  "src/lifecycle/datagram_endpoint.ts",
  "src/lifecycle/portable.ts",
  "src/lifecycle/control.ts",
  "src/runtime/listener_deno.ts",
  "src/runtime/listener_bun.ts",
  "src/runtime/conn.ts",
  "src/runtime/datagram_bun.ts",
  "src/runtime/datagram_reader.ts",
  "src/runtime/serve_node_deno.ts",
  "src/runtime/serve_node_bun.ts",
];

// Static imports and re-exports that stay at run time (`import type` / `export type` are erased).
const STATIC = /^(?:import|export)\s+(?!type\s)(?:[^"';]*?\sfrom\s+)?["']([^"']+)["']/gm;

/** Each module statically reachable from `entry`, with the specifiers it imports. */
function staticGraph(entry: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (graph.has(file)) continue;
    const specs = [...readFileSync(file, "utf8").matchAll(STATIC)].map((m) => m[1]);
    graph.set(file, specs);
    for (const s of specs) if (s.startsWith(".")) todo.push(join(dirname(file), s));
  }
  return graph;
}

describe("start-up imports", () => {
  test("mod.ts loads no rarely needed node: builtin at start-up", () => {
    const graph = staticGraph(join(ROOT, "mod.ts"));
    assert.ok(graph.size > 20, `only ${graph.size} modules found: the import pattern is broken`);
    const found = [...graph].flatMap(([file, specs]) =>
      specs.filter((s) => LAZY.includes(s)).map((s) => `${file.slice(ROOT.length)}: ${s}`)
    );
    assert.deepEqual(found, [], "load these where they are first needed, not at start-up");
  });

  test("mod.ts loads serveNode(), datagram sockets, acceptors, the proxy, the control server and portable mode on first use", () => {
    const graph = staticGraph(join(ROOT, "mod.ts"));
    const loaded = [...graph.keys()].map((f) => relative(ROOT, f));
    assert.ok(
      loaded.includes("src/serve/serve.ts"),
      `serve.ts not found in ${loaded.length} modules`,
    );
    assert.deepEqual(
      loaded.filter((f) => LAZY_MODULES.includes(f)),
      [],
      "import these on first use",
    );
  });

  // A dynamic import or a `globalThis.process` use is invisible to the walk above: the child runs
  // the minimal app under Deno with `process` watched (Bun's process is cheap, +0.3 MB).
  test("the minimal app never touches globalThis.process on Deno", () => {
    const [cmd, ...args] = runtimeCmd("deno", join(ROOT, "tests/startup_process_child.ts"));
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), "untouched", "the start-up path touched globalThis.process");
  });
});
