// Hostile and broken input from other processes: a forged control socket,
// a stale PID file, symlinks planted where the PID file is written, a wrong
// INSTAR_CONTROL_FD, LISTEN_* variables that are not systemd's.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { dirname, join } from "node:path";
import process from "node:process";
import {
  alive,
  cleanupAfterTests,
  openFds,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  showResult,
  sideBySide,
  skipIf,
  sleep,
  startServer,
  stopped,
  within,
} from "./support/helpers.ts";
import { nextPidInPidFile, readyGeneration } from "./support/status.ts";
import { writePidFile } from "../src/lifecycle/pid_file.ts";
import { serve } from "../src/serve/serve.ts";
import { openListener } from "../src/net/listener.ts";
import {
  type Attempt,
  awaitReady,
  LAST_CHANCE_MS,
  PENDING_GRACE_MS,
  readable,
} from "../src/lifecycle/generation.ts";
import type { UpgradeError } from "../src/errors.ts";
import { type Conn, QUEUE_LIMIT } from "../src/runtime/conn.ts";
import * as sys from "../src/ffi/mod.ts";
import { encodeUnix } from "../src/ffi/sockaddr.ts";
import { listeningSockets } from "./support/listening.ts";

const left = cleanupAfterTests();
const CLI = join(ROOT, "src/cli/main.ts");
const HTTP = join(ROOT, "examples/http_server.ts");
const ECHO = join(ROOT, "examples/echo_server.ts");
const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
const asRoot = process.getuid?.() === 0;
// The system python (not a per-user shim that nobody cannot read); .ci/run installs python3.
const PYTHON = "/usr/bin/python3";

// A forger of another user: binds an abstract name first and claims every upgrade succeeded.
const FORGER = `
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0" + NAME)
s.listen(4)
print("listening", flush=True)
c, _ = s.accept()
try:
    c.recv(4096)
    c.sendall(b'{"type":"upgraded","v":1,"pid":4242}\\n')
except OSError:
    pass  # the CLI hung up first: it did not trust us
c.close()
`;

