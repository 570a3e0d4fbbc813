// The published artefacts: the npm tarball (installed into a fresh Bun project
// and used from there, command included) and the JSR package (`deno publish
// --dry-run`, which fails on slow types).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  alive,
  bunBin,
  cleanupAfterTests,
  denoBin,
  echoOnce,
  ROOT,
  runCommand,
  RUNTIME,
  showResult,
  skipIf,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { portOf, readyGeneration } from "./support/status.ts";

const { servers, tempDir } = cleanupAfterTests();
const dir = tempDir("instar-pkg-");

// A program written by a user of the package: it knows only the name "instar".
const APP = `import process from "node:process";
import { logLifecycle, Upgrader } from "instar";

const up = await Upgrader.create({ pidFile: process.argv[2], controlSocket: process.argv[3] });
logLifecycle(up, "app");
const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
(async () => {
  for await (const conn of listener) {
    conn.readable.pipeTo(conn.writable).catch(() => {});
  }
})();
await up.ready();
`;

describe("packaging", () => {
  let tarball = "";

  test("npm pack ships mod.ts, src/, README.md and package.json, and no tests, bench, examples or docs", async () => {
    const packed = await runCommand(["npm", "pack", "--json", "--pack-destination", dir]);
    assert.equal(packed.code, 0, showResult(packed, 3000));
    const [info] = JSON.parse(packed.stdout);
    tarball = join(dir, info.filename);
    const listed = await runCommand(["tar", "-tzf", tarball]);
    assert.equal(listed.code, 0, showResult(listed, 3000));
    const files = listed.stdout.trim().split("\n").map((f) => f.replace(/^package\//, ""));
    for (
      const f of [
        "mod.ts",
        "README.md",
        "package.json",
        "src/lifecycle/upgrader.ts",
        "src/cli/main.ts",
      ]
    ) {
      assert.ok(files.includes(f), `${f} is in the tarball: ${files.join(" ")}`);
    }
    assert.ok(files.includes("src/ffi/mod.ts"), "src/ is shipped recursively");
    for (const f of files) {
      assert.match(
        f,
        /^(mod\.ts|unstable\.ts|README\.md|LICENSE|package\.json|src\/.+)$/,
        `unexpected ${f}`,
      );
      assert.doesNotMatch(f, /^(tests|bench|examples|docs|scripts)\//);
    }
    const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    assert.deepEqual(Object.keys(manifest.dependencies ?? {}), [], "no runtime dependencies");
    assert.match(String(manifest.bin?.instar), /^(\.\/)?src\/cli\/main\.ts$/);
    assert.match(
      readFileSync(join(ROOT, "src", "cli", "main.ts"), "utf8"),
      /^#!\/usr\/bin\/env bun\n/,
    );
  });

  test("a fresh Bun project installs the tarball, runs a server built on it and upgrades it with SIGHUP", async () => {
    assert.ok(tarball, "the tarball was packed by the previous test");
    const app = join(dir, "app");
    mkdirSync(app);
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({ name: "app", private: true, type: "module" }),
    );
    writeFileSync(join(app, "app.ts"), APP);
    // No registry is involved: the package has no dependencies.
    const env = { BUN_INSTALL_CACHE_DIR: join(dir, "bun-cache"), DO_NOT_TRACK: "1" };
    const added = await runCommand([bunBin(), "add", tarball], { cwd: app, env });
    assert.equal(added.code, 0, showResult(added, 3000));
    assert.match(added.stdout + added.stderr, /installed instar@/);
    const installed = JSON.parse(
      readFileSync(join(app, "node_modules", "instar", "package.json"), "utf8"),
    );
    assert.equal(installed.name, "instar");

    const pidFile = join(app, "app.pid");
    const ctl = join(app, "ctl.sock");
    const server = startServer([bunBin(), join(app, "app.ts"), pidFile, ctl]);
    servers.push(server);
    const log = server.lines;
    const port = portOf(await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs: 60_000, log }));
    assert.match(await echoOnce(port), /^hello /);

    // The command the package installs, found through node_modules/.bin.
    const PATH = `${join(app, "node_modules", ".bin")}:${join(ROOT, "node_modules", ".bin")}:` +
      (process.env.PATH ?? "");
    const status = await runCommand(["instar", "status", "--pid-file", pidFile, "--json"], {
      cwd: app,
      env: { PATH },
    });
    assert.equal(status.code, 0, showResult(status, 3000));
    assert.deepEqual(JSON.parse(status.stdout), { pid: server.pid, running: true });

    process.kill(server.pid, "SIGHUP");
    const second = await readyGeneration(ctl, 2, { timeoutMs: 60_000, log });
    const next = second.pid;
    server.pids.add(next); // killed by after() even if it has not logged yet
    assert.equal(portOf(second), port);
    assert.match(await echoOnce(port), /^hello /);
    assert.equal(await server.exited, 0, "the first generation drains and exits");
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(next));
    process.kill(next, "SIGTERM");
    for (let t = 0; t < 200 && alive(next); t++) await sleep(50);
    assert.equal(alive(next), false);
  });

  // The check is of the package, not of the runner: it runs once, under deno test (it took
  // 15–18 s and most of a core under each runner).
  const publish = "deno publish --dry-run passes: no slow types, only the published files";
  const once = RUNTIME === "bun" &&
    "deno publish --dry-run runs once, under deno test (it checks the package, not the runner)";
  test(publish, skipIf(once, publish), async () => {
    const r = await runCommand(
      [denoBin(), "publish", "--dry-run", "--allow-dirty"],
      { env: { DENO_NO_UPDATE_CHECK: "1" }, timeoutMs: 180_000 },
    );
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 0, showResult(r, 3000));
    // A slow type (or any other JSR problem) is reported as `error[<kind>]`.
    assert.doesNotMatch(out, /error\[/);
    assert.match(out, /Success Dry run complete/);
    assert.match(out, /mod\.ts/);
    // Relative to the checkout, which may itself sit under a directory named tests/.
    const files = out.replaceAll(`file://${ROOT.replace(/\/?$/, "/")}`, "file:///<root>/");
    assert.doesNotMatch(files, /file:\/\/\/<root>\/(tests|bench|examples)\//);
  });
});
