/**
 * instar/auto's edges (issue 18's bad input and command forms): `instar run
 * --auto -- bun run <script>` / `-- deno task <task>` start the command the
 * script names, preloaded, and upgrade under load; scripts it cannot preload
 * are refused naming why; a second `instar run` on a port the first serves
 * fails naming the port and the process holding it, the first serving on
 * alone; `Bun.listen` / `Deno.listen` / `Deno.listenTls` fail at the call;
 * `Bun.serve({ unix })` / `Deno.serve({ path })` upgrade.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { after, before, describe, test } from "node:test";
import {
  cleanupAfterTests,
  freePort,
  getBody,
  ROOT,
  runCommand,
  RUNTIME,
  type ServerProcess,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { bin } from "./support/procs.ts";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import { nextPidInPidFile } from "./support/status.ts";
import { autoCommand } from "../src/supervisor/auto_script.ts";
import { autoArgv } from "../src/supervisor/auto_argv.ts";
import { tcpListenerHolders } from "../src/proc.ts";
import { serveAddressOverride } from "../src/auto/deno_serve.ts";
import type { InstarError } from "../src/errors.ts";

const left = cleanupAfterTests();
const PRELOAD = join(ROOT, "src/auto/preload.ts");
const fixture = (name: string) => join(ROOT, "tests/fixtures/auto", name);
const RUNTIME_CMD = RUNTIME === "deno" ? [bin("deno"), "run", "-A", "--no-check"] : [bin("bun")];
const CLI = [...RUNTIME_CMD, join(ROOT, "src/cli/main.ts")];

/** GET / on a TCP port or a Unix socket path. */
const get = (o: { port?: number; socketPath?: string }) => getBody(o.socketPath ?? o.port!);

/** A package directory: package.json scripts, a deno.jsonc task, a package binary `fakesrv` with a node `#!`. */
function project(scripts: Record<string, string>, tasks: Record<string, unknown> = {}): string {
  const dir = left.tempDir("instar-edges-");
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "app", version: "1.2.3", scripts }),
  );
  writeFileSync(
    join(dir, "deno.jsonc"),
    `{\n  // tasks\n  "tasks": ${JSON.stringify(tasks)},\n}\n`,
  );
  mkdirSync(join(dir, "node_modules", ".bin"), { recursive: true });
  const binFile = join(dir, "node_modules", ".bin", "fakesrv");
  writeFileSync(binFile, "#!/usr/bin/env node\nconsole.log(1);\n");
  chmodSync(binFile, 0o755);
  writeFileSync(join(dir, "server.js"), "");
  return dir;
}

