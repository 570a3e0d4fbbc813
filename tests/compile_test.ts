// A `bun build --compile` binary upgrades itself in place: the file on disk is
// replaced (write + rename, as deploy tools do) and SIGHUP starts the new
// binary on the same socket, without a failed request. Under `deno test` this
// still builds and runs the Bun binary: `deno compile` needs a runtime download
// these machines cannot reach (see docs/compiled-binaries.md).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runLoad } from "./support/load_client.ts";
import {
  alive,
  bunBin,
  cleanupAfterTests,
  ROOT,
  runCommand,
  showResult,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { nextPidInPidFile, portOf, readyGeneration } from "./support/status.ts";

const { servers, tempDir } = cleanupAfterTests();
const dir = tempDir("instar-compile-");

// The app: the HTTP example, labelled with a version fixed at build time
// (`--define`), so every response says which binary answered it.
const ENTRY = `import process from "node:process";
declare const APP_VERSION: string;
process.argv.push("--version-label", "version " + APP_VERSION);
await import(${JSON.stringify(join(ROOT, "examples", "http_server.ts"))});
`;

async function build(version: string, out: string): Promise<void> {
  const entry = join(dir, "entry.ts");
  writeFileSync(entry, ENTRY);
  const r = await runCommand(
    [
      bunBin(),
      "build",
      "--compile",
      "--define",
      `APP_VERSION=${JSON.stringify(version)}`,
      entry,
      "--outfile",
      out,
    ],
    { timeoutMs: 180_000 },
  );
  assert.equal(r.code, 0, showResult(r, 3000));
  assert.ok(statSync(out).mode & 0o100, "the binary is executable");
}

describe("compiled binaries (bun build --compile)", () => {
  test("replacing the binary on disk and sending SIGHUP upgrades to the new build without a failed request", async () => {
    const binary = join(dir, "app");
    await build("A", binary);
    const ctl = join(dir, "ctl.sock"), pidFile = join(dir, "app.pid");
    const server = startServer([
      binary,
      ...["--port", "0", "--drain-timeout", "10000", "--control", ctl, "--pid-file", pidFile],
    ]);
    servers.push(server);
    const log = server.lines;
    const port = portOf(await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs: 60_000, log }));

    const seen = new Map<string, number>();
    const ac = new AbortController();
    const load = runLoad({
      port,
      connections: 8,
      durationMs: 120_000,
      signal: ac.signal,
      onResponse: (body) => {
        const k = body.trim();
        seen.set(k, (seen.get(k) ?? 0) + 1);
      },
    });
    let next = 0;
    try {
      // Deploy: build B next to it, then rename over the running binary.
      const staged = join(dir, "app.new");
      await build("B", staged);
      renameSync(staged, binary);
      await sleep(200);
      process.kill(server.pid, "SIGHUP");
      // Generation 2 is ready once it wrote the PID file; that it serves on `port` is
      // what the version B responses of the load below show.
      next = await nextPidInPidFile(pidFile, server.pid, { timeoutMs: 60_000, log });
      server.pids.add(next); // killed by after() even if it has not logged yet
      const bodyB = `hello from pid ${next} generation 2 (version B)`;
      for (let t = 0; t < 200 && !seen.has(bodyB); t++) await sleep(50);
      await sleep(300);
    } finally {
      ac.abort();
    }
    const r = await load;
    const bodyA = `hello from pid ${server.pid} generation 1 (version A)`;
    const bodyB = `hello from pid ${next} generation 2 (version B)`;
    assert.ok((seen.get(bodyA) ?? 0) > 0, `responses: ${JSON.stringify([...seen])}`);
    assert.ok((seen.get(bodyB) ?? 0) > 0, `responses: ${JSON.stringify([...seen])}`);
    assert.deepEqual([...seen.keys()].sort(), [bodyA, bodyB].sort());
    assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    assert.equal(await server.exited, 0, "the old binary drains and exits");
    process.kill(next, "SIGTERM");
    for (let t = 0; t < 200 && alive(next); t++) await sleep(50);
    assert.equal(alive(next), false);
  });
});
