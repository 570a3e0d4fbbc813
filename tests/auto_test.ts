/**
 * instar/auto (src/auto/) beyond the framework matrix (tests/frameworks_test.ts,
 * where each unmodified server goes through 20 upgrades and a stop under
 * `instar run --auto`): the preload used alone, with a ready URL and with TLS
 * the app configures, under a load that never re-sends; several listens in one
 * app; a generation that never listens, or listens elsewhere, fails its upgrade
 * with the reason while the old one serves on; bad input is refused with a
 * clear error; an app's own SIGTERM → process.exit(0) does not cut a request
 * in flight.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { describe, test } from "node:test";
import {
  cleanupAfterTests,
  freePort,
  getBody,
  onPath,
  ROOT,
  runCommand,
  RUNTIME,
  type ServerProcess,
  skipIf,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { bin } from "./support/procs.ts";
import { autoArgv } from "../src/supervisor/auto_argv.ts";
import { parseRunArgs } from "../src/supervisor/options.ts";
import { checkReadyPath } from "../src/auto/settings.ts";
import type { InstarError } from "../src/errors.ts";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import { nextPidInPidFile, serverStatus } from "./support/status.ts";

const left = cleanupAfterTests();
const PRELOAD = join(ROOT, "src/auto/preload.ts");
const fixture = (name: string) => join(ROOT, "tests/fixtures/auto", name);

const NO_OPENSSL = !onPath("openssl") && "openssl is not installed (Debian package openssl)";

/** A self-signed certificate for 127.0.0.1 and its key, made with openssl in `dir`. */
function makeCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, "c.crt"), key = join(dir, "c.key");
  const r = spawnSync("openssl", [
    "req",
    "-x509",
    ...["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
    ...["-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=instar-auto"],
    ...["-addext", "subjectAltName=IP:127.0.0.1"],
  ]);
  assert.equal(r.status, 0, String(r.stderr));
  return { cert, key };
}

/** `script` under this runtime with instar/auto preloaded. */
function preloaded(script: string): string[] {
  return RUNTIME === "deno"
    ? [bin("deno"), "run", "-A", "--no-check", "--preload", PRELOAD, script]
    : [bin("bun"), "--preload", PRELOAD, script];
}

interface App {
  server: ServerProcess;
  port: number;
  pidFile: string;
  pid: number;
}

/** Starts `cmd` on a free port with a PID file; resolves once generation 1 is ready. */
async function startApp(cmd: string[], env: Record<string, string> = {}): Promise<App> {
  const dir = left.tempDir("instar-auto-");
  const port = await freePort(), pidFile = join(dir, "app.pid");
  const server = startServer(cmd, {
    PORT: String(port),
    INSTAR_PID_FILE: pidFile,
    INSTAR_DRAIN_TIMEOUT: "5000",
    ...env,
  });
  left.servers.push(server);
  const pid = await nextPidInPidFile(pidFile, 0, { log: server.lines });
  return { server, port, pidFile, pid };
}

/** SIGHUP to the current generation; resolves with the next one's pid once it is ready. */
async function upgrade(app: App): Promise<number> {
  process.kill(app.pid, "SIGHUP");
  const next = await nextPidInPidFile(app.pidFile, app.pid, { log: app.server.lines });
  app.server.pids.add(next);
  return (app.pid = next);
}

const get = (port: number, path = "/") => getBody(port, path);