describe(`hostile input (${RUNTIME})`, () => {
  // Each of these starts a process or two of its own, puts no load on it and bounds no time
  // tightly: they mostly wait for a runtime to start, so they run side by side (sideBySide()).
  const testSideBySide = sideBySide();
  testSideBySide(
    "instar upgrade refuses a control socket answered by another user",
    skipIf(
      !asRoot
        ? "needs root to run the forger as nobody (setpriv)"
        : !existsSync(PYTHON) && `${PYTHON} is missing (Debian package python3)`,
      "forged control socket",
    ),
    async () => {
      const name = `instar-forge-${process.pid}-${Date.now()}`;
      const forger = spawn(
        NOBODY[0],
        [...NOBODY.slice(1), PYTHON, "-c", `NAME = ${JSON.stringify(name)}\n${FORGER}`],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      left.sockets.push({ close: () => forger.kill("SIGKILL") });
      await new Promise<void>((resolve, reject) => {
        forger.stdout!.once("data", () => resolve());
        forger.once("exit", (code) => reject(new Error(`the forger exited with ${code}`)));
      });
      const r = await runCommand(runtimeCmd(RUNTIME, CLI, ["upgrade", "--control", `@${name}`]));
      assert.equal(r.code, 1, showResult(r));
      assert.match(r.stderr, /runs as uid 65534, not 0: not trusting it/);
      assert.doesNotMatch(r.stdout, /4242/);
    },
  );

  testSideBySide(
    "instar upgrade --pid-file refuses to signal a process started after the PID file was written",
    async () => {
      const dir = left.tempDir("instar-pid-");
      const pidFile = join(dir, "app.pid");
      const sleeper = spawn("sleep", ["30"], { stdio: "ignore" });
      left.sockets.push({ close: () => sleeper.kill("SIGKILL") });
      writeFileSync(pidFile, `${sleeper.pid}\n`);
      const past = new Date(Date.now() - 60_000);
      utimesSync(pidFile, past, past); // written a minute before the sleeper started: stale
      const r = await runCommand(
        runtimeCmd(RUNTIME, CLI, ["upgrade", "--pid-file", pidFile, "--timeout", "2000"]),
      );
      assert.equal(r.code, 1, showResult(r));
      assert.match(r.stderr, /stale/);
      await sleep(100);
      assert.equal(alive(sleeper.pid!), true, "the unrelated process got no signal");
    },
  );

  for (const value of ["1", "0", "2"]) {
    testSideBySide(
      `INSTAR_CONTROL_FD=${value} is refused with PROTOCOL_ERROR, writing nothing to stdout`,
      async () => {
        const r = await runCommand(runtimeCmd(RUNTIME, HTTP, ["--port", "0"]), {
          env: { INSTAR_CONTROL_FD: value },
          timeoutMs: 30_000,
        });
        assert.notEqual(r.code, 0, showResult(r));
        assert.match(r.stderr, new RegExp(`INSTAR_CONTROL_FD=${value} is a standard stream`));
        assert.equal(r.stdout, "");
      },
    );
  }

  testSideBySide("INSTAR_CONTROL_FD naming a file is refused with PROTOCOL_ERROR", async () => {
    const r = await runCommand(
      [
        "sh",
        "-c",
        `exec 7</dev/null; exec "$@"`,
        "sh",
        ...runtimeCmd(RUNTIME, HTTP, ["--port", "0"]),
      ],
      { env: { INSTAR_CONTROL_FD: "7" }, timeoutMs: 30_000 },
    );
    assert.notEqual(r.code, 0, showResult(r));
    assert.match(
      r.stderr,
      /INSTAR_CONTROL_FD=7 is not an open socket|INSTAR_CONTROL_FD=7 is not a Unix stream socket/,
    );
  });

  describe("the PID file is never written through a symlink", () => {
    const VICTIM = "precious content\n";
    /** A directory with a victim file, and `app.pid` to be written in it. */
    const setup = () => {
      const dir = left.tempDir("instar-pidlink-");
      const victim = join(dir, "victim");
      writeFileSync(victim, VICTIM);
      return { dir, victim, pidFile: join(dir, "app.pid") };
    };
    const assertPidFile = (pidFile: string, pid: number) => {
      assert.equal(lstatSync(pidFile).isFile(), true, "the PID file is a regular file");
      assert.equal(readFileSync(pidFile, "utf8"), `${pid}\n`);
    };

    test("a symlink planted at the old predictable <path>.<pid>.tmp name is left alone", () => {
      const { dir, victim, pidFile } = setup();
      const planted = `${pidFile}.${process.pid}.tmp`;
      symlinkSync(victim, planted);
      writePidFile(pidFile, process.pid);
      assert.equal(readFileSync(victim, "utf8"), VICTIM, "the victim is unchanged");
      assert.equal(readlinkSync(planted), victim, "the planted link still points at the victim");
      assertPidFile(pidFile, process.pid);
      assert.deepEqual(
        readdirSync(dir).sort(),
        ["app.pid", "app.pid." + process.pid + ".tmp", "victim"].sort(),
        "no temp file is left behind",
      );
    });

    test("a symlink planted at the random temp name is not followed: another name is taken", () => {
      const { dir, victim, pidFile } = setup();
      // Plant links at the first names the writer will try; the third name is free.
      const names = [join(dir, ".a.pid.tmp"), join(dir, ".b.pid.tmp"), join(dir, ".c.pid.tmp")];
      symlinkSync(victim, names[0]);
      symlinkSync(join(dir, "does-not-exist-yet"), names[1]); // a dangling link too
      let i = 0;
      writePidFile(pidFile, 4242, () => names[i++]);
      assert.equal(i, 3, "two names were refused, the third was used");
      assert.equal(readFileSync(victim, "utf8"), VICTIM, "the victim is unchanged");
      assert.equal(existsSync(join(dir, "does-not-exist-yet")), false, "no file created");
      assert.equal(readlinkSync(names[0]), victim);
      assertPidFile(pidFile, 4242);
    });

    test("a writer that only ever finds planted names gives up with EEXIST and writes nothing", () => {
      const { dir, victim, pidFile } = setup();
      const planted = join(dir, ".planted.pid.tmp");
      symlinkSync(victim, planted);
      assert.throws(() => writePidFile(pidFile, 4242, () => planted), { code: "EEXIST" });
      assert.equal(readFileSync(victim, "utf8"), VICTIM);
      assert.equal(existsSync(pidFile), false);
    });

    test("a PID file path that is a symlink is replaced by a file; the file it named is untouched", () => {
      const { victim, pidFile } = setup();
      symlinkSync(victim, pidFile);
      writePidFile(pidFile, 4242);
      assert.equal(readFileSync(victim, "utf8"), VICTIM, "the victim is unchanged");
      assertPidFile(pidFile, 4242);
    });

    test("a server started with its PID file path a symlink replaces the link and leaves the victim as it was", async () => {
      const { dir, victim, pidFile } = setup();
      symlinkSync(victim, pidFile);
      const ctl = join(dir, "ctl.sock");
      const server = startServer(
        runtimeCmd(RUNTIME, ECHO, ["--port", "0", "--control", ctl, "--pid-file", pidFile]),
      );
      left.servers.push(server);
      await readyGeneration(ctl, 1, { pid: server.pid, timeoutMs: 60_000, log: server.lines });
      assertPidFile(pidFile, server.pid);
      assert.equal(readFileSync(victim, "utf8"), VICTIM, "the victim is unchanged");
      process.kill(server.pid, "SIGTERM");
      assert.equal(await server.exited, 0);
      assert.equal(existsSync(pidFile), false, "removed on a graceful stop");
      assert.equal(readFileSync(victim, "utf8"), VICTIM);
    });
  });

  test("LISTEN_* variables of the application reach the next generation; systemd's LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES do not", async () => {
    const dir = left.tempDir("instar-env-");
    const pidFile = join(dir, "app.pid");
    const env = {
      LISTEN_PORT: "8123",
      LISTEN_ADDRESS: "0.0.0.0",
      // Activation for another process (pid 1): ignored by instar, and never passed on.
      LISTEN_PID: "1",
      LISTEN_FDS: "2",
      LISTEN_FDNAMES: "web:admin",
    };
    const server = startServer(
      runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--pid-file", pidFile]),
      env,
    );
    left.servers.push(server);
    const log = server.lines;
    const first = await nextPidInPidFile(pidFile, 0, { timeoutMs: 60_000, log });
    assert.equal(first, server.pid);
    const environ = (pid: number) =>
      new Map(
        readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean).map((
          e,
        ) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]),
      );
    const before = environ(first);
    for (const [k, v] of Object.entries(env)) {
      assert.equal(before.get(k), v, `generation 1 has ${k}`);
    }
    process.kill(first, "SIGHUP");
    const second = await nextPidInPidFile(pidFile, first, { timeoutMs: 60_000, log });
    server.pids.add(second);
    const after = environ(second);
    assert.equal(after.get("LISTEN_PORT"), "8123");
    assert.equal(after.get("LISTEN_ADDRESS"), "0.0.0.0");
    for (const k of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]) {
      assert.equal(after.has(k), false, `${k} does not reach generation 2`);
    }
    process.kill(second, "SIGTERM");
    await stopped(second);
  });

  for (const backend of ["auto", "node"] as const) {
    test(`a listener (${backend} backend) whose app does not call accept() holds at most about ${QUEUE_LIMIT} connections, and hands out every one later`, async () => {
      const listener = await openListener(
        { hostname: "127.0.0.1", port: 0, backlog: 4096 },
        backend,
      );
      const port = (listener.addr as { port: number }).port;
      const before = openFds().length;
      const total = QUEUE_LIMIT + 400, BATCH = 50;
      const clients: net.Socket[] = [];
      try {
        // Connections beyond the bound wait in the kernel's backlog: connect() completes anyway.
        for (let i = 0; i < total; i += BATCH) {
          await Promise.all(
            Array.from(
              { length: Math.min(BATCH, total - i) },
              () =>
                new Promise<void>((resolve, reject) => {
                  const c = net.connect({ host: "127.0.0.1", port }, () => resolve());
                  c.on("error", reject);
                  clients.push(c);
                }),
            ),
          );
        }
        await sleep(1000); // the runtime accepts whatever it will
        const held = listener.connections;
        const serverSide = openFds().length - before - total;
        console.log(
          `${listener.kind}: ${held} accepted and waiting, ${serverSide} new fds besides the clients'`,
        );
        // The reactor finishes the wake-up in which the queue filled (up to one batch more).
        assert.ok(held <= QUEUE_LIMIT + BATCH, `${held} connections accepted without accept()`);
        assert.ok(serverSide <= QUEUE_LIMIT + BATCH, `${serverSide} fds for waiting connections`);
        // Taking them resumes accepting: every client's connection is handed out.
        const taken: Conn[] = [];
        await within(
          (async () => {
            while (taken.length < total) taken.push(await listener.accept());
          })(),
          30_000,
          `accepting ${total} connections (${taken.length} so far)`,
        );
        for (const c of taken) c.close();
      } finally {
        for (const c of clients) c.destroy();
        listener.close();
      }
    });
  }

  describe("a ready sent at the moment the ready timeout fires", () => {
    const TIMEOUT = 200;
    /** A next generation whose ready arrives `readyAfterMs` after the wait starts (never if null). */
    const attempt = (readyAfterMs: number | null, pending = false): Attempt => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ready = new Promise<void>((resolve) => {
        if (readyAfterMs !== null) timer = setTimeout(resolve, readyAfterMs);
      });
      return {
        pid: 4242,
        who: "generation 2 (pid 4242)",
        ready,
        abandon: () => Promise.resolve(clearTimeout(timer)),
        release: () => clearTimeout(timer),
        pending: () => pending,
      };
    };
    const never = new Promise<UpgradeError>(() => {});

    test("is taken when it arrives just after the deadline, instead of the child being killed", async () => {
      await awaitReady(attempt(TIMEOUT + 30), TIMEOUT, never);
    });

    test("waiting unread on the channel at the deadline gets the longer grace", async () => {
      await awaitReady(attempt(TIMEOUT + LAST_CHANCE_MS + 300, true), TIMEOUT, never);
    });

    test("no ready at all is still a ready-timeout, within the grace", async () => {
      const t0 = performance.now();
      await assert.rejects(awaitReady(attempt(null), TIMEOUT, never), (err: UpgradeError) => {
        assert.equal(err.reason, "ready-timeout");
        return true;
      });
      const took = performance.now() - t0;
      assert.ok(took < TIMEOUT + LAST_CHANCE_MS + 200, `gave up after ${Math.round(took)} ms`);
      const late = attempt(TIMEOUT + PENDING_GRACE_MS + 300, true);
      await assert.rejects(awaitReady(late, TIMEOUT, never), { reason: "ready-timeout" });
      late.release();
    });

    test("the channel's unread bytes are seen with poll(2) without reading them", () => {
      const [a, b] = sys.socketpair(sys.C.AF_UNIX, sys.C.SOCK_STREAM | sys.C.SOCK_CLOEXEC);
      try {
        assert.equal(readable(a), false);
        sys.write(b, new TextEncoder().encode('{"type":"ready","v":1}\n'));
        assert.equal(readable(a), true);
        assert.equal(readable(a), true, "still there: poll does not consume");
      } finally {
        sys.close(a);
        sys.close(b);
      }
    });
  });

  test("serve() in fallback mode on a Unix socket opens no TCP listener: the proxy's upstream is a Unix socket in a private directory", async () => {
    const dir = left.tempDir("instar-unix-fallback-");
    const path = join(dir, "app.sock");
    const fd = sys.socket(
      sys.C.AF_UNIX,
      sys.C.SOCK_STREAM | sys.C.SOCK_CLOEXEC | sys.C.SOCK_NONBLOCK,
    );
    sys.bind(fd, encodeUnix(path), path);
    sys.listenFd(fd, 128);
    left.sockets.push({ close: () => sys.close(fd) });
    const before = listeningSockets("self");
    const server = await serve(fd, { mode: "fallback", fetch: () => new Response("over unix\n") });
    try {
      assert.equal(server.mode, "fallback");
      const now = listeningSockets("self");
      assert.deepEqual(now.tcp, before.tcp, "no TCP listening socket was opened");
      const added = now.unix.filter((p) => p !== path && !before.unix.includes(p));
      assert.equal(added.length, 1, `one throwaway Unix socket: ${JSON.stringify(now.unix)}`);
      const privateDir = dirname(added[0]);
      assert.equal(statSync(privateDir).mode & 0o777, 0o700, `${privateDir} is private`);
      for (let i = 0; i < 3; i++) {
        const answer = await unixGet(path);
        assert.match(answer, /^HTTP\/1\.1 200/);
        assert.match(answer, /over unix/);
      }
      await server.shutdown();
      assert.equal(existsSync(privateDir), false, "the private directory is removed at shutdown");
    } finally {
      await server.shutdown();
    }
  });
});

/** A GET over the Unix socket at `path`; resolves with the whole answer. */
function unixGet(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ path });
    let got = "";
    c.setEncoding("latin1");
    c.on("connect", () => c.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    c.on("data", (d: string) => (got += d));
    c.on("error", reject);
    c.on("close", () => resolve(got));
  });
}
