/**
 * instar/auto serves an unmodified raw `node:net` server (tests/fixtures/auto/tcp_echo.mjs: a
 * line echo on port 0 and on a Unix socket): SIGHUP upgrades while a client keeps opening
 * connections (each sends one line and expects its echo, never re-sending) lose none; a
 * connection opened before an upgrade stays with the old generation until it closes; a stop
 * waits for the open connections and exits 0.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { describe, test } from "node:test";
import {
  cleanupAfterTests,
  ROOT,
  runCommand,
  RUNTIME,
  type ServerProcess,
  showResult,
  startServer,
  stopped,
  within,
} from "./support/helpers.ts";
import { bin } from "./support/procs.ts";
import { nextPidInPidFile, serverStatus } from "./support/status.ts";

const left = cleanupAfterTests();
const PRELOAD = join(ROOT, "src/auto/preload.ts");
const FIXTURE = join(ROOT, "tests/fixtures/auto/tcp_echo.mjs");

const preloaded = RUNTIME === "deno"
  ? [bin("deno"), "run", "-A", "--no-check", "--preload", PRELOAD, FIXTURE]
  : [bin("bun"), "--preload", PRELOAD, FIXTURE];

interface App {
  server: ServerProcess;
  port: number;
  sock: string;
  pidFile: string;
  control: string;
  pid: number;
}

/** The echo fixture on port 0 and a Unix socket; resolves once generation 1 is ready. */
async function startApp(): Promise<App> {
  const dir = left.tempDir("instar-auto-net-");
  const sock = join(dir, "echo.sock"), pidFile = join(dir, "app.pid");
  const control = join(dir, "control.sock");
  const server = startServer(preloaded, {
    PORT: "0",
    SOCK: sock,
    INSTAR_PID_FILE: pidFile,
    INSTAR_CONTROL: control,
    INSTAR_DRAIN_TIMEOUT: "8000",
  });
  left.servers.push(server);
  const pid = await nextPidInPidFile(pidFile, 0, { log: server.lines });
  const port = Number((await server.waitFor(/^listening tcp (\d+)$/))[1]);
  return { server, port, sock, pidFile, control, pid };
}

/** SIGHUP to the current generation; resolves with the next one's pid once it is ready. */
async function upgrade(app: App): Promise<number> {
  process.kill(app.pid, "SIGHUP");
  const next = await nextPidInPidFile(app.pidFile, app.pid, { log: app.server.lines });
  app.server.pids.add(next);
  return (app.pid = next);
}

/** The fds (≥ 3) of process `pid` without O_CLOEXEC, with what they are. */
function withoutCloexec(pid: number): string[] {
  const O_CLOEXEC = 0o2000000;
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => Number(fd) > 2).flatMap((fd) => {
    try {
      const flags = readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8").match(/^flags:\s+(\d+)/m);
      if (!flags || (parseInt(flags[1], 8) & O_CLOEXEC) !== 0) return [];
      return [`${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`];
    } catch {
      return []; // a connection the load closed meanwhile
    }
  });
}

/** A connection that sends lines and reads their echoes (`<pid> <line>`), one at a time. */
class Client {
  #socket: net.Socket;
  #rest = "";
  #waiting: ((line: string) => void) | undefined;
  readonly closed: Promise<void>;

