// Hostile and broken input from other processes: a forged control socket,
// a stale PID file, a wrong INSTAR_CONTROL_FD.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  alive,
  cleanupAfterTests,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  showResult,
  sleep,
} from "./support/helpers.ts";

const left = cleanupAfterTests();
const CLI = join(ROOT, "src/cli.ts");
const HTTP = join(ROOT, "examples/http_server.ts");
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
  test(
    "instar upgrade refuses a control socket answered by another user",
    {
      skip: !asRoot
        ? "needs root to run the forger as nobody (setpriv)"
        : existsSync(PYTHON)
        ? false
        : `${PYTHON} is missing (Debian package python3)`,
    },
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

  test("instar upgrade --pid-file refuses to signal a process started after the PID file was written", async () => {
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
  });

  for (const value of ["1", "0", "2"]) {
    test(`INSTAR_CONTROL_FD=${value} is refused with PROTOCOL_ERROR, writing nothing to stdout`, async () => {
      const r = await runCommand(runtimeCmd(RUNTIME, HTTP, ["--port", "0"]), {
        env: { INSTAR_CONTROL_FD: value },
        timeoutMs: 30_000,
      });
      assert.notEqual(r.code, 0, showResult(r));
      assert.match(r.stderr, new RegExp(`INSTAR_CONTROL_FD=${value} is a standard stream`));
      assert.equal(r.stdout, "");
    });
  }

  test("INSTAR_CONTROL_FD naming a file is refused with PROTOCOL_ERROR", async () => {
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
});
