// The examples, black box: the Hono app serves its routes and upgrades under
// load without failing a request; deno_serve.ts / bun_serve.ts serve HTTP and
// WebSockets, and an open WebSocket stays on the old generation across an upgrade.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import process from "node:process";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  cleanupAfterTests,
  exchange,
  httpGet,
  ROOT,
  RUNTIME,
  sleep,
  stopped,
  within,
} from "./support/helpers.ts";
import { type Generations, startGenerations, upgradeByHup } from "./support/generations.ts";

const left = cleanupAfterTests();
const { sockets } = left;

const example = (name: string) => join(ROOT, "examples", name);

/** Starts example `name`; resolves once generation 1 reports itself ready. */
async function startExample(name: string): Promise<Generations> {
  return await startGenerations(left, example(name));
}

// A fresh connection per request (`Connection: close`): fetch() would reuse a pooled
// keep-alive connection, which stays on the generation that accepted it.
async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const { port, pathname } = new URL(url);
  const raw = await exchange(Number(port), httpGet(pathname));
  const end = raw.indexOf("\r\n\r\n");
  assert.ok(end > 0, `not an HTTP response: ${JSON.stringify(raw)}`);
  const head = raw.slice(0, end);
  assert.doesNotMatch(head, /transfer-encoding:\s*chunked/i, "expected a sized body");
  return {
    status: Number(head.slice(9, 12)),
    type: /^content-type:\s*(.*)$/im.exec(head)?.[1] ?? "",
    body: raw.slice(end + 4),
  };
}

describe(`examples/hono.ts (${RUNTIME})`, () => {
  test("serves its routes, and 3 upgrades under load fail no request", async () => {
    const g = await startExample("hono.ts");
    const { server, port } = g;
    const base = `http://127.0.0.1:${port}`;

    const root = await get(`${base}/`);
    assert.equal(root.status, 200);
    assert.equal(root.body, `hono from pid ${server.pid} generation 1\n`);
    const hello = await get(`${base}/hello/ada`);
    assert.equal(hello.status, 200);
    assert.match(hello.type, /^application\/json/);
    assert.deepEqual(JSON.parse(hello.body), { hello: "ada", pid: server.pid, generation: 1 });
    const health = await get(`${base}/health`);
    assert.equal(health.status, 200);
    assert.match(health.type, /^text\/plain/);
    assert.equal(health.body, "ok\n");
    assert.equal((await get(`${base}/nowhere`)).status, 404);

    const ac = new AbortController();
    const generations = new Set<string>();
    const onResponse = (body: string) => generations.add(/pid (\d+)/.exec(body)?.[1] ?? "?");
    const common = {
      port,
      durationMs: 120_000,
      pauseMs: TEST_PAUSE_MS,
      signal: ac.signal,
      onResponse,
    };
    const keepAlive = runLoad({ ...common, connections: 8 });
    const short = runLoad({ ...common, connections: 2, keepAlive: false });
    let current = server.pid;
    try {
      for (let i = 0; i < 3; i++) {
        await sleep(200);
        current = await upgradeByHup(g, current);
      }
      await sleep(300);
    } finally {
      ac.abort();
    }
    const [k, s] = await Promise.all([keepAlive, short]);
    for (const [name, r] of [["keep-alive", k], ["short", s]] as const) {
      assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > 20, `${name}: only ${r.ok} responses`);
    }
    assert.equal(generations.size, 4, `responses came from pids ${[...generations]}`);

    // The fourth generation serves the routes too.
    const last = JSON.parse((await get(`${base}/hello/grace`)).body);
    assert.deepEqual(last, { hello: "grace", pid: current, generation: 4 });
    await within(server.exited, 30_000, "first generation exit");
    process.kill(current, "SIGTERM");
    await stopped(current);
  });
});

/** A WebSocket that echoes through `echo()`. */
async function openEcho(
  port: number,
): Promise<{ echo(text: string): Promise<string>; ws: WebSocket }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  sockets.push(ws);
  const inbox: string[] = [];
  let wake: (() => void) | undefined;
  ws.onmessage = (e) => {
    inbox.push(String(e.data));
    wake?.();
  };
  await within(
    new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`WebSocket to port ${port} failed`));
    }),
    20_000,
    "WebSocket open",
  );
  return {
    ws,
    async echo(text: string): Promise<string> {
      ws.send(text);
      if (inbox.length === 0) {
        await within(new Promise<void>((r) => (wake = r)), 20_000, `echo of ${text}`);
      }
      return inbox.shift()!;
    },
  };
}

// examples/deno_serve.ts uses Deno.serve's API (Deno.upgradeWebSocket, handler(req, info), onError)
// and examples/bun_serve.ts Bun.serve's (routes/websocket/error options, server.upgrade): each shows
// its own runtime's API and cannot run on the other, so each is tested under its runtime only.
const single = RUNTIME === "deno"
  ? {
    file: "deno_serve.ts",
    hello: (pid: number, gen: number) => `hello 127.0.0.1 from ${pid} (generation ${gen})\n`,
  }
  : {
    file: "bun_serve.ts",
    hello: (pid: number, gen: number, port: number) =>
      `hello from ${pid} (generation ${gen}) on port ${port}\n`,
  };

describe(`examples/${single.file} (${RUNTIME} only)`, () => {
  test("serves HTTP and WebSockets, and an open WebSocket keeps echoing on the old generation across an upgrade", async () => {
    const { server, port } = await startExample(single.file);
    const base = `http://127.0.0.1:${port}`;

    const root = await get(`${base}/`);
    assert.equal(root.status, 200);
    assert.equal(root.body, single.hello(server.pid, 1, port));
    if (RUNTIME === "bun") assert.equal((await get(`${base}/health`)).body, "ok\n");
    // The runtime's own error option (Deno's onError, Bun's error) answers a handler that throws.
    const boom = await get(`${base}/boom`);
    assert.deepEqual([boom.status, boom.body], [500, "oops: boom\n"]);
    const ws = await openEcho(port);
    assert.equal(await ws.echo("before"), "before");

    // The log line says the old generation got the new one's ready and stopped accepting, which
    // the next request needs (the new generation writes its PID file a moment before).
    const from = server.lines.length;
    process.kill(server.pid, "SIGHUP");
    const m = await server.waitFor(/upgrade-(succeeded|failed): (.*)/, 60_000, from);
    assert.equal(m[1], "succeeded", m[2]);
    const newPid = Number(/pid (\d+)/.exec(m[2])![1]);
    server.pids.add(newPid); // killed by after() even if it has not logged yet
    assert.equal((await get(`${base}/`)).body, single.hello(newPid, 2, port));
    assert.equal(await ws.echo("after"), "after");
    assert.equal(alive(server.pid), true, "the old generation waits for its WebSocket");

    ws.ws.close();
    assert.equal(await within(server.exited, 30_000, "old generation exit"), 0);
    process.kill(newPid, "SIGTERM");
    await stopped(newPid);
  });
});
