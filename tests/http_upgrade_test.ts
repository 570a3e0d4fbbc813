// Zero-downtime HTTP upgrades: the HTTP example of this runtime, both spawn
// backends, both serve() paths, under keep-alive load and a storm of short
// connections, every failure counted.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import process from "node:process";
import { runLoad } from "./support/load_client.ts";
import {
  alive,
  cleanupAfterTests,
  ROOT,
  RUNTIME,
  runtimeCmd,
  startServer,
} from "./support/helpers.ts";

const { servers } = cleanupAfterTests();

const EXAMPLE = join(ROOT, "examples", "http_server.ts");

for (const backend of ["fork", "posix_spawn"] as const) {
  for (const mode of ["transplant", "fallback"] as const) {
    describe(`HTTP upgrades (${RUNTIME}, ${backend}, serve ${mode})`, () => {
      test("20 upgrades under keep-alive load and short connections fail no request", async () => {
        const server = startServer(
          runtimeCmd(RUNTIME, EXAMPLE, [
            "--port",
            "0",
            "--spawn-backend",
            backend,
            "--serve-mode",
            mode,
          ]),
        );
        servers.push(server);
        const port = Number((await server.waitFor(/ready on 127\.0\.0\.1:(\d+)/))[1]);
        const ac = new AbortController();
        const pids = new Set<string>();
        const onResponse = (body: string) => pids.add(/pid (\d+)/.exec(body)?.[1] ?? "?");
        const common = { port, durationMs: 120_000, signal: ac.signal, onResponse };
        const keepAlive = runLoad({ ...common, connections: 16 });
        const short = runLoad({ ...common, connections: 4, keepAlive: false });
        let current = server.pid;
        try {
          for (let i = 0; i < 20; i++) {
            await new Promise((r) => setTimeout(r, 50));
            const from = server.lines.length;
            process.kill(current, "SIGHUP");
            const m = await server.waitFor(/upgrade-(succeeded|failed): (.*)/, 60_000, from);
            assert.equal(m[1], "succeeded", m[2]);
            current = Number(/pid (\d+)/.exec(m[2])![1]);
          }
          await new Promise((r) => setTimeout(r, 300));
        } finally {
          ac.abort();
        }
        const [k, s] = await Promise.all([keepAlive, short]);
        for (const [name, r] of [["keep-alive", k], ["short", s]] as const) {
          assert.equal(
            r.failed,
            0,
            `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`,
          );
          assert.ok(r.ok > 100, `${name}: only ${r.ok} responses`);
        }
        assert.ok(pids.size >= 10, `responses came from ${pids.size} generations`);
        assert.equal(alive(current), true);
        process.kill(current, "SIGTERM");
      });
    });
  }
}
