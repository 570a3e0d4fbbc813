// @ts-nocheck -- checked by scripts/check_bun_types.sh with bun-types (no Deno), not by deno check.
// serve() and up.serve() options as a Bun user's TypeScript sees them: Bun.serve's own types.
import type { Upgrader, UpgraderServeOptions } from "../mod.ts";
import type { ServeOptions } from "../unstable.ts";

export const typed: ServeOptions[] = [
  {
    fetch: (req, server) => new Response(String(server.requestIP(req)?.address)),
    error: (err) => new Response(err.message, { status: 500 }),
    tls: { cert: "…", key: "…" },
  },
  // `handler` is Deno's name; on Bun it is `fetch`, with Bun's arguments.
  {
    handler: (req, server) => (server.upgrade(req) ? undefined : new Response("no")),
    websocket: { message: (ws, m) => void ws.send(m) },
  },
  {
    mode: "transplant",
    routes: { "/health": new Response("ok"), "/users/:id": (req) => new Response(req.params.id) },
    websocket: { message: (ws, m) => void ws.send(m) },
  },
];

// Bun.serve<WebSocketData>'s generic: `data` is typed, and required in upgrade().
export const withData: ServeOptions<{ user: string }> = {
  fetch: (req, server) =>
    server.upgrade(req, { data: { user: "ada" } }) ? undefined : new Response("no"),
  websocket: { message: (ws) => void ws.send(ws.data.user) },
};

export const listening: UpgraderServeOptions[] = [
  { hostname: "0.0.0.0", port: 8080, fetch: () => new Response("hi") },
  { path: "/run/app.sock", socketMode: 0o660, fetch: () => new Response("hi") },
];

// up.serve<WebSocketData>() as Bun.serve<WebSocketData>().
export async function viaUpgrader(up: Upgrader): Promise<void> {
  await up.serve<{ user: string }>({
    port: 8080,
    fetch: (req, server) =>
      server.upgrade(req, { data: { user: "ada" } }) ? undefined : new Response("no"),
    websocket: { message: (ws) => void ws.send(ws.data.user) },
  });
}

export const wrong: unknown[] = [
  // @ts-expect-error a typo'd option
  { fetch: () => new Response("hi"), eror: () => new Response("oops") } satisfies ServeOptions,
  // @ts-expect-error a handler that returns no Response
  { fetch: () => "hi" } satisfies ServeOptions,
  // @ts-expect-error both fetch and handler
  { fetch: () => new Response("hi"), handler: () => new Response("hi") } satisfies ServeOptions,
  // @ts-expect-error no handler and no routes
  { mode: "auto" } satisfies ServeOptions,
  // @ts-expect-error Deno's onListen is not a Bun.serve option
  { fetch: () => new Response("hi"), onListen() {} } satisfies ServeOptions,
  // @ts-expect-error serve(fd) serves on the fd: no port
  { port: 8080, fetch: () => new Response("hi") } satisfies ServeOptions,
  // @ts-expect-error a Unix socket has no port
  { port: 8080, path: "/x.sock", fetch: () => new Response("hi") } satisfies UpgraderServeOptions,
  {
    port: 8080,
    fetch: () => new Response("hi"),
    // @ts-expect-error up.serve()'s servers drain within the Upgrader's drainTimeout
    drainTimeoutMs: 5000,
  } satisfies UpgraderServeOptions,
  // @ts-expect-error upgrade() without a WebSocket handler may not return undefined
  { fetch: (r, s) => (s.upgrade(r) ? undefined : new Response("no")) } satisfies ServeOptions,
  {
    // @ts-expect-error data is required by upgrade() when WebSocketData is not undefined
    fetch: (req, server) => (server.upgrade(req) ? undefined : new Response("no")),
    websocket: { message: (ws) => void ws.send(ws.data.user) },
  } satisfies ServeOptions<{ user: string }>,
];
