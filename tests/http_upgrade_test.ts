// Zero-downtime HTTP upgrades: the HTTP example of this runtime, both spawn
// backends, both serve() paths, under keep-alive GETs, 16 KiB POSTs and a
// storm of short connections from a client that never re-sends, every
// failure counted, every POST answered exactly once.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { assertLoadsAnswered, assertPostsRead } from "./support/generations.ts";
import { join } from "node:path";
import process from "node:process";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  cleanupAfterTests,
  ROOT,
  RUNTIME,
  runtimeCmd,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { nextPidInPidFile, portOf, readyGeneration } from "./support/status.ts";

const { servers, tempDir } = cleanupAfterTests();

const EXAMPLE = join(ROOT, "examples", "http_server.ts");

for (const backend of ["fork", "posix_spawn"] as const) {
  for (const mode of ["transplant", "fallback"] as const) {
    describe(`HTTP upgrades (${RUNTIME}, ${backend}, serve ${mode})`, () => {
      test("20 upgrades under keep-alive GETs, POSTs and short connections fail no request", async () => {
        const dir = tempDir("instar-http-");
        const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
        const stats = join(dir, "posts.txt");
        const server = startServer(
          runtimeCmd(RUNTIME, EXAMPLE, [
            "--port",
            "0",
            "--spawn-backend",
            backend,
            "--serve-mode",
            mode,
            "--control",
            ctl,
            "--pid-file",
            pidFile,
            "--stats-file",
            stats,
          ]),
        );
        servers.push(server);
        const log = server.lines;
        const port = portOf(await readyGeneration(ctl, 1, { pid: server.pid, log }));
        const ac = new AbortController();
        const pids = new Set<string>();
        const onResponse = (body: string) => pids.add(/pid (\d+)/.exec(body)?.[1] ?? "?");
        const common = {
          port,
          durationMs: 120_000,
          pauseMs: TEST_PAUSE_MS,
          signal: ac.signal,
          onResponse,
        };
        const keepAlive = runLoad({ ...common, connections: 32 });
        // Back to back (no pause), so that drains meet POSTs mid-body and new connections in the
        // accept queue more often than a paced load does (not asserted: those are the races it
        // gives a chance to fail). Few connections, so that they do not take the CPU the upgrades
        // need (the loads were most of this file's CPU).
        const posts = runLoad({ ...common, pauseMs: 0, connections: 4, postBytes: 16 * 1024 });
        const short = runLoad({ ...common, pauseMs: 0, connections: 2, keepAlive: false });
        let current = server.pid;
        try {
          for (let i = 0; i < 20; i++) {
            await new Promise((r) => setTimeout(r, 50));
            process.kill(current, "SIGHUP");
            // The next generation is ready once it wrote the PID file.
            current = await nextPidInPidFile(pidFile, current, { timeoutMs: 60_000, log });
            server.pids.add(current); // killed by after() even if it has not logged yet
          }
          await new Promise((r) => setTimeout(r, 300));
        } finally {
          ac.abort();
        }
        const [k, p, s] = await Promise.all([keepAlive, posts, short]);
        assertLoadsAnswered({ "keep-alive": k, POST: p, short: s });
        assert.ok(pids.size >= 10, `responses came from ${pids.size} generations`);
        assert.equal(alive(current), true);
        process.kill(current, "SIGTERM");
        // Every generation appends its count once it has drained: wait for all of them.
        for (const pid of server.pids) await stopped(pid);
        assertPostsRead(stats, 21, p.ok);
      });
    });
  }
}