/** Upgrades (two by default) under a keep-alive GET load and a 16 KiB POST load: no request may fail. */
async function upgradesUnderLoad(app: App, { upgrades = 2, tls = false } = {}): Promise<void> {
  const seen = new Set<string>();
  const common = {
    port: app.port,
    tls,
    durationMs: 60_000,
    pauseMs: TEST_PAUSE_MS,
    // "pid <pid>" (a POST to bun_serve.js or deno_serve.ts adds " read <bytes>"): one per generation.
    onResponse: (b: string) => seen.add(/^\S+ \d+/.exec(b)?.[0] ?? b),
  };
  const stop = new AbortController();
  const gets = runLoad({ ...common, connections: 8, signal: stop.signal });
  const posts = runLoad({ ...common, connections: 4, postBytes: 16 * 1024, signal: stop.signal });
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < upgrades; i++) {
    const old = app.pid;
    await upgrade(app);
    await stopped(old, 10_000);
  }
  await new Promise((r) => setTimeout(r, 200));
  stop.abort();
  for (const [name, r] of Object.entries({ gets: await gets, posts: await posts })) {
    assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    assert.ok(r.ok > 50, `${name}: only ${r.ok} answers`);
  }
  assert.equal(seen.size, upgrades + 1, `answers from each generation: ${[...seen].join(" ")}`);
}

