import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { encodeUnix } from "../src/ffi/sockaddr.ts";
import { InstarError, SystemError } from "../src/errors.ts";
import type { Env } from "../src/systemd/env.ts";
import { encodeNotify, SystemdNotifier, systemdNotifier } from "../src/systemd/notify.ts";
import {
  type ActivatedSocket,
  activatedSockets,
  findActivated,
} from "../src/systemd/activation.ts";
import {
  datagramReceiver as receiver,
  describeUnless,
  drainDatagrams as drain,
  freePort,
  openFds,
  ROOT,
  RUNTIME,
  runtimeCmd,
} from "./support/helpers.ts";

const SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"; // Debian package: systemd
const CHILD = join(ROOT, "tests", "systemd_child.ts");

describe("sd_notify", () => {
  let dir: string;
  let path: string;
  let fd: number;
  const abstract = `@instar-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
  let abstractFd: number;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "instar-systemd-"));
    path = join(dir, "notify.sock");
    fd = receiver(path);
    abstractFd = receiver(abstract);
  });
  after(() => {
    sys.close(fd);
    sys.close(abstractFd);
    rmSync(dir, { recursive: true, force: true });
  });

  test("each method sends its exact datagram to a socket path", () => {
    const n = systemdNotifier({ env: { NOTIFY_SOCKET: path } });
    assert.equal(n.enabled, true);
    assert.equal(n.socketPath, path);
    assert.equal(n.ready(), true);
    n.ready("serving on 127.0.0.1:8080");
    n.mainPid(4242);
    n.readyWithMainPid(4243);
    n.readyWithMainPid(4244, "generation 2");
    n.status("draining 3 connections");
    n.upgradeFailed("new generation exited with code 1");
    n.extendTimeout(5_000_000);
    n.extendTimeout(7n);
    n.stopping();
    n.stopping("bye");
    assert.deepEqual(drain(fd), [
      "READY=1\n",
      "READY=1\nSTATUS=serving on 127.0.0.1:8080\n",
      "MAINPID=4242\n",
      "MAINPID=4243\nREADY=1\n",
      "MAINPID=4244\nREADY=1\nSTATUS=generation 2\n",
      "STATUS=draining 3 connections\n",
      "READY=1\nSTATUS=new generation exited with code 1\n",
      "EXTEND_TIMEOUT_USEC=5000000\n",
      "EXTEND_TIMEOUT_USEC=7\n",
      "STOPPING=1\n",
      "STOPPING=1\nSTATUS=bye\n",
    ]);
  });

  test("reloading() sends RELOADING=1 with the CLOCK_MONOTONIC time in microseconds", () => {
    const n = systemdNotifier({ env: { NOTIFY_SOCKET: path } });
    const t0 = sys.monotonicUsec();
    n.reloading();
    n.reloading("upgrading");
    const t1 = sys.monotonicUsec();
    const [plain, withStatus] = drain(fd);
    const m = plain.match(/^RELOADING=1\nMONOTONIC_USEC=([0-9]+)\n$/);
    assert.ok(m, `unexpected datagram ${JSON.stringify(plain)}`);
    const usec = BigInt(m[1]);
    assert.ok(t0 <= usec && usec <= t1, `${usec} is not within [${t0}, ${t1}]`);
    assert.match(withStatus, /^RELOADING=1\nMONOTONIC_USEC=[0-9]+\nSTATUS=upgrading\n$/);
  });

  test("an @abstract NOTIFY_SOCKET reaches the abstract namespace", () => {
    const n = systemdNotifier({ env: { NOTIFY_SOCKET: abstract } });
    n.readyWithMainPid(99);
    assert.deepEqual(drain(abstractFd), ["MAINPID=99\nREADY=1\n"]);
    assert.deepEqual(drain(fd), []);
  });

  test("systemdNotifier() reads NOTIFY_SOCKET from process.env by default", () => {
    const saved = process.env.NOTIFY_SOCKET;
    try {
      process.env.NOTIFY_SOCKET = path;
      assert.equal(systemdNotifier().status("from process.env"), true);
      delete process.env.NOTIFY_SOCKET;
      assert.equal(systemdNotifier().enabled, false);
    } finally {
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
    }
    assert.deepEqual(drain(fd), ["STATUS=from process.env\n"]);
  });

  test("the notifier is disabled when NOTIFY_SOCKET is unset or empty, or enabled is false", () => {
    for (
      const n of [
        systemdNotifier({ env: {} }),
        systemdNotifier({ env: { NOTIFY_SOCKET: "" } }),
        systemdNotifier({ env: { NOTIFY_SOCKET: path }, enabled: false }),
        new SystemdNotifier(undefined),
      ]
    ) {
      assert.equal(n.enabled, false);
      assert.equal(n.socketPath, undefined);
      assert.equal(n.ready(), false);
      assert.equal(n.reloading(), false);
      assert.equal(n.readyWithMainPid(1), false);
      assert.equal(n.upgradeFailed("x"), false);
      assert.equal(n.stopping(), false);
    }
    assert.deepEqual(drain(fd), []);
  });

  test("values with a newline or NUL, bad keys and bad numbers are refused before sending", () => {
    const n = systemdNotifier({ env: { NOTIFY_SOCKET: path } });
    const refused = (f: () => unknown, pattern: RegExp) =>
      assert.throws(f, (e: unknown) => {
        assert.ok(e instanceof InstarError);
        assert.equal(e.code, "INVALID_ARGUMENT");
        assert.match(e.message, pattern);
        return true;
      });
    refused(() => n.status("line one\nREADY=1"), /STATUS .*"line one\\nREADY=1".*newline/);
    refused(() => n.upgradeFailed("nul\0"), /newline or NUL/);
    refused(() => n.send({ "ready": 1 }), /notification key is "ready"/);
    refused(() => n.send({ "A=B": 1 }), /notification key/);
    refused(() => n.send({}), /at least one/);
    refused(() => n.mainPid(0), /pid is 0/);
    refused(() => n.mainPid(1.5), /pid is 1.5/);
    refused(() => n.extendTimeout(-1), /extendTimeout usec is -1/);
    refused(() => n.send({ X: 0.5 }), /notification X is 0.5/);
    refused(() => n.status("x".repeat(4090)), /4098 bytes.*at most 4096 bytes/);
    assert.equal(n.status("x".repeat(4088)), true); // "STATUS=" + 4088 + "\n" is exactly 4096
    assert.equal(drain(fd)[0].length, 4096);
    assert.deepEqual(drain(fd), []);
    assert.equal(new TextDecoder().decode(encodeNotify({ A_1: "x=y", B: 2n })), "A_1=x=y\nB=2\n");
  });

  test("a NOTIFY_SOCKET that is not an absolute path or @name is refused at creation", () => {
    for (const bad of ["relative.sock", "vsock:2:1234", "x".repeat(200)]) {
      assert.throws(
        () => systemdNotifier({ env: { NOTIFY_SOCKET: bad } }),
        (e: unknown) => e instanceof InstarError && e.code === "INVALID_ARGUMENT",
      );
    }
    assert.throws(
      () => systemdNotifier({ env: { NOTIFY_SOCKET: "/" + "x".repeat(200) } }),
      /sockaddr_un holds at most 107/,
    );
  });

  test("sending to a socket nobody listens on throws a SystemError naming NOTIFY_SOCKET", () => {
    const missing = join(dir, "missing.sock");
    assert.throws(
      () => systemdNotifier({ env: { NOTIFY_SOCKET: missing } }).ready(),
      (e: unknown) => {
        assert.ok(e instanceof SystemError);
        assert.equal(e.code, "ENOENT");
        assert.equal(e.syscall, "connect");
        assert.ok(e.message.includes(missing), e.message);
        return true;
      },
    );
    const stale = join(dir, "stale.sock");
    sys.close(receiver(stale)); // the file stays, nobody reads it
    assert.throws(
      () => systemdNotifier({ env: { NOTIFY_SOCKET: stale } }).ready(),
      (e: unknown) => e instanceof SystemError && e.code === "ECONNREFUSED",
    );
  });

  test("a service manager whose queue stays full makes the send fail with EAGAIN", () => {
    const full = join(dir, "full.sock");
    const rfd = receiver(full);
    try {
      const n = systemdNotifier({ env: { NOTIFY_SOCKET: full }, sendTimeoutMs: 20 });
      let sent = 0;
      let error: unknown;
      for (; sent < 20_000; sent++) {
        try {
          n.status(`message ${sent}`);
        } catch (e) {
          error = e;
          break;
        }
      }
      assert.ok(error instanceof SystemError, `no error after ${sent} datagrams`);
      assert.equal(error.code, "EAGAIN");
      assert.match(error.message, /receive queue stayed full for 20 ms/);
      assert.ok(sent > 0);
      // Reading makes room again.
      assert.equal(drain(rfd).length, sent);
      assert.equal(n.status("after"), true);
    } finally {
      sys.close(rfd);
    }
  });

  test("sending leaves no fd open", () => {
    const n = systemdNotifier({ env: { NOTIFY_SOCKET: path } });
    n.ready(); // any lazily opened FFI state exists from here on
    drain(fd);
    const open = openFds().length;
    let received = 0;
    for (let i = 0; i < 50; i++) {
      n.status(`${i}`);
      received += drain(fd).length; // the receive queue holds only ~10 (net.unix.max_dgram_qlen)
    }
    try {
      systemdNotifier({ env: { NOTIFY_SOCKET: join(dir, "missing.sock") } }).ready();
    } catch { /* ENOENT, checked above */ }
    assert.equal(openFds().length, open);
    assert.equal(received, 50);
  });
});

describe("activatedSockets() with a given environment", () => {
  const malformed = (env: Env, pattern: RegExp) =>
    assert.throws(() => activatedSockets({ env }), (e: unknown) => {
      assert.ok(e instanceof InstarError);
      assert.equal(e.code, "INVALID_ACTIVATION");
      assert.match(e.message, pattern);
      return true;
    });

  test("no LISTEN_FDS means no sockets and nothing ignored", () => {
    assert.deepEqual(activatedSockets({ env: {} }), { sockets: [] });
    assert.deepEqual(activatedSockets({ env: { LISTEN_FDS: "" } }), { sockets: [] });
  });

  test("LISTEN_PID of another process is ignored, said so, and consumed", () => {
    const env: Env = {
      LISTEN_PID: String(process.pid + 1),
      LISTEN_FDS: "2",
      LISTEN_FDNAMES: "a:b",
      OTHER: "kept",
    };
    const r = activatedSockets({ env });
    assert.deepEqual(r.sockets, []);
    assert.match(r.ignored ?? "", /LISTEN_PID=\d+ names another process .*2 fd\(s\) are not ours/);
    assert.deepEqual(env, { OTHER: "kept" });
  });

  test("LISTEN_FDS without LISTEN_PID is ignored and said so", () => {
    const r = activatedSockets({ env: { LISTEN_FDS: "1" } });
    assert.deepEqual(r.sockets, []);
    assert.match(r.ignored ?? "", /without LISTEN_PID/);
  });

  test("malformed LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES throw INVALID_ACTIVATION", () => {
    const pid = String(process.pid);
    for (const bad of ["abc", "-1", " 2", "1e3", "0x2", "02", "99999999999"]) {
      malformed({ LISTEN_PID: pid, LISTEN_FDS: bad }, /LISTEN_FDS is .*expected a decimal count/);
    }
    malformed({ LISTEN_PID: pid, LISTEN_FDS: "70000" }, /at most 65536/);
    malformed({ LISTEN_PID: "self", LISTEN_FDS: "1" }, /LISTEN_PID is "self"/);
    malformed({ LISTEN_PID: "0", LISTEN_FDS: "1" }, /LISTEN_PID is "0"/);
    malformed(
      { LISTEN_PID: pid, LISTEN_FDS: "2", LISTEN_FDNAMES: "web" },
      /LISTEN_FDNAMES is "web"; expected 2 colon-separated/,
    );
  });

  test("a LISTEN_FDS count reaching past the open fds throws INVALID_ACTIVATION", () => {
    let firstClosed = 3;
    for (;; firstClosed++) {
      try {
        sys.fcntl(firstClosed, C.F_GETFD);
      } catch {
        break;
      }
    }
    // Fds 3..firstClosed-1 are the runtime's own and already close-on-exec.
    malformed(
      { LISTEN_PID: String(process.pid), LISTEN_FDS: String(firstClosed - 2) },
      new RegExp(`fd ${firstClosed} is not open`),
    );
  });

  test("LISTEN_FDS=0 for this process gives no sockets", () => {
    assert.deepEqual(
      activatedSockets({ env: { LISTEN_PID: String(process.pid), LISTEN_FDS: "0" } }),
      { sockets: [] },
    );
  });
});

describe("findActivated()", () => {
  const stream = (fd: number, name: string, address: ActivatedSocket["address"]) =>
    ({ fd, name, kind: "stream", listening: true, address }) as ActivatedSocket;
  const sockets: ActivatedSocket[] = [
    { fd: 3, name: "metrics", kind: "dgram", listening: false, address: tcp("0.0.0.0", 9000) },
    stream(4, "web", tcp("::", 8080)),
    stream(5, "api", tcp("127.0.0.1", 9000)),
    stream(6, "admin", { transport: "unix", path: resolve("admin.sock") }),
    stream(7, "ctl", { transport: "unix", path: "@instar-ctl" }),
    stream(8, "loop6", tcp("::1", 7000)),
    { fd: 9, name: "conn", kind: "stream", listening: false, address: tcp("127.0.0.1", 6000) },
  ];
  function tcp(hostname: string, port: number) {
    return { transport: "tcp" as const, hostname, port };
  }
  const fdOf = (r: Parameters<typeof findActivated>[1]) => findActivated(sockets, r)?.fd;

  test("a name matches first, then the address", () => {
    assert.equal(fdOf({ name: "api" }), 5);
    assert.equal(fdOf({ name: "metrics" }), 3);
    assert.equal(fdOf({ name: "api", port: 8080 }), 5);
    assert.equal(fdOf({ name: "nope", port: 8080 }), 4);
    assert.equal(fdOf({ name: "nope" }), undefined);
  });

  test("hostname and port match listening stream sockets, wildcards match each other", () => {
    assert.equal(fdOf({ port: 8080 }), 4);
    assert.equal(fdOf({ hostname: "0.0.0.0", port: 8080 }), 4);
    assert.equal(fdOf({ hostname: "[::]", port: 8080 }), 4);
    assert.equal(fdOf({ hostname: "127.0.0.1", port: 8080 }), undefined);
    assert.equal(fdOf({ hostname: "127.0.0.1", port: 9000 }), 5);
    assert.equal(fdOf({ hostname: "::ffff:127.0.0.1", port: 9000 }), 5);
    assert.equal(fdOf({ hostname: "0:0:0:0:0:0:0:1", port: 7000 }), 8);
    assert.equal(fdOf({ hostname: "localhost", port: 7000 }), 8);
    assert.equal(fdOf({ hostname: "0.0.0.0", port: 9000 }), undefined, "dgram never matches");
    assert.equal(fdOf({ port: 6000 }), undefined, "an accepted connection never matches");
    assert.equal(fdOf({ hostname: "example.com", port: 8080 }), undefined);
  });

  test("port 0 never matches by address", () => {
    assert.equal(fdOf({ port: 0 }), undefined);
    assert.equal(fdOf({ hostname: "0.0.0.0", port: 0 }), undefined);
    assert.equal(fdOf({}), undefined);
  });

  test("paths match exactly, relative ones against the working directory", () => {
    assert.equal(fdOf({ path: "admin.sock" }), 6);
    assert.equal(fdOf({ path: resolve("admin.sock") }), 6);
    assert.equal(fdOf({ path: "@instar-ctl" }), 7);
    assert.equal(fdOf({ path: "/elsewhere/admin.sock" }), undefined);
  });
});

// ---------------------------------------------------------------- real activation

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | string | null>;
}

function start(cmd: string, args: string[]): Run {
  let out = "", err = "";
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number | string | null>((res) => {
    child.on("exit", (code, signal) => res(code ?? signal));
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function stop(run: Run | undefined): void {
  if (run && run.child.exitCode === null && run.child.signalCode === null) {
    try {
      process.kill(run.child.pid!, "SIGKILL");
    } catch { /* already gone */ }
  }
}

function httpLikeRequest(port: number): Promise<string> {
  return new Promise((res, rej) => {
    let got = "";
    const c = net.connect(port, "127.0.0.1");
    c.on("data", (d) => (got += d));
    c.on("end", () => res(got));
    c.on("error", rej);
  });
}

/** The JSON line systemd_child.ts printed. */
function report(run: Run) {
  const line = run.stdout().split("\n").find((l) => l.startsWith("{"));
  assert.ok(line, `no report; stdout ${run.stdout()} stderr ${run.stderr()}`);
  return JSON.parse(line);
}

const activation = `socket activation through systemd-socket-activate (${RUNTIME})`;
const noActivate = !existsSync(SOCKET_ACTIVATE) &&
  `${SOCKET_ACTIVATE} is missing: apt-get install systemd`;
describeUnless(noActivate, activation, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "instar-activate-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("named stream sockets are found, made close-on-exec, consumed, and served", async () => {
    const unixPath = join(dir, "admin.sock");
    let run: Run | undefined;
    try {
      let port = 0;
      for (let attempt = 0; attempt < 3 && !run; attempt++) {
        port = await freePort();
        const r = start(SOCKET_ACTIVATE, [
          `--listen=${unixPath}`,
          `--listen=127.0.0.1:${port}`,
          "--fdname=admin:web",
          "--",
          ...runtimeCmd(RUNTIME, CHILD, ["serve"]),
        ]);
        await waitFor(
          () => r.stderr().includes(`as 4.`) || r.child.exitCode !== null,
          20_000,
          () => `systemd-socket-activate did not listen: ${r.stderr()}`,
        );
        if (r.child.exitCode === null) run = r;
        else rmSync(unixPath, { force: true }); // port taken meanwhile: try another
      }
      assert.ok(run, "systemd-socket-activate never listened");
      // The connection wakes systemd-socket-activate, which execs the child in its place.
      const answer = await within(httpLikeRequest(port), 60_000, "answer on the activated fd");
      assert.equal(answer, "hello from web on fd 4\n");
      assert.equal(await within(run.exited, 30_000, "child exit"), 0, run.stderr());
      const r = report(run);
      assert.equal(r.before.LISTEN_PID, String(r.before.pid), "exec keeps the pid");
      assert.equal(r.before.LISTEN_FDS, "2");
      assert.equal(r.before.LISTEN_FDNAMES, "admin:web");
      // systemd passes them inheritable; Bun 1.4.5 marks inherited fds from 4 on close-on-exec
      // at start-up (fd 3 it leaves alone), Deno touches none.
      assert.deepEqual(r.before.cloexec, RUNTIME === "bun" ? [false, true] : [false, false]);
      assert.deepEqual(r.activation, {
        sockets: [
          {
            fd: 3,
            name: "admin",
            kind: "stream",
            listening: true,
            address: { transport: "unix", path: unixPath },
          },
          {
            fd: 4,
            name: "web",
            kind: "stream",
            listening: true,
            address: { transport: "tcp", hostname: "127.0.0.1", port },
          },
        ],
      });
      assert.equal(r.sameAgain, true);
      assert.deepEqual(r.cloexecAfter, [true, true]);
      assert.deepEqual(r.envAfter, [null, null, null]);
      assert.equal(r.childEnv, "unset unset unset");
      assert.deepEqual(r.childFds, [0, 1, 2], "an unrelated child inherits no activated fd");
      assert.equal(r.web, 4);
    } finally {
      stop(run);
    }
  });

  test("a wrapper that forks instead of exec'ing hands over sockets that are not ours", async () => {
    const unixPath = join(dir, "wrapped.sock");
    let run: Run | undefined;
    try {
      // sh runs the runtime as its child (another pid), since a command follows it.
      run = start(SOCKET_ACTIVATE, [
        `--listen=${unixPath}`,
        "--",
        "/bin/sh",
        "-c",
        '"$@"; exit $?',
        "sh",
        ...runtimeCmd(RUNTIME, CHILD, ["report"]),
      ]);
      await waitFor(() => existsSync(unixPath), 20_000, () => run!.stderr());
      const c = net.connect(unixPath);
      c.on("error", () => {});
      try {
        assert.equal(await within(run.exited, 60_000, "child exit"), 0, run.stderr());
      } finally {
        c.destroy();
      }
      const r = report(run);
      assert.notEqual(r.before.LISTEN_PID, String(r.before.pid));
      assert.deepEqual(r.activation.sockets, []);
      assert.match(r.activation.ignored, /names another process .*1 fd\(s\) are not ours/);
      assert.deepEqual(r.cloexecAfter, r.before.cloexec, "fds that are not ours are untouched");
      assert.equal(r.before.cloexec[0], false);
      assert.deepEqual(r.envAfter, [null, null, null]);
      assert.equal(r.childEnv, "unset unset unset");
    } finally {
      stop(run);
    }
  });

  test("a datagram socket is reported as dgram, not listening, unnamed", async () => {
    const unixPath = join(dir, "dgram.sock");
    let run: Run | undefined;
    let fd = -1;
    try {
      run = start(SOCKET_ACTIVATE, [
        "--datagram",
        `--listen=${unixPath}`,
        "--",
        ...runtimeCmd(RUNTIME, CHILD, ["report"]),
      ]);
      await waitFor(() => existsSync(unixPath), 20_000, () => run!.stderr());
      fd = sys.socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC);
      sys.connect(fd, encodeUnix(unixPath), unixPath);
      sys.write(fd, new TextEncoder().encode("wake up"));
      assert.equal(await within(run.exited, 60_000, "child exit"), 0, run.stderr());
      const r = report(run);
      assert.deepEqual(r.activation, {
        sockets: [{
          fd: 3,
          name: "unknown",
          kind: "dgram",
          listening: false,
          address: { transport: "unix", path: unixPath },
        }],
      });
      assert.equal(r.web, null);
    } finally {
      if (fd >= 0) sys.close(fd);
      stop(run);
    }
  });
});
