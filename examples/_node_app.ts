// For the node:http framework examples (express.ts, fastify.ts, koa.ts): the
// common flags (examples/_lifecycle.ts) plus --stats-file and --version-label,
// the hello line, and the `ws` WebSocket echo every one of them serves.
//
//   --stats-file <path>   each generation appends `<pid> <POST bodies read>` once drained
//   --version-label <t>   shown in the hello line
import { appendFileSync } from "node:fs";
import type * as http from "node:http";
import process from "node:process";
import { WebSocketServer } from "ws";
import type { Upgrader } from "../mod.ts";
import { startGeneration } from "./_lifecycle.ts";

/** What every framework example shares. */
export interface NodeApp {
  up: Upgrader;
  port: number;
  hostname: string;
  serveMode: "auto" | "transplant" | "fallback" | undefined;
  /** `hello from pid <pid> generation <n> (<label>)\n`. */
  hello: string;
  /** Counts a POST body that was read (for --stats-file). */
  counted(): void;
  /** The delay asked for by `/slow?ms=N`, bounded. */
  msOf(url: string | undefined): number;
  /** Adds the `ws` echo (`<pid>: <message>`) to `server`: WebSockets on any path. */
  webSockets(server: http.Server): void;
}

/** Parses the flags and creates the Upgrader for the example called `name`. */
export async function startNodeApp(name: string): Promise<NodeApp> {
  const { up, hostname, port, serveMode, flags } = await startGeneration(name, {
    "version-label": { type: "string" },
    "stats-file": { type: "string" },
  });
  const runtime = process.versions.bun
    ? `bun ${process.versions.bun}`
    : `deno ${process.versions.deno}`;
  const label = (flags["version-label"] as string | undefined) ?? `${name}, ${runtime}`;
  let posts = 0;
  const statsFile = flags["stats-file"] as string | undefined;
  if (statsFile) up.onDrained(() => appendFileSync(statsFile, `${process.pid} ${posts}\n`));
  return {
    up,
    port,
    hostname,
    serveMode,
    hello: `hello from pid ${process.pid} generation ${up.generation} (${label})\n`,
    counted: () => void posts++,
    msOf(url) {
      const ms = Number(new URL(url ?? "/", "http://x").searchParams.get("ms") ?? 0);
      return Math.min(ms || 0, 600_000);
    },
    webSockets(server) {
      const wss = new WebSocketServer({ server });
      wss.on("connection", (ws) => {
        ws.send(`welcome pid ${process.pid} generation ${up.generation}`);
        ws.on("message", (m) => ws.send(`${process.pid}: ${String(m)}`));
      });
    },
  };
}