  constructor(to: { port: number } | { path: string }) {
    const s = this.#socket = "port" in to
      ? net.connect({ host: "127.0.0.1", port: to.port })
      : net.connect({ path: to.path });
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      this.#rest += d;
      const i = this.#rest.indexOf("\n");
      if (i < 0) return;
      const line = this.#rest.slice(0, i);
      this.#rest = this.#rest.slice(i + 1);
      this.#waiting?.(line);
    });
    this.closed = new Promise((resolve, reject) => {
      s.once("error", reject);
      s.once("close", () => resolve());
    });
    this.closed.catch(() => {});
  }

  /** Sends `line` and resolves with the pid that echoed it (rejects on a wrong echo or an error). */
  echo(line: string): Promise<number> {
    const answer = new Promise<string>((resolve) => (this.#waiting = resolve));
    this.#socket.write(`${line}\n`);
    const got = Promise.race([answer, this.closed.then(() => "closed before the echo")]);
    return within(got, 5_000, `echo of ${line}`).then((a) => {
      const m = a.match(/^(\d+) (.*)$/);
      if (!m || m[2] !== line) throw new Error(`sent ${line}, got ${JSON.stringify(a)}`);
      return Number(m[1]);
    });
  }

  close(): Promise<void> {
    this.#socket.end();
    return this.closed;
  }
}

/** Connections opened one after another by `workers` clients, each echoing one line, until `signal`. */
async function keepConnecting(port: number, signal: AbortSignal, workers = 4) {
  const seen = new Set<number>(), errors: string[] = [];
  let ok = 0, n = 0;
  const worker = async () => {
    while (!signal.aborted) {
      const line = `line-${n++}`;
      const c = new Client({ port });
      try {
        seen.add(await c.echo(line));
        await c.close();
        ok++;
      } catch (err) {
        errors.push(`${line}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  return { ok, errors, seen };
}

describe(`instar/auto with a raw node:net server (${RUNTIME})`, () => {
  let shared: App | undefined;

  test("port 0 and a Unix path serve, and the server counts its own open connections", async () => {
    const app = shared = await startApp();
    assert.ok(app.port > 0, "listen(0)'s callback reads the port it got");
    const tcp = new Client({ port: app.port }), unix = new Client({ path: app.sock });
    assert.equal(await tcp.echo("a"), app.pid);
    assert.equal(await unix.echo("b"), app.pid);
    const status = await serverStatus(app.control);
    const onUnix = status?.listeners.find((l) => l.addr.includes(app.sock));
    // An HTTP server's Unix socket reads null (the kernel's table has no ports there).
    assert.equal(onUnix?.connections, 1, JSON.stringify(status));
    await Promise.all([tcp.close(), unix.close()]);
  });

  test("two upgrades under a client that keeps connecting lose no echo, and an older connection stays with its generation", async () => {
    const app = shared!;
    const long = new Client({ port: app.port });
    const first = await long.echo("before");
    const stop = new AbortController();
    const load = keepConnecting(app.port, stop.signal);
    await new Promise((r) => setTimeout(r, 300));
    await upgrade(app);
    // Both generations accept until the old one hears it must drain; past the drain's pause
    // (250 ms) it waits for its connections alone.
    await app.server.waitFor(new RegExp(`pid=${first} gen=1\\] draining: upgrade`));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await long.echo("after the upgrade"), first, "the old generation answers");
    const local = new Client({ path: app.sock });
    assert.equal(await local.echo("new"), app.pid);
    await local.close();
    await long.close();
    await stopped(first, 8_000);
    const second = app.pid;
    await upgrade(app);
    await stopped(second, 8_000);
    // instar's fds and the servers' duplicates: none would reach a child the app spawns.
    assert.deepEqual(withoutCloexec(app.pid), []);
    await new Promise((r) => setTimeout(r, 300));
    stop.abort();
    const { ok, errors, seen } = await load;
    assert.deepEqual(errors, []);
    assert.ok(ok > 100, `only ${ok} echoes`);
    assert.ok(seen.size >= 2, `echoes from ${[...seen]}`);
  });

  test("a stop waits for the open connections, then exits 0", async () => {
    const app = await startApp();
    const c = new Client({ port: app.port });
    assert.equal(await c.echo("x"), app.pid);
    process.kill(app.pid, "SIGTERM");
    await app.server.waitFor(/draining: stop/);
    // Past the drain's pause (250 ms): the generation now waits for the connection alone.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await c.echo("still"), app.pid, "the connection is served on while it drains");
    await c.close();
    assert.equal(await within(app.server.exited, 8_000, "exit after the close"), 0);
  });

  test("in portable mode the server listens itself, SIGHUP is refused with the reason, and a stop waits for its connection", async () => {
    const server = startServer(preloaded, { PORT: "0", INSTAR_PORTABLE: "1" });
    left.servers.push(server);
    const port = Number((await server.waitFor(/^listening tcp (\d+)$/, 30_000))[1]);
    await server.waitFor(/\] ready on /, 10_000);
    const c = new Client({ port });
    const pid = await c.echo("a");
    process.kill(pid, "SIGHUP");
    await server.waitFor(/upgrade-refused: unsupported-platform/, 10_000);
    const b = new Client({ port });
    assert.equal(await b.echo("b"), pid, "the same process serves on");
    await b.close();
    process.kill(pid, "SIGTERM");
    await server.waitFor(/draining: stop/, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await c.echo("still"), pid, "the open connection is served while it drains");
    await c.close();
    assert.equal(await within(server.exited, 8_000, "exit after the close"), 0);
  });

  test("a ready URL with only raw servers fails the start, saying why", async () => {
    const r = await runCommand(preloaded, {
      env: { PORT: "0", INSTAR_AUTO_READY_URL: "/ready" },
      timeoutMs: 20_000,
    });
    assert.equal(r.code, 1, showResult(r));
    assert.match(r.stderr, /a ready URL needs an HTTP server/);
  });
});