describe(`instar/auto's edges (${RUNTIME})`, () => {
  test("instar run --auto resolves package.json scripts and deno tasks to the command they name, and refuses the ones it cannot preload, naming why", () => {
    const dir = project({
      start: "PORT_X=7 bun --smol server.js",
      nested: "bun run start",
      next: "bun --bun fakesrv start",
      viaDeno: "deno run -A server.js",
      node: "node server.js",
      chain: "bun build && bun server.js",
      nodeBin: "fakesrv start",
      prepped: "bun server.js",
      preprepped: "bun build",
    }, {
      start: "deno run -A server.js",
      deps: { command: "deno run -A server.js", dependencies: ["build"] },
    });
    const ok = (argv: string[]) => autoCommand(argv, dir, "P", "L");
    const bin = join(dir, "node_modules", ".bin", "fakesrv");
    const started = ok(["/b/bun", "run", "start", "--x"]);
    assert.deepEqual(started.argv, ["/b/bun", "--preload", "P", "--smol", "server.js", "--x"]);
    assert.equal(started.env.PORT_X, "7");
    assert.equal(started.env.npm_lifecycle_event, "start");
    assert.equal(started.env.npm_package_version, "1.2.3");
    assert.match(started.env.PATH, new RegExp(`^${join(dir, "node_modules", ".bin")}:`));
    assert.deepEqual(ok(["bun", "start"]).argv, ["bun", "--preload", "P", "--smol", "server.js"]);
    assert.deepEqual(ok(["bun", "run", "nested"]).argv, ok(["bun", "run", "start"]).argv);
    assert.deepEqual(ok(["bun", "run", "next"]).argv, [
      "bun",
      "--preload",
      "P",
      "--bun",
      bin,
      "start",
    ]);
    assert.deepEqual(ok(["bun", "run", "--bun", "nodeBin"]).argv, [
      "bun",
      "--preload",
      "P",
      "--bun",
      bin,
      "start",
    ]);
    assert.deepEqual(ok(["bun", "run", "--bun", "node"]).argv, [
      "bun",
      "--preload",
      "P",
      "--bun",
      "server.js",
    ]);
    assert.deepEqual(ok(["bun", "run", "viaDeno"]).argv, [
      "deno",
      "run",
      "--preload",
      "P",
      "-A",
      "server.js",
    ]);
    assert.deepEqual(ok(["/d/deno", "task", "start"]).argv, [
      "/d/deno",
      "run",
      "--preload",
      "P",
      "-A",
      "server.js",
    ]);
    assert.deepEqual(ok(["bun", "server.js"]), {
      argv: ["bun", "--preload", "P", "server.js"],
      env: {},
    });
    for (
      const [argv, why] of [
        [["bun", "run", "node"], /`node` is neither bun nor deno/],
        [["deno", "task", "node"], /`node` is neither bun nor deno/],
        [["bun", "run", "chain"], /one command, without shell syntax/],
        [["bun", "run", "nodeBin"], /`fakesrv` \(.*\) would run under node/],
        [["bun", "fakesrv"], /would run under node/],
        [["bun", "run", "prepped"], /without "preprepped"/],
        [["deno", "task", "deps"], /without dependencies/],
        [["bun", "run", "missing"], /a script "missing"/],
        // Bun flags before `run`, or before a script in the short form, apply to the runner.
        [["bun", "--smol", "run", "start"], /\(--smol would apply to the runner/],
        [["bun", "--hot", "start"], /\(--hot would apply to the runner/],
        [["bun", "--bun", "--env-file", ".env", "run", "next"], /\(--env-file \.env would/],
        [["bun", "--frobnicate", "run", "start"], /`--frobnicate` is not one instar run knows/],
        [["bun", "--cwd", dir, "run", "start"], /without bun's --cwd/],
        [
          ["deno", "task", "--config", "x.json", "start"],
          /without other flags before the task \(`--config`/,
        ],
        [["deno", "task", "--cwd=/", "start"], /without other flags before the task \(`--cwd=\/`/],
      ] as const
    ) {
      assert.throws(
        () => ok([...argv]),
        (e: InstarError) => e.code === "INVALID_ARGUMENT" && why.test(e.message),
        argv.join(" "),
      );
    }
    // A flag's value is not taken for the file, with or without `run`; --bun passes on.
    const envFile = ["--env-file", ".env", "server.js"];
    assert.deepEqual(ok(["bun", ...envFile]).argv, ["bun", "--preload", "P", ...envFile]);
    const file = join(dir, "server.js");
    const smol = ["--smol", "run", file];
    assert.deepEqual(ok(["bun", ...smol]).argv, ["bun", "--preload", "P", ...smol]);
    assert.deepEqual(ok(["bun", "--bun", "run", "start"]).argv, [
      "bun",
      "--preload",
      "P",
      "--bun",
      "--smol",
      "server.js",
    ]);
    assert.deepEqual(ok(["deno", "task", "-q", "start"]).argv, ok(["deno", "task", "start"]).argv);
    // The net under the script resolution refuses `run <script>` past flags too.
    for (const argv of [["bun", "--smol", "run", "start"], ["bun", "-r", "x", "run", "start"]]) {
      assert.throws(() => autoArgv(argv, "P", "L"), /starts the server as another process/);
    }
  });

  test("instar run --auto refuses an empty script, a bare runtime, and a package.json over 1 MiB, and reads only a binary's first line", () => {
    const dir = project({ empty: "  ", bare: "bun", bareDeno: "deno", big: "bun server.js" });
    const ok = (argv: string[], cwd = dir) => autoCommand(argv, cwd, "P", "L");
    for (const name of ["empty", "bare", "bareDeno"]) {
      assert.throws(
        () => ok(["bun", "run", name, "server.js"]),
        (e: InstarError) =>
          e.code === "INVALID_ARGUMENT" && /names the command to run and its file/.test(e.message),
        name,
      );
    }
    const big = project({ start: "bun server.js" });
    const pkg = join(big, "package.json");
    writeFileSync(
      pkg,
      JSON.stringify({ scripts: { start: "bun server.js" }, pad: "x".repeat(1 << 20) }),
    );
    assert.throws(
      () => ok(["bun", "run", "start"], big),
      (e: InstarError) =>
        e.code === "INVALID_ARGUMENT" && e.message.includes(`a ${pkg} of at most 1 MiB`),
    );
    // A package binary whose `#!` names bun, and past it more than is read.
    const bunBin = join(dir, "node_modules", ".bin", "bunsrv");
    writeFileSync(bunBin, "#!/usr/bin/env bun\n" + "//".repeat(100_000) + "\n");
    chmodSync(bunBin, 0o755);
    assert.deepEqual(ok(["bun", "bunsrv", "--x"]).argv, ["bun", "--preload", "P", bunBin, "--x"]);
  });

  test("tcpListenerHolders names this process for a port it listens on, and no more holders than asked for", async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const holders = tcpListenerHolders(port);
      assert.deepEqual(holders.map((h) => h.pid), [process.pid]);
      assert.ok(holders[0].command, "its command line");
      assert.deepEqual(tcpListenerHolders(port, 0), []);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  // One supervisor, started through the script runner's form, serves the next three tests.
  let port = 0, sup: ServerProcess, current = 0;
  before(async () => {
    port = await freePort();
    // Bun: Next.js's form, a package binary with a node `#!` (`"start": "next start"`) run by
    // `bun run --bun start`; Deno: a deno.jsonc task.
    const dir = RUNTIME === "bun"
      ? project({ start: "srv" })
      : project({}, { start: `deno run -A --no-check ${fixture("switch.mjs")}` });
    const srv = join(dir, "node_modules", ".bin", "srv");
    writeFileSync(srv, `#!/usr/bin/env node\nimport ${JSON.stringify(fixture("switch.mjs"))};\n`);
    chmodSync(srv, 0o755);
    const form = RUNTIME === "bun"
      ? [bin("bun"), "run", "--bun", "start"]
      : [bin("deno"), "task", "start"];
    // The supervisor runs in the package's directory, where the script runner would.
    sup = startServer(
      ["sh", "-c", 'cd "$0" && exec "$@"', dir, ...CLI, "run", "--auto", "--", ...form],
      { PORT: String(port), INSTAR_DRAIN_TIMEOUT: "5000" },
    );
    left.servers.push(sup);
    const [, pid] = await sup.waitFor(/generation 1 \(pid (\d+)\) is ready/);
    current = Number(pid);
  });
  after(async () => {
    process.kill(sup.pid, "SIGTERM");
    await sup.exited;
  });

  test(
    `instar run --auto -- ${
      RUNTIME === "bun"
        ? "bun run --bun start (a package binary with a node #!)"
        : "deno task start"
    } serves the script's server through instar: it upgrades under load with no failed request`,
    async () => {
      const environ = readFileSync(`/proc/${current}/environ`, "utf8").split("\0");
      assert.ok(environ.includes("npm_lifecycle_event=start"), "the script runner's environment");
      const argv = readFileSync(`/proc/${current}/cmdline`, "utf8").split("\0");
      const entry = RUNTIME === "bun" ? "/node_modules/.bin/srv" : "/switch.mjs";
      assert.ok(
        argv.some((a) => a.endsWith(entry)),
        `the script's command runs: ${argv.join(" ")}`,
      );
      const seen = new Set<string>();
      const stop = new AbortController();
      const load = runLoad({
        port,
        connections: 4,
        durationMs: 30_000,
        pauseMs: TEST_PAUSE_MS,
        signal: stop.signal,
        onResponse: (b) => seen.add(b),
      });
      await new Promise((r) => setTimeout(r, 200));
      const first = current, from = sup.lines.length;
      process.kill(sup.pid, "SIGHUP");
      const [, next] = await sup.waitFor(/upgraded: pid (\d+) serves/, 30_000, from);
      await stopped(first, 10_000);
      current = Number(next);
      await new Promise((r) => setTimeout(r, 200));
      stop.abort();
      const r = await load;
      assert.equal(r.failed, 0, `${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > 20, `only ${r.ok} answers`);
      assert.deepEqual([...seen].sort(), [`pid ${first}\n`, `pid ${current}\n`].sort());
    },
  );

  test("a second instar run on the same port fails, naming the port and the process that holds it, and the first serves on alone", async () => {
    const r = await runCommand([
      ...CLI,
      "run",
      "--auto",
      "--",
      ...RUNTIME_CMD,
      fixture("switch.mjs"),
    ], {
      env: { PORT: String(port) },
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `instar/auto: listen\\(127\\.0\\.0\\.1:${port}\\) failed: .*EADDRINUSE.*` +
          `cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use: held by .*pid ${current} \\(`,
      ),
    );
    // Fresh connections, each accepted by whoever listens: only the first supervisor's generation.
    const answers = await Promise.all(Array.from({ length: 20 }, () => get({ port })));
    assert.deepEqual(new Set(answers), new Set([`pid ${current}\n`]));
  });

  test(`${RUNTIME === "bun" ? "Bun.listen" : "Deno.listen and Deno.listenTls"} in a preloaded app fail${RUNTIME === "bun" ? "s" : ""} at the call, naming the address and what to use instead`, async () => {
    const rawPort = await freePort();
    const sock = join(left.tempDir("instar-edges-raw-"), "raw.sock");
    const cases: [string, string][] = RUNTIME === "bun"
      ? [["Bun.listen", `127.0.0.1:${rawPort}`]]
      : [
        ["Deno.listen", `127.0.0.1:${rawPort}`],
        ["Deno.listenTls", `127.0.0.1:${rawPort}`],
        ["Deno.listen unix", `unix:${sock}`],
      ];
    await Promise.all(cases.map(async ([api, where]) => {
      const r = await runCommand([...preloaded(fixture("raw_listen.mjs"))], {
        env: { RAW_API: api, PORT: String(rawPort), SOCK: sock },
        timeoutMs: 30_000,
      });
      assert.equal(r.code, 1, api);
      const call = `${api.split(" ")[0]}(${where})`.replace(/[.()]/g, "\\$&");
      assert.match(
        r.stderr,
        new RegExp(`instar/auto: ${call} cannot be upgraded .*up\\.listen\\(\\)`),
        api,
      );
      assert.match(r.stderr, /AUTO_UNSUPPORTED/, api);
      assert.doesNotMatch(r.stdout, /listening with/, `${api}: the app did not go on`);
    }));
  });

  test(
    `${
      RUNTIME === "bun" ? "Bun.serve({ unix })" : "Deno.serve({ path })"
    } serves through instar and upgrades on its Unix socket`,
    async () => {
      const socketPath = join(left.tempDir("instar-edges-unix-"), "app.sock");
      await upgradesOnce("native_unix.mjs", { SOCK: socketPath }, { socketPath }, "unix");
    },
  );

  if (RUNTIME === "deno") {
    test("DENO_SERVE_ADDRESS moves the first Deno.serve there, as Deno does, and it upgrades there; an address instar cannot serve is refused", async () => {
      assert.deepEqual(serveAddressOverride("tcp:[::1]:8080"), { hostname: "::1", port: 8080 });
      assert.deepEqual(serveAddressOverride("unix:/run/a.sock"), { path: "/run/a.sock" });
      assert.equal(serveAddressOverride(undefined), null);
      for (const bad of ["vsock:1:2", "duplicate,tcp:127.0.0.1:1", "tcp:x", "tcp:h:99999"]) {
        assert.throws(
          () => serveAddressOverride(bad),
          (e: InstarError) => e.code === "AUTO_UNSUPPORTED" && e.message.includes(bad),
          bad,
        );
      }
      const [asked, moved] = [await freePort(), await freePort()];
      await upgradesOnce(
        "deno_serve.ts",
        {
          PORT: String(asked),
          DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${moved}`,
        },
        { port: moved },
        "pid",
      );
    });
  }
});

/**
 * Starts `script` preloaded (with a PID file), asks `where` for "<word> <pid>", upgrades
 * it once by SIGHUP, asks again for the new pid, and stops it.
 */
async function upgradesOnce(
  script: string,
  env: Record<string, string>,
  where: { port?: number; socketPath?: string },
  word: string,
): Promise<void> {
  const pidFile = join(left.tempDir("instar-edges-pid-"), "app.pid");
  const app = startServer(preloaded(fixture(script)), {
    ...env,
    INSTAR_PID_FILE: pidFile,
    INSTAR_LOG: "off",
  });
  left.servers.push(app);
  const pid = await nextPidInPidFile(pidFile, 0, { log: app.lines });
  assert.equal(await get(where), `${word} ${pid}\n`);
  process.kill(pid, "SIGHUP");
  const next = await nextPidInPidFile(pidFile, pid, { log: app.lines });
  app.pids.add(next);
  await stopped(pid, 10_000);
  assert.equal(await get(where), `${word} ${next}\n`, "the new generation answers there");
  process.kill(next, "SIGTERM");
  await stopped(next, 10_000);
}

/** `script` under this runtime with instar/auto preloaded. */
function preloaded(script: string): string[] {
  return RUNTIME === "deno"
    ? [bin("deno"), "run", "-A", "--no-check", "--preload", PRELOAD, script]
    : [bin("bun"), "--preload", PRELOAD, script];
}
