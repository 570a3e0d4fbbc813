// Shared helpers for the black-box tests: runtime binaries and child processes.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

/** The repository root. */
export const ROOT: string = fileURLToPath(new URL("..", import.meta.url));

function localBin(name: string): string {
  const p = join(ROOT, "node_modules", ".bin", name);
  return existsSync(p) ? p : name;
}

/** The pinned deno binary. */
export function denoBin(): string {
  return localBin("deno");
}

/** The pinned bun binary. */
export function bunBin(): string {
  return localBin("bun");
}

/** The runtime this test file runs under. */
export const RUNTIME: "deno" | "bun" = "Bun" in globalThis ? "bun" : "deno";

/** The command that runs `script` under `runtime` with all permissions. */
export function runtimeCmd(runtime: "deno" | "bun", script: string, args: string[] = []): string[] {
  return runtime === "deno"
    ? [denoBin(), "run", "-A", "--no-check", script, ...args]
    : [bunBin(), script, ...args];
}
