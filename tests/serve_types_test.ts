// serve() and up.serve() options as `deno check` sees them: Deno.serve's own types. Every line
// marked to expect an error must stay an error (deno check fails on an unused mark); Bun's side is
// tests/serve_types_bun.ts, checked by scripts/check_bun_types.sh. At run time, the listen
// options split off up.serve()'s.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { UpgraderServeOptions } from "../mod.ts";
import type { ServeOptions } from "../unstable.ts";
import { splitListenOptions } from "../src/serve/options.ts";

const hello = () => new Response("hi");

export const typed: ServeOptions[] = [
  // Deno's handler(req, info), under either name, with Deno's own options.
  {
    handler: (req, info) => new Response(`${req.url} from ${info.remoteAddr.hostname}`),
    onError: (err) => new Response(String(err), { status: 500 }),
    onListen: ({ hostname, port }) => console.log(hostname, port),
    signal: new AbortController().signal,
    cert: "…",
    key: "…",
  },
  { fetch: (_req, info) => new Response(info.remoteAddr.hostname), mode: "transplant" },
];

export const listening: UpgraderServeOptions[] = [
  { hostname: "0.0.0.0", port: 8080, backlog: 1024, fetch: hello },
  { path: "/run/app.sock", socketMode: 0o660, handler: hello },
];

export const wrong: unknown[] = [
  // @ts-expect-error a typo'd option
  { fetch: hello, onEror: () => new Response("oops") } satisfies ServeOptions,
  // @ts-expect-error a handler that returns no Response
  { fetch: () => "hi" } satisfies ServeOptions,
  {
    // @ts-expect-error a handler that takes Bun's server, not Deno's info
    fetch: (_req: Request, server: { port: number }) => new Response(`${server.port}`),
  } satisfies ServeOptions,
  // @ts-expect-error both fetch and handler
  { fetch: hello, handler: hello } satisfies ServeOptions,
  // @ts-expect-error no handler
  { mode: "auto" } satisfies ServeOptions,
  // @ts-expect-error Bun's routes are not a Deno.serve option
  { fetch: hello, routes: {} } satisfies ServeOptions,
  // @ts-expect-error serve(fd) serves on the fd: no port
  { port: 8080, fetch: hello } satisfies ServeOptions,
  // @ts-expect-error a Unix socket has no port
  { port: 8080, path: "/x.sock", fetch: hello } satisfies UpgraderServeOptions,
  // @ts-expect-error up.serve() needs a port or a path
  { fetch: hello } satisfies UpgraderServeOptions,
  // @ts-expect-error up.serve()'s servers drain within the Upgrader's drainTimeout
  { port: 8080, fetch: hello, drainTimeoutMs: 5000 } satisfies UpgraderServeOptions,
];

describe("up.serve() options", () => {
  test("a port, hostname and backlog go to listen(); the rest to serve()", () => {
    const { listen, serve } = splitListenOptions({
      hostname: "::",
      port: 8080,
      backlog: 64,
      fetch: hello,
      mode: "fallback",
    });
    assert.deepEqual(listen, { hostname: "::", port: 8080, backlog: 64 });
    assert.deepEqual(serve, { fetch: hello, mode: "fallback" });
  });

  test("a path goes to listen() with socketMode as the socket file's mode", () => {
    const { listen, serve } = splitListenOptions({
      path: "/x.sock",
      socketMode: 0o600,
      fetch: hello,
    });
    assert.deepEqual(listen, { path: "/x.sock", mode: 0o600 });
    assert.deepEqual(serve, { fetch: hello });
  });

  test("both a path and a port, or neither, is INVALID_ARGUMENT naming them", () => {
    const bad = [
      { path: "/x.sock", port: 1, fetch: hello },
      { fetch: hello },
    ] as unknown as UpgraderServeOptions[];
    assert.throws(() => splitListenOptions(bad[0]), { code: "INVALID_ARGUMENT", message: /path/ });
    assert.throws(() => splitListenOptions(bad[1]), {
      code: "INVALID_ARGUMENT",
      message: /`port` \(TCP\) or `path` \(Unix socket\)/,
    });
  });
});
