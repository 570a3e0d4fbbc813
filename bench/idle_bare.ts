// A bare hello-world server for bench/idle.ts: `idle_bare.ts <port> [--import [module]]` runs Deno.serve or
// Bun.serve on 127.0.0.1:<port> and nothing else, so that its idle CPU and memory are the runtime's
// own. It imports nothing (not even node:process), because every module loaded costs memory that
// the bare figure must not include. `--import` first loads instar's mod.ts (or the module named
// after it, relative to this file or a `node:` builtin) without using it: what loading the
// library's code, or one part of it, costs apart from running it.
const G = globalThis as unknown as {
  Deno?: {
    args: string[];
    serve(o: Record<string, unknown>, h: () => Response): unknown;
  };
  Bun?: { argv: string[]; serve(o: Record<string, unknown>): unknown };
};
const args = G.Deno ? G.Deno.args : G.Bun!.argv.slice(2);
const port = Number(args[0]);
const hello = () => new Response("Hello, World!");

const at = args.indexOf("--import");
if (at >= 0) await import(args[at + 1] ?? "../mod.ts");
if (G.Bun) G.Bun.serve({ hostname: "127.0.0.1", port, fetch: hello });
else G.Deno!.serve({ hostname: "127.0.0.1", port, onListen() {} }, hello);