describe(`instar/auto (${RUNTIME})`, () => {
  test("with a ready URL, an app that answers 503 on /ready for 1 s upgrades under load with no failed request, the old generation draining only after /ready answered 2xx on the new one; an app that never answers 2xx fails its upgrade with that reason", async () => {
    const mode = join(left.tempDir("instar-auto-ready-"), "mode");
    const app = await startApp(preloaded(fixture("switch.mjs")), {
      WARMUP_MS: "1000",
      INSTAR_AUTO_READY_URL: "/ready",
      INSTAR_AUTO_LISTEN_TIMEOUT: "3000",
      INSTAR_LOG: "json",
      MODE_FILE: mode,
    });
    const old = app.pid;
    await upgradesUnderLoad(app, { upgrades: 1 });
    const [, ok] = await app.server.waitFor(new RegExp(`^ready-ok ${app.pid} (\\d+)`), 5_000);
    const readyOk = Number(ok);
    const event = (name: string) =>
      app.server.lines.map((l) => l.startsWith("{") ? JSON.parse(l) : null)
        .find((j) => j?.event === name && j.pid === old);
    const spawned = Date.parse(event("upgrade-spawned").time);
    const draining = Date.parse(event("draining").time);
    assert.ok(
      readyOk - spawned >= 1000,
      `/ready answered 2xx ${readyOk - spawned} ms after the spawn`,
    );
    assert.ok(draining >= readyOk, `drained ${readyOk - draining} ms before /ready answered 2xx`);

    writeFileSync(mode, "notready");
    const from = app.server.lines.length;
    process.kill(app.pid, "SIGHUP");
    await app.server.waitFor(
      /GET \/ready did not answer 2xx on this generation within 3000 ms .*\(last: 503\)/,
      15_000,
      from,
    );
    await app.server.waitFor(/upgrade-failed/, 15_000, from);
    assert.equal(await get(app.port), `pid ${app.pid}\n`, "the old generation serves on");
  });

  test(
    "TLS options the app passes (node:https, and Bun.serve's tls or Deno.serve's cert/key) are served: an upgrade under HTTPS load fails no request, the ready URL asked in plain HTTP",
    skipIf(NO_OPENSSL, "TLS"),
    async () => {
      const { cert, key } = makeCert(left.tempDir("instar-auto-tls-"));
      const scripts = ["switch.mjs", RUNTIME === "bun" ? "bun_serve.js" : "deno_serve.ts"];
      await Promise.all(scripts.map(async (script) => {
        const app = await startApp(preloaded(fixture(script)), {
          TLS_CERT: cert,
          TLS_KEY: key,
          WARMUP_MS: "300",
          INSTAR_AUTO_READY_URL: "/ready",
          INSTAR_LOG: "off",
        });
        await upgradesUnderLoad(app, { upgrades: 1, tls: true });
        await app.server.waitFor(new RegExp(`^ready-ok ${app.pid} `), 5_000);
      }));
    },
  );

  test("three listens in one app (Express, a Unix socket, port 0) are all inherited before ready, and instar status reports them", async () => {
    const dir = left.tempDir("instar-auto-sock-");
    const sock = join(dir, "s.sock"), ctl = join(dir, "ctl.sock");
    const app = await startApp(preloaded(fixture("multi.mjs")), {
      SOCK: sock,
      INSTAR_CONTROL: ctl,
    });
    const [, zero] = await app.server.waitFor(/^port0 (\d+)/);
    const first = app.pid;
    await upgrade(app);
    await stopped(first, 10_000);
    const firstLine = app.server.lines.findIndex((l) => /^port0 /.test(l));
    const [, zeroAgain] = await app.server.waitFor(/^port0 (\d+)/, 5_000, firstLine + 1);
    assert.equal(zeroAgain, zero, "port 0 keeps the port generation 1 got");
    assert.equal(await get(app.port), `express ${app.pid}\n`);
    assert.equal(await getBody(sock), `unix ${app.pid}\n`);
    assert.equal(await get(Number(zero)), `zero ${app.pid}\n`);
    const status = await serverStatus(ctl);
    assert.equal(status?.generation, 2, "instar status answers on INSTAR_CONTROL");
    assert.equal(status?.listeners.length, 3);
  });

  test("instar run --auto --ready-url preloads instar/auto, asks each generation's /ready and upgrades on the supervisor's SIGHUP", async () => {
    const port = await freePort();
    const runtime = RUNTIME === "deno" ? [bin("deno"), "run", "-A", "--no-check"] : [bin("bun")];
    const sup = startServer(
      [
        ...runtimeCmdOfCli(),
        ...["run", "--auto", "--ready-url", "/ready", "--"],
        ...runtime,
        fixture("switch.mjs"),
      ],
      { PORT: String(port), WARMUP_MS: "200" },
    );
    left.servers.push(sup);
    const [, pid] = await sup.waitFor(/generation 1 \(pid (\d+)\) is ready/);
    await sup.waitFor(new RegExp(`^ready-ok ${pid} `), 5_000);
    const first = await get(port);
    process.kill(sup.pid, "SIGHUP");
    const [, next] = await sup.waitFor(/upgraded: pid (\d+) serves/);
    await sup.waitFor(new RegExp(`^ready-ok ${next} `), 5_000);
    const second = await get(port);
    assert.equal(first, `pid ${pid}\n`);
    assert.equal(second, `pid ${next}\n`, "the new generation answers");
    process.kill(sup.pid, "SIGTERM");
    assert.equal(await sup.exited, 0);
  });

  test("instar run --auto rewrites bun and deno command lines and refuses what it cannot preload", () => {
    const p = "/i/auto.ts", l = "/i/serve.ts";
    assert.deepEqual(autoArgv(["bun", "server.js", "-x"], p, l), [
      "bun",
      "--preload",
      p,
      "server.js",
      "-x",
    ]);
    assert.deepEqual(
      autoArgv(["/usr/bin/deno", "run", "-A", "main.ts"], p, l),
      ["/usr/bin/deno", "run", "--preload", p, "-A", "main.ts"],
    );
    assert.deepEqual(
      autoArgv(["deno", "serve", "-A", "--port", "9", "main.ts"], p, l),
      ["deno", "run", "-A", l, "main.ts", "--port", "9", "--host", "0.0.0.0"],
    );
    for (
      const bad of [["node", "s.js"], ["bun", "run", "start"], ["deno", "task", "x"], [
        "deno",
        "serve",
        "--parallel",
        "m.ts",
      ]]
    ) {
      assert.throws(
        () => autoArgv(bad, p, l),
        (e: InstarError) => e.code === "INVALID_ARGUMENT",
        bad.join(" "),
      );
    }
  });

  test("--ready-url needs --auto and a path; INSTAR_AUTO_READY_URL must be a path", () => {
    const cmd = ["--", bin("bun"), "s.js"];
    assert.equal(
      parseRunArgs(["--auto", "--ready-url", "/ready?deep=1", ...cmd])?.readyUrl,
      "/ready?deep=1",
    );
    for (
      const bad of [["--ready-url", "/ready"], ["--auto", "--ready-url", "ready"], [
        "--auto",
        "--ready-url",
        "/a b",
      ]]
    ) {
      assert.throws(
        () => parseRunArgs([...bad, ...cmd]),
        (e: InstarError) => e.code === "INVALID_ARGUMENT" && /--ready-url/.test(e.message),
        bad.join(" "),
      );
    }
    assert.throws(
      () => checkReadyPath("INSTAR_AUTO_READY_URL", "http://x/ready"),
      (e: InstarError) => e.code === "INVALID_ARGUMENT" && /INSTAR_AUTO_READY_URL/.test(e.message),
    );
  });

  test("a generation that never listens, ends without listening or listens elsewhere fails with the reason, and the old one serves on", async () => {
    const mode = join(left.tempDir("instar-auto-mode-"), "mode");
    const app = await startApp(preloaded(fixture("switch.mjs")), {
      MODE_FILE: mode,
      INSTAR_AUTO_LISTEN_TIMEOUT: "1000",
    });
    const other = await freePort();
    for (
      const [what, reason] of [
        ["nolisten", /did not listen within 1000 ms/],
        ["exit", /the application exited before it listened/],
        [
          `port:${other}`,
          new RegExp(
            `did not listen on tcp:127\\.0\\.0\\.1:${app.port} .*listened on tcp:127\\.0\\.0\\.1:${other}`,
          ),
        ],
      ] as const
    ) {
      writeFileSync(mode, what);
      const from = app.server.lines.length;
      process.kill(app.pid, "SIGHUP");
      await app.server.waitFor(reason, 15_000, from);
      await app.server.waitFor(/upgrade-failed|upgrade failed/, 15_000, from);
      assert.equal(
        await get(app.port),
        `pid ${app.pid}\n`,
        `${what}: the old generation serves on`,
      );
    }
  });

  test("a preloaded program that never listens ends with a clear error", async () => {
    const r = await runCommand(preloaded(fixture("not_a_server.mjs")), {
      env: { INSTAR_AUTO_LISTEN_TIMEOUT: "300" },
      timeoutMs: 20_000,
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /instar\/auto: the application did not listen within 300 ms/);
  });

  test("a port another socket holds with SO_REUSEPORT fails the start, naming the call and EADDRINUSE", async () => {
    // Elysia asks for reusePort by default: instar/auto drops it, its socket is the only one.
    const port = await freePort();
    const holder = net.createServer();
    await new Promise<void>((r) =>
      holder.listen({ port, host: "127.0.0.1", reusePort: true } as net.ListenOptions, r)
    );
    left.sockets.push(holder);
    const script = fixture(RUNTIME === "bun" ? "elysia.ts" : "deno_serve.ts");
    const r = await runCommand(preloaded(script), {
      env: { PORT: String(port) },
      timeoutMs: 20_000,
    });
    holder.close();
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`instar/auto: \\w+\\.serve\\(127\\.0\\.0\\.1:${port}\\) failed: .*EADDRINUSE`),
    );
  });

  test("an app that exits on SIGTERM (process.exit(0); Deno.exit(0) on Deno) still answers the request in flight", async () => {
    const scripts = ["switch.mjs", ...(RUNTIME === "deno" ? ["deno_serve.ts"] : [])];
    await Promise.all(scripts.map(async (script) => {
      const app = await startApp(preloaded(fixture(script)), { EXIT_ON_SIGTERM: "1" });
      const slow = get(app.port, "/slow");
      await new Promise((r) => setTimeout(r, 200));
      process.kill(app.pid, "SIGTERM");
      assert.equal(await slow, `pid ${app.pid}\n`, script);
      assert.equal(await app.server.exited, 0, script);
    }));
  });
});

/** How this runtime runs instar's CLI. */
function runtimeCmdOfCli(): string[] {
  const main = join(ROOT, "src/cli/main.ts");
  return RUNTIME === "deno" ? [bin("deno"), "run", "-A", "--no-check", main] : [bin("bun"), main];
}
