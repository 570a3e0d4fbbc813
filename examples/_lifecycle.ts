// For the examples: the flags every example server takes, and its Upgrader.
//
//   --port <n> (default 8080)        --hostname <addr> (default 127.0.0.1)
//   --pid-file <path>                --control <socket path>
//   --drain-timeout <ms>             --ready-timeout <ms>
//   --promotion-window <ms> (default 0: none; the old generation serves on if the new one fails within it)
//   --spawn-backend fork|posix_spawn|auto
//   --serve-mode auto|transplant|fallback (for the examples that serve HTTP)
//   --log-format text|json (the lifecycle log on stderr; default text)
//   --idle-connections keep|close-when-quiet (what a draining generation does with idle keep-alive connections)
//   --close-spread <ms> (the window a draining generation spreads reconnect notices and 1012 closes over)
import { parseArgs, type ParseArgsConfig } from "node:util";
import process from "node:process";
import {
  type IdleConnections,
  logLifecycle,
  type ServeMode,
  type SpawnBackend,
  Upgrader,
} from "../mod.ts";

const COMMON = {
  port: { type: "string", default: "8080" },
  hostname: { type: "string", default: "127.0.0.1" },
  "pid-file": { type: "string" },
  control: { type: "string" },
  "drain-timeout": { type: "string" },
  "ready-timeout": { type: "string" },
  "promotion-window": { type: "string" },
  "spawn-backend": { type: "string" },
  "serve-mode": { type: "string" },
  "log-format": { type: "string" },
  "idle-connections": { type: "string" },
  "close-spread": { type: "string" },
} as const;

/** Parses the common flags plus `extra`, creates the Upgrader and logs its events as `name`. */
export async function startGeneration(
  name: string,
  extra: NonNullable<ParseArgsConfig["options"]> = {},
): Promise<{
  up: Upgrader;
  port: number;
  hostname: string;
  serveMode: ServeMode | undefined;
  flags: Record<string, unknown>;
}> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { ...COMMON, ...extra },
    strict: true,
  });
  const ms = (v: unknown) => (v === undefined ? undefined : Number(v));
  const up = await Upgrader.create({
    pidFile: values["pid-file"] as string | undefined,
    controlSocket: values.control as string | undefined,
    drainTimeout: ms(values["drain-timeout"]),
    readyTimeout: ms(values["ready-timeout"]),
    promotionWindow: ms(values["promotion-window"]),
    spawnBackend: values["spawn-backend"] as SpawnBackend | undefined,
    // Checked by Upgrader.create(): a bad value fails with INVALID_ARGUMENT naming it.
    idleConnections: values["idle-connections"] as IdleConnections | undefined,
    closeSpread: ms(values["close-spread"]),
  });
  logLifecycle(up, { name, format: values["log-format"] as "text" | "json" | undefined });
  return {
    up,
    port: Number(values.port),
    hostname: values.hostname as string,
    serveMode: values["serve-mode"] as ServeMode | undefined,
    flags: values,
  };
}
