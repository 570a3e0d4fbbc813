// For startup_imports_test.ts, under Deno: the minimal app of bench/idle_minimal.ts (create, serve,
// ready) with `globalThis.process` replaced by a getter that records who touched it. On Deno the
// first touch sets up the Node compatibility layer (+8 MB resident), so the start-up path must not.
// Prints "touched: <stack>" or "untouched", then exits.
const D = (globalThis as unknown as {
  Deno: { exit(code: number): never; stdout: { writeSync(b: Uint8Array): number } };
}).Deno;
let touched: string | null = null;
Object.defineProperty(globalThis, "process", {
  configurable: true,
  get() {
    touched ??= new Error("globalThis.process").stack ?? "?";
    return undefined;
  },
});
const { Upgrader } = await import("../mod.ts");
const up = await Upgrader.create();
await up.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("ok"), onListen() {} });
await up.ready();
D.stdout.writeSync(new TextEncoder().encode(touched ? `touched: ${touched}\n` : "untouched\n"));
D.exit(0);
