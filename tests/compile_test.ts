// A `bun build --compile` binary upgrades itself in place: the file on disk is
// replaced (write + rename, as deploy tools do) and SIGHUP starts the new
// binary on the same socket, without a failed request. An unmodified app
// compiled with instar/auto in (the entry form of docs/compiled-binaries.md)
// upgrades the same way, alone and under `instar run -- ./app` (the supervisor's
// SIGHUP), and `instar run --auto` refuses a compiled binary naming that form.
// Under `deno test` this still builds and runs the Bun binary: `deno compile`
// needs a runtime download these machines cannot reach (see
// docs/compiled-binaries.md).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  bunBin,
  cleanupAfterTests,
  denoBin,
  freePort,
  ROOT,
  runCommand,
  RUNTIME,
  showResult,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { nextPidInPidFile, portOf, readyGeneration } from "./support/status.ts";
import { autoArgv } from "../src/supervisor/auto_argv.ts";
import { parseRunArgs } from "../src/supervisor/options.ts";
import { isCompiledBun } from "../src/supervisor/bun_binary.ts";
import type { InstarError } from "../src/errors.ts";

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
  await compile(entry, out, ["--define", `APP_VERSION=${JSON.stringify(version)}`]);
}

async function compile(entry: string, out: string, flags: string[] = []): Promise<void> {
  const r = await runCommand(
    [bunBin(), "build", "--compile", ...flags, entry, "--outfile", out],
    { timeoutMs: 180_000 },
  );
  assert.equal(r.code, 0, showResult(r, 3000));
  assert.ok(statSync(out).mode & 0o100, "the binary is executable");
}

// An unmodified Bun.serve app with instar/auto compiled in: the preload first, then the app
// by a dynamic import, which starts only once the preload's top-level await has finished
// (two static imports would start the app before it, outside a bundle).
const AUTO_ENTRY = `import ${JSON.stringify(join(ROOT, "src", "auto", "preload.ts"))};
await import(${JSON.stringify(join(ROOT, "tests", "fixtures", "auto", "bun_serve.js"))});
`;
let autoBinary: Promise<string> | undefined;
/** The compiled unmodified app, built once for the tests that need it. */
function compiledAutoApp(): Promise<string> {
  return autoBinary ??= (async () => {
    const entry = join(dir, "auto_entry.mjs"), out = join(dir, "auto_app");
    writeFileSync(entry, AUTO_ENTRY);
    await compile(entry, out);
    return out;
  })();
}

/**
 * A keep-alive GET load (8 connections, never re-sending) on `port`, stopped by
 * `ac` or after `durationMs`; `seen` counts the answers by body.
 */
