// Black-box tests of the `instar` command (src/cli/main.ts) against real echo
// servers of this runtime, and of the handoff between two independently
// started processes over the control socket.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { spawnSync } from "node:child_process";
import { runEchoLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import * as sys from "../src/ffi/mod.ts";
import { encodeUnix } from "../src/ffi/sockaddr.ts";
import {
  alive,
  bunBin,
  cleanupAfterTests,
  type CommandResult,
  denoBin,
  echoOnce,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  showResult,
  skipIf,
  sleep,
  startServer,
  within,
} from "./support/helpers.ts";
import { portOf, readyGeneration } from "./support/status.ts";

const CLI = join(ROOT, "src", "cli", "main.ts");
const ECHO = join(ROOT, "examples", "echo_server.ts");
const GOOD = `import ${JSON.stringify(ECHO)};\n`;
const EXITS = `import process from "node:process";\nprocess.exit(3);\n`;
const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
// The system python (a per-user shim is not readable by nobody); .ci/run installs python3.
const PYTHON = "/usr/bin/python3";
// A client that does not check who answers: sends `upgrade`, prints the reply.
const RAW_UPGRADE = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"type":"upgrade","v":1}\\n')
print(s.recv(4096).decode())
`;

const { servers, tempDir } = cleanupAfterTests();

function instar(args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  return runCommand(runtimeCmd(RUNTIME, CLI, args), { env, timeoutMs: 90_000 });
}

function runCommandSync(cmd: string[]): void {
  const r = spawnSync(cmd[0], cmd.slice(1), { stdio: "inherit" });
  if (r.status !== 0) throw new Error(`${cmd.join(" ")} exited with ${r.status}`);
}

/**
 * What nobody runs, readable by nobody: the checkout may be in a directory
 * other users cannot enter (a private home, `mktemp -d`), so the library,
 * the echo example, the CLI and the runtime binary itself are copied into a
 * temporary directory of mode 0755. Made once, on first use.
 */
let forNobody: { root: string; bin: string } | undefined;
function nobodyCopy(): { root: string; bin: string } {
  if (forNobody) return forNobody;
  const root = tempDir("instar-for-nobody-");
  chmodSync(root, 0o755);
  for (const f of ["mod.ts", "unstable.ts", "deno.json", "package.json"]) {
    copyFileSync(join(ROOT, f), join(root, f));
  }
  cpSync(join(ROOT, "src"), join(root, "src"), { recursive: true });
  mkdirSync(join(root, "examples"));
  for (const f of ["echo_server.ts", "_lifecycle.ts"]) {
    copyFileSync(join(ROOT, "examples", f), join(root, "examples", f));
  }
  // The binary behind node_modules/.bin, hard-linked where the file system allows (no copy).
  const real = realpathSync(RUNTIME === "deno" ? denoBin() : bunBin());
  mkdirSync(join(root, "bin"));
  const bin = join(root, "bin", RUNTIME);
  try {
    linkSync(real, bin);
  } catch {
    copyFileSync(real, bin);
  }
  chmodSync(bin, 0o755);
  // Everything readable (and directories enterable) by other users, whatever the umask.
  runCommandSync(["chmod", "-R", "a+rX", root]);
  return forNobody = { root, bin };
}

/** `script` under this runtime as nobody sees it: the copied binary. */
function nobodyCmd(script: string, args: string[]): string[] {
  const { bin } = nobodyCopy();
  return RUNTIME === "deno"
    ? [bin, "run", "-A", "--no-check", script, ...args]
    : [bin, script, ...args];
}

/** Runs the CLI as uid/gid 65534 (nobody), with a HOME it may write its caches to. */
function instarAsNobody(args: string[]): Promise<CommandResult> {
  const home = tempDir("instar-nobody-");
  chmodSync(home, 0o777);
  const cli = join(nobodyCopy().root, "src", "cli", "main.ts");
  return runCommand([...NOBODY, ...nobodyCmd(cli, args)], {
    env: { HOME: home, DENO_DIR: join(home, "deno"), XDG_CACHE_HOME: home },
    cwd: nobodyCopy().root,
    timeoutMs: 90_000,
  });
}

/**
 * A deploy directory whose server.ts imports the echo example (`echo`: the
 * checkout's, or the copy nobody can read); `deploy` swaps in other code.
 */
function deployDir(
  echo = ECHO,
): { dir: string; script: string; deploy(source: string): void } {
  const dir = tempDir("instar-cli-");
  // Other users may traverse it: the socket's own mode must be what refuses them.
  chmodSync(dir, 0o755);
  const script = join(dir, "server.ts");
  const deploy = (source: string) => writeFileSync(script, source);
  deploy(`import ${JSON.stringify(echo)};\n`);
  return { dir, script, deploy };
}

/** Starts `script` with control socket `ctl`; resolves once generation 1 reports itself ready there. */
async function startEcho(
  script: string,
  ctl: string,
  args: string[] = [],
): Promise<{ server: ServerProcess; port: number }> {
  const server = startServer(
    runtimeCmd(RUNTIME, script, ["--port", "0", "--control", ctl, ...args]),
  );
  servers.push(server);
  const s = await readyGeneration(ctl, 1, {
    pid: server.pid,
    timeoutMs: 60_000,
    log: server.lines,
  });
  return { server, port: portOf(s) };
}

async function waitGone(pid: number): Promise<boolean> {
  for (let t = 0; t < 600 && alive(pid); t++) await sleep(50);
  return !alive(pid);
}

describe(`instar command (${RUNTIME})`, () => {
  test("--help of every command prints its usage and exits 0", async () => {
    for (
      const [args, text] of [
        [["--help"], /Commands:\n\s+upgrade[\s\S]*status/],
        [["-h"], /Commands:/],
        [["help"], /Commands:/],
        [["upgrade", "--help"], /instar upgrade --pid-file <path>/],
        [["upgrade", "-h"], /Exit status: 0/],
        [["status", "--help"], /instar status --control <path> \[--json\]/],
      ] as const
    ) {
      const r = await instar([...args]);
      assert.equal(r.code, 0, `${args.join(" ")}: ${showResult(r)}`);
      assert.match(r.stdout, text, args.join(" "));
      assert.equal(r.stderr, "");
    }
  });

  test("bad usage prints one line naming the problem and exits 2", async () => {
    for (
      const [args, text] of [
        [["frobnicate"], /unknown command "frobnicate"/],
        [["upgrade", "--control", "/x", "--bogus"], /bogus/],
        [["status"], /exactly one of --control <path> or --pid-file <path>/],
        [["upgrade", "--control", "/a", "--pid-file", "/b"], /exactly one of/],
        [["upgrade", "--control", "/a", "--timeout", "abc"], /--timeout abc is not a positive/],
        [["upgrade", "--control", "/a", "--timeout=0"], /--timeout 0 is not a positive/],
        [["upgrade", "--control", "/a", "--timeout", "-5"], /'--timeout' argument is ambiguous/],
        [
          ["upgrade", "--pid-file", "/a", "--signal", "SIGUSR1"],
          /--signal SIGUSR1 is not an upgrade signal/,
        ],
        [["status", "--control", "/a", "--signal", "SIGHUP"], /--signal applies only to upgrade/],
        [["status", "--control", "/a", "stray"], /stray|positional/i],
      ] as const
    ) {
      const r = await instar([...args]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${showResult(r)}`);
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${r.stderr}`);
      assert.match(lines[0], /^instar: /);
      assert.match(lines[0], text);
      assert.equal(r.stdout, "");
    }
  });

  test("no server at the path is a clear error with exit 1", async () => {
    const dir = tempDir("instar-cli-none-");
    const missing = join(dir, "nobody.sock");
    for (const cmd of ["status", "upgrade"]) {
      const r = await instar([cmd, "--control", missing]);
      assert.equal(r.code, 1, showResult(r));
      assert.match(r.stderr, new RegExp(`^instar: no server answers on ${missing} \\(ENOENT\\)`));
    }
    // A socket file nobody listens on any more (a crashed server): ECONNREFUSED.
    const stale = join(dir, "stale.sock");
    const fd = sys.socket(sys.C.AF_UNIX, sys.C.SOCK_STREAM | sys.C.SOCK_CLOEXEC);
    sys.bind(fd, encodeUnix(stale));
    sys.close(fd);
    const refused = await instar(["status", "--control", stale]);
    assert.equal(refused.code, 1, showResult(refused));
    assert.match(refused.stderr, /no server answers on .*\(ECONNREFUSED\)/);
    const r = await instar(["status", "--pid-file", join(dir, "none.pid")]);
    assert.equal(r.code, 1, showResult(r));
    assert.match(r.stderr, /^instar: cannot read PID file /);
    writeFileSync(join(dir, "bad.pid"), "garbage\n");
    const bad = await instar(["upgrade", "--pid-file", join(dir, "bad.pid")]);
    assert.equal(bad.code, 1, showResult(bad));
    assert.match(bad.stderr, /holds "garbage", not a pid/);
  });

  describe("against a running server", () => {
    const { dir, script, deploy } = deployDir();
    const ctl = join(dir, "ctl.sock");
    const pidFile = join(dir, "app.pid");
    let server: ServerProcess;
    let port = 0;
    let current = 0;

    test("status reports pid, generation, state and listeners with connection counts", async () => {
      ({ server, port } = await startEcho(script, ctl, [
        "--pid-file",
        pidFile,
        "--ready-timeout",
        "20000",
      ]));
      current = server.pid;
      const text = await instar(["status", "--control", ctl]);
      assert.equal(text.code, 0, showResult(text));
      // The fd limit in force: the hard one (raised at start), as the kernel reports it.
      const limits = readFileSync(`/proc/${current}/limits`, "utf8").match(
        /^Max open files\s+(\d+)/m,
      );
      assert.equal(
        text.stdout,
        `pid ${current}  generation 1  state ready\n  127.0.0.1:${port}  0 open connection(s)\n` +
          `  fd limit ${limits?.[1]} (hard ${limits?.[1]})\n`,
      );
      const open = net.connect({ host: "127.0.0.1", port });
      await new Promise((r) => open.once("connect", r));
      await echoOnce(port, open); // accepted and counted
      const json = await instar(["status", "--control", ctl, "--json"]);
      open.destroy();
      assert.equal(json.code, 0, showResult(json));
      const s = JSON.parse(json.stdout);
      assert.equal(s.pid, current);
      assert.equal(s.generation, 1);
      assert.equal(s.state, "ready");
      assert.deepEqual(s.listeners, [{ addr: `127.0.0.1:${port}`, connections: 1 }]);
      assert.equal(s.parentPid, null);
      const byPid = await instar(["status", "--pid-file", pidFile, "--json"]);
      assert.equal(byPid.code, 0, showResult(byPid));
      assert.deepEqual(JSON.parse(byPid.stdout), { pid: current, running: true });
    });

    test("upgrade --control prints the new pid, which then serves; status shows both generations", async () => {
      const held = net.connect({ host: "127.0.0.1", port }); // keeps generation 1 draining
      await new Promise((r) => held.once("connect", r));
      await echoOnce(port, held);
      const r = await instar(["upgrade", "--control", ctl]);
      assert.equal(r.code, 0, showResult(r));
      const pid = Number(r.stdout.trim());
      assert.ok(Number.isInteger(pid) && pid > 0 && pid !== current, r.stdout);
      assert.match(r.stderr, /upgrade requested/);
      await readyGeneration(ctl, 2, { pid, log: server.lines });
      await echoOnce(port);
      const s = await instar(["status", "--control", ctl, "--json"]);
      assert.equal(s.code, 0, showResult(s));
      const report = JSON.parse(s.stdout);
      assert.equal(report.pid, pid);
      assert.equal(report.generation, 2);
      assert.deepEqual(report.previous, {
        pid: current,
        generation: 1,
        listeners: [{ addr: `127.0.0.1:${port}`, connections: 1 }],
      });
      const text = await instar(["status", "--control", ctl]);
      assert.match(
        text.stdout,
        new RegExp(
          `pid ${current}  generation 1  state draining\\n  127\\.0\\.0\\.1:${port}  1 open`,
        ),
      );
      held.destroy();
      assert.ok(await waitGone(current), "the old generation exits after draining");
      current = pid;
    });

    test("upgrade --control of a broken deploy exits 1 and names the reason", async () => {
      current = Number(readFileSync(pidFile, "utf8")); // whatever an earlier test left running
      deploy(EXITS);
      const r = await instar(["upgrade", "--control", ctl]);
      deploy(GOOD);
      assert.equal(r.code, 1, showResult(r));
      assert.match(r.stderr, /upgrade failed: exited: .*exited with code 3/);
      assert.equal(r.stdout, "");
      await echoOnce(port);
      const s = await instar(["status", "--control", ctl, "--json"]);
      assert.equal(JSON.parse(s.stdout).pid, current, "the running generation keeps serving");
      assert.equal(JSON.parse(s.stdout).state, "ready");
    });

    test("upgrade --pid-file signals the server and prints the new pid", async () => {
      current = Number(readFileSync(pidFile, "utf8"));
      const r = await instar(["upgrade", "--pid-file", pidFile]);
      assert.equal(r.code, 0, showResult(r));
      const pid = Number(r.stdout.trim());
      assert.ok(pid > 0 && pid !== current, r.stdout);
      assert.equal(readFileSync(pidFile, "utf8").trim(), String(pid));
      await echoOnce(port);
      assert.ok(await waitGone(current));
      current = pid;
      process.kill(current, "SIGTERM");
      assert.ok(await waitGone(current), "SIGTERM stops the last generation");
    });
  });
});

describe(`handoff between independent processes (${RUNTIME})`, () => {
  test("a second process with the same control path takes the listeners; no request fails", async () => {
    const { dir, script } = deployDir();
    const ctl = join(dir, "ctl.sock");
    const { server: first, port } = await startEcho(script, ctl);
    const ac = new AbortController();
    const load = runEchoLoad({
      port,
      connections: 6,
      durationMs: 90_000,
      pauseMs: TEST_PAUSE_MS,
      signal: ac.signal,
    });
    let second: ServerProcess | undefined;
    try {
      await sleep(300);
      second = startServer(runtimeCmd(RUNTIME, script, ["--port", "0", "--control", ctl]));
      servers.push(second);
      const s = await readyGeneration(ctl, 2, { timeoutMs: 60_000, log: second.lines });
      assert.equal(portOf(s), port, "the same socket, so the same port");
      assert.equal(
        await within(first.exited, 60_000, "first process exit"),
        0,
        "the first process drains and exits",
      );
      await sleep(300);
    } finally {
      ac.abort();
    }
    const r = await load;
    assert.equal(r.failed, 0, `failures ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    assert.ok(r.ok > 20, `only ${r.ok} exchanges`);
    await echoOnce(port);
    const s = await instar(["status", "--control", ctl, "--json"]);
    assert.equal(s.code, 0, showResult(s));
    assert.equal(JSON.parse(s.stdout).pid, second.pid, "the control socket moved too");
    assert.equal(JSON.parse(s.stdout).generation, 2);
    process.kill(second.pid, "SIGTERM");
    assert.equal(await second.exited, 0);
  });

  const refusedName =
    "another user is refused: by the socket's mode, and by SO_PEERCRED when the mode allows";
  test(
    refusedName,
    skipIf(
      process.getuid?.() !== 0
        ? "needs root to run clients as nobody (setpriv)"
        : !existsSync(PYTHON) && `${PYTHON} is missing (Debian package python3)`,
      refusedName,
    ),
    async () => {
      // nobody runs this server's code too (the thief below): the copy nobody can read.
      const { dir, script } = deployDir(join(nobodyCopy().root, "examples", "echo_server.ts"));
      const ctl = join(dir, "ctl.sock");
      const { server, port } = await startEcho(script, ctl);
      assert.equal(statSync(ctl).mode & 0o777, 0o600);

      // 1. The file mode: connect(2) fails with EACCES before the server sees anything.
      const byMode = await instarAsNobody(["status", "--control", ctl]);
      assert.equal(byMode.code, 1, showResult(byMode));
      assert.match(byMode.stderr, /EACCES/);

      // 2. With the mode opened up, each side checks the other's uid (SO_PEERCRED):
      //    the command does not trust a server of another user...
      chmodSync(ctl, 0o666);
      const from = server.lines.length;
      const status = await instarAsNobody(["status", "--control", ctl]);
      assert.equal(status.code, 1, showResult(status));
      assert.match(status.stderr, /runs as uid 0, not 65534: not trusting it/);
      // ...and the server answers a raw client of another user with a refusal.
      const raw = await runCommand([...NOBODY, PYTHON, "-c", RAW_UPGRADE, ctl]);
      assert.match(raw.stdout, /"reason":\s*"forbidden"/, showResult(raw));
      await server.waitFor(/refused a peer with another uid/, 10_000, from);

      // 3. A process of another user started with the same control path refuses
      //    a server that is not its own instead of taking its listeners.
      const home = tempDir("instar-nobody-");
      chmodSync(home, 0o777);
      const thief = await runCommand(
        [...NOBODY, ...nobodyCmd(script, ["--port", "0", "--control", ctl])],
        { env: { HOME: home, DENO_DIR: join(home, "deno") }, cwd: dir, timeoutMs: 60_000 },
      );
      assert.notEqual(thief.code, 0, showResult(thief));
      assert.match(thief.stderr, /belongs to another user/);

      assert.ok(!server.lines.slice(from).some((l) => /upgrade-(started|succeeded)/.test(l)));
      await echoOnce(port);
      assert.equal(alive(server.pid), true);
      process.kill(server.pid, "SIGTERM");
      assert.equal(await server.exited, 0);
    },
  );
});