function countedLoad(port: number, durationMs: number) {
  const seen = new Map<string, number>();
  const ac = new AbortController();
  const load = runLoad({
    port,
    connections: 8,
    durationMs,
    pauseMs: TEST_PAUSE_MS,
    signal: ac.signal,
    onResponse: (body) => seen.set(body.trim(), (seen.get(body.trim()) ?? 0) + 1),
  });
  return { seen, ac, load };
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

    const { seen, ac, load } = countedLoad(port, 120_000);
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

describe("an unmodified app compiled with instar/auto in", () => {
  test("upgrades by SIGHUP under keep-alive load without a failed request, answered by both generations", async () => {
    const binary = await compiledAutoApp();
    const ctl = join(dir, "auto.sock"), pidFile = join(dir, "auto.pid");
    const server = startServer([binary], {
      PORT: "0",
      INSTAR_PID_FILE: pidFile,
      INSTAR_CONTROL: ctl,
      INSTAR_DRAIN_TIMEOUT: "10000",
    });
    servers.push(server);
    const log = server.lines;
    const port = portOf(await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs: 60_000, log }));
    const { seen, ac, load } = countedLoad(port, 60_000);
    let next = 0;
    try {
      await sleep(200);
      process.kill(server.pid, "SIGHUP"); // the same binary: it re-executes itself
      next = await nextPidInPidFile(pidFile, server.pid, { timeoutMs: 60_000, log });
      server.pids.add(next);
      for (let t = 0; t < 200 && !seen.has(`pid ${next}`); t++) await sleep(50);
      await sleep(300);
    } finally {
      ac.abort();
    }
    const r = await load;
    assert.deepEqual([...seen.keys()].sort(), [`pid ${server.pid}`, `pid ${next}`].sort());
    assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    // the new generation is the compiled binary again, not bun: the preload came with it
    assert.equal(readFileSync(`/proc/${next}/cmdline`, "utf8").split("\0")[0], binary);
    assert.equal(await server.exited, 0, "the old generation drains and exits");
    process.kill(next, "SIGTERM");
    for (let t = 0; t < 200 && alive(next); t++) await sleep(50);
    assert.equal(alive(next), false);
  });

  test("runs under instar run without --auto: a SIGHUP to the supervisor upgrades it under keep-alive load without a failed request, and SIGTERM ends with status 0", async () => {
    const binary = await compiledAutoApp();
    const port = await freePort();
    const cli = join(ROOT, "src", "cli", "main.ts");
    const runtime = RUNTIME === "deno"
      ? [denoBin(), "run", "-A", "--no-check", cli]
      : [bunBin(), cli];
    // the command line the --auto refusal recommends: instar run -- ./app
    const sup = startServer([...runtime, "run", "--", binary], {
      PORT: String(port),
      INSTAR_DRAIN_TIMEOUT: "10000",
    });
    servers.push(sup);
    const [, first] = await sup.waitFor(/generation 1 \(pid (\d+)\) is ready/, 60_000);
    sup.pids.add(Number(first));
    const { seen, ac, load } = countedLoad(port, 60_000);
    let next = "";
    try {
      for (let t = 0; t < 100 && !seen.has(`pid ${first}`); t++) await sleep(50);
      process.kill(sup.pid, "SIGHUP");
      [, next] = await sup.waitFor(/upgraded: pid (\d+) serves/, 60_000);
      sup.pids.add(Number(next));
      for (let t = 0; t < 200 && !seen.has(`pid ${next}`); t++) await sleep(50);
      await sleep(300);
    } finally {
      ac.abort();
    }
    const r = await load;
    assert.deepEqual([...seen.keys()].sort(), [`pid ${first}`, `pid ${next}`].sort());
    assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    await sup.waitFor(new RegExp(`generation 1 \\(pid ${first}\\) exited with status 0`), 30_000);
    process.kill(sup.pid, "SIGTERM");
    assert.equal(await sup.exited, 0, "the supervisor stops the new generation and exits 0");
    await sup.waitFor(new RegExp(`generation 2 \\(pid ${next}\\) exited with status 0`), 5_000);
  });

  test("instar run --auto refuses a compiled binary, naming the entry form and instar run without --auto", async () => {
    const binary = await compiledAutoApp();
    const named = (e: InstarError) =>
      e.code === "INVALID_ARGUMENT" && e.message.includes("is a compiled Bun binary") &&
      e.message.includes('import "instar/auto"; await import("./server.js");') &&
      e.message.includes(`instar run -- ${binary}`);
    assert.throws(() => autoArgv([binary, "--port", "8080"]), named);
    assert.throws(() => parseRunArgs(["--auto", "--", binary]), named);
    // the runtime itself is no compiled binary, and another program's refusal stays plain
    assert.equal(isCompiledBun(binary), true);
    assert.equal(isCompiledBun(bunBin()), false);
    assert.throws(
      () => autoArgv(["/bin/sh", "x.sh"]),
      (e: InstarError) =>
        e.code === "INVALID_ARGUMENT" && e.message.includes("a bun or deno command") &&
        !e.message.includes("compiled"),
    );
  });
});

// A crafted ELF64 file: a null section, the section-name table and a `.bun` section
// holding the compiled-binary trailer, with `entSize`-byte section headers.
function craftedElf(entSize: number, count = 3): Uint8Array {
  const names = new TextEncoder().encode("\0.shstrtab\0.bun\0");
  const bun = new TextEncoder().encode("\0".repeat(8) + "graph" + "\n---- Bun! ----\n");
  const namesAt = 64, bunAt = namesAt + names.length, tableAt = bunAt + bun.length;
  const file = new Uint8Array(tableAt + entSize * count);
  const v = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]); // "\x7fELF", ELFCLASS64, little-endian
  v.setBigUint64(0x28, BigInt(tableAt), true);
  v.setUint16(0x3a, entSize, true);
  v.setUint16(0x3c, count, true);
  v.setUint16(0x3e, 1, true);
  file.set(names, namesAt);
  file.set(bun, bunAt);
  const section = (i: number, name: number, offset: number, size: number) => {
    v.setUint32(tableAt + i * entSize, name, true);
    v.setBigUint64(tableAt + i * entSize + 24, BigInt(offset), true);
    v.setBigUint64(tableAt + i * entSize + 32, BigInt(size), true);
  };
  section(1, 1, namesAt, names.length);
  section(2, 11, bunAt, bun.length);
  return file;
}

describe("recognising a compiled Bun binary by its ELF sections", () => {
  test("only 64-byte ELF64 section headers are read, so a crafted header cannot make it read more", () => {
    const path = join(dir, "crafted");
    const check = (file: Uint8Array) => (writeFileSync(path, file), isCompiledBun(path));
    assert.equal(check(craftedElf(64)), true, "the crafted file is recognised with ELF64 headers");
    // the same sections at a larger stride: padded entries are no ELF64 layout Bun writes
    assert.equal(check(craftedElf(128)), false);
    assert.equal(check(craftedElf(65535)), false);
    // more sections than any binary has: refused before the table is read
    assert.equal(check(craftedElf(64, 4097)), false);
    assert.equal(check(craftedElf(64, 4096)), true, "4096 sections are still read");
  });
});
