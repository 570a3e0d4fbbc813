import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { InstarError, SystemError } from "../src/errors.ts";
import { availableBackends, spawn } from "../src/process/spawn.ts";
import { TRAMPOLINE_HEX } from "../src/process/trampoline/bytes.ts";
import { exchange, rawListen, ROOT, skipIf } from "./support/helpers.ts";

const C = sys.C;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** This process's children as pid -> state letter (R, S, Z, …), from /proc/<pid>/stat. */
function children(): Map<number, string> {
  const me = process.pid;
  const out = new Map<number, string>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid …"; comm may hold spaces and parentheses
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(ppid) === me) out.set(Number(name), state);
  }
  return out;
}

/** Polls waitpidNoHang until `pid` ends. */
async function reap(pid: number, timeoutMs = 30_000): Promise<sys.WaitStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = sys.waitpidNoHang(pid);
    if (st) return st;
    if (Date.now() > deadline) throw new Error(`child ${pid} did not end within ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** Kills and reaps `pid` if it is still running. */
async function stop(pid: number): Promise<void> {
  try {
    sys.kill(pid, 9);
  } catch {
    // already gone
  }
  await reap(pid);
}

function statusHex(pid: number, field: string): string {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(
    new RegExp(`^${field}:\\s*(\\S+)`, "m"),
  );
  assert.ok(m, `${field} in /proc/${pid}/status`);
  return m[1];
}

function fdsOf(pid: number): number[] {
  return readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b);
}

function nulList(bytes: string): string[] {
  return bytes.split("\0").slice(0, -1);
}

/** The first of `names` found on PATH. */
function which(...names: string[]): string | undefined {
  return names.find((n) => spawnSync("sh", ["-c", `command -v ${n}`]).status === 0);
}

/** A binutils/gcc program targeting `arch`: the native one on such a host, else the cross one. */
function toolFor(arch: string, name: string): string | undefined {
  const native = process.arch === (arch === "x86_64" ? "x64" : "arm64");
  return native ? which(name, `${arch}-linux-gnu-${name}`) : which(`${arch}-linux-gnu-${name}`);
}

describe("spawn()", () => {
  for (const arch of ["x86_64", "aarch64"]) {
    const missing = !toolFor(arch, "as") || !toolFor(arch, "objcopy");
    const name =
      `the embedded ${arch} trampoline is what src/process/trampoline/${arch}.S assembles to`;
    test(
      name,
      skipIf(missing && `no GNU as/objcopy for ${arch} on this machine`, name),
      () => {
        assert.ok(TRAMPOLINE_HEX[arch], `src/process/trampoline/bytes.ts has ${arch}`);
        const hex = execFileSync("sh", [join(ROOT, "scripts/build_trampoline.sh"), "--hex", arch], {
          encoding: "utf8",
        }).trim();
        assert.equal(TRAMPOLINE_HEX[arch], hex, "run scripts/build_trampoline.sh");
      },
    );
  }

  for (const arch of ["x86_64", "aarch64"]) {
    const native = process.arch === (arch === "x86_64" ? "x64" : "arm64");
    const cc = toolFor(arch, "gcc");
    const qemu = native ? "" : which(`qemu-${arch}`, `qemu-${arch}-static`);
    const why = !cc
      ? `no C compiler for ${arch} (Debian: gcc-${arch.replace("_", "-")}-linux-gnu)`
      : !native && !qemu
      ? `not an ${arch} machine and no qemu-${arch} (Debian: qemu-user)`
      : false;
    const name = `the ${arch} trampoline spawns correctly from C${
      native ? "" : ` under qemu-${arch}`
    }`;
    test(
      name,
      skipIf(why, name),
      async () => {
        const dir = mkdtempSync(join(tmpdir(), "instar-harness-"));
        try {
          const exe = join(dir, "harness");
          const outFile = join(dir, "out");
          execFileSync(cc!, ["-O1", "-static", "-o", exe, join(ROOT, "tests/spawn_harness.c")]);
          const args = [exe, TRAMPOLINE_HEX[arch], outFile];
          const argv = native ? args : [qemu!, ...args];
          // Started through spawn() itself: node:child_process in Deno leaves signals 32/33
          // ignored, which qemu-user could not undo in the harness's children.
          const path = execFileSync("sh", ["-c", `command -v ${argv[0]}`], { encoding: "utf8" })
            .trim();
          const pid = spawn({ path, argv, env: [], fds: [] });
          assert.deepEqual(await reap(pid, 60_000), { pid, exited: true, code: 0 });
          const out = readFileSync(outFile, "utf8");
          assert.equal(
            out,
            [
              "exit:0",
              "argv:zero|one two|",
              "env:hello world",
              "cwd:/tmp",
              "fds: 0 1 2 3", // 3 is the one listed fd; the unlisted fds 5 and 6 lack FD_CLOEXEC
              "SigBlk:\t0000000000000000",
              "SigIgn:\t0000000000000000",
              "missing:127",
              "badcwd:127",
              "",
            ].join("\n"),
          );
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  }

  test("both backends are available on Linux x86_64 and aarch64", () => {
    assert.deepEqual(availableBackends(), ["fork", "posix_spawn"]);
  });

  test("bad options throw INVALID_ARGUMENT naming the value", () => {
    const base = { path: "/bin/true", argv: ["true"], env: [], fds: [] };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ argv: [] }, /spawn argv is .*non-empty/],
      [{ path: "bin/true" }, /spawn path is "bin\/true"; expected an absolute path/],
      [{ argv: ["a\0b"] }, /spawn argv\[0\]/],
      [{ env: ["NOEQUALS"] }, /spawn env\[0\] is "NOEQUALS"/],
      [{ env: ["=x"] }, /spawn env\[0\]/],
      [{ fds: [987654] }, /spawn fds\[0\] is 987654, which is not an open fd/],
      [{ fds: [-1] }, /spawn fds\[0\] is -1/],
      [{ cwd: "" }, /spawn cwd/],
      [{ backend: "vfork" }, /spawn backend is "vfork"/],
    ];
    for (const [patch, message] of cases) {
      assert.throws(
        () => spawn({ ...base, ...patch } as Parameters<typeof spawn>[0]),
        (e: unknown) =>
          e instanceof InstarError && e.code === "INVALID_ARGUMENT" && message.test(e.message),
        JSON.stringify(patch),
      );
    }
  });

  for (const backend of availableBackends()) {
    describe(`backend ${backend}`, () => {
      test("the child gets exactly argv, env, cwd and the listed fds, with default signals", async () => {
        const dir = mkdtempSync(join(tmpdir(), "instar-spawn-"));
        const listener = await rawListen();
        // Two fds without FD_CLOEXEC that are NOT listed: they must not reach the child.
        const [strayR, strayW] = sys.pipe2(0);
        const [keepR, keepW] = sys.pipe2(C.O_CLOEXEC);
        const argv = ["sleep child ✓", "1000", "0"]; // sleep rejects anything but intervals
        const env = ["A=1", "EMPTY=", "SPACED=a b c", "UNI=✓"];
        let pid = 0;
        try {
          // Precondition that makes the signal check meaningful: the runtime ignores SIGPIPE.
          assert.notEqual(BigInt("0x" + statusHex(process.pid, "SigIgn")) & (1n << 12n), 0n);
          pid = spawn({
            path: "/bin/sleep",
            argv,
            env,
            cwd: dir,
            fds: [keepW, listener.fd],
            backend,
          });
          assert.ok(pid > 0);
          // spawn() returns once execve has replaced the child's memory; the kernel
          // closes close-on-exec fds and builds argv a moment later, then the dynamic
          // loader opens files for a while: wait until sleep(1) sleeps.
          const expected = [0, 1, 2, keepW, listener.fd].sort((a, b) => a - b);
          const deadline = Date.now() + 10_000;
          const wchan = () => readFileSync(`/proc/${pid}/wchan`, "utf8");
          while (!wchan().includes("nanosleep") && Date.now() < deadline) await sleep(10);
          assert.match(wchan(), /nanosleep/, "the child reached sleep's nanosleep");
          assert.equal(readlinkSync(`/proc/${pid}/exe`), "/usr/bin/sleep");
          assert.deepEqual(nulList(readFileSync(`/proc/${pid}/cmdline`, "utf8")), argv);
          assert.deepEqual(nulList(readFileSync(`/proc/${pid}/environ`, "utf8")), env);
          assert.equal(readlinkSync(`/proc/${pid}/cwd`), dir);
          assert.deepEqual(fdsOf(pid), expected);
          for (const fd of [0, 1, 2, keepW, listener.fd]) {
            assert.equal(
              readlinkSync(`/proc/${pid}/fd/${fd}`),
              readlinkSync(`/proc/self/fd/${fd}`),
            );
          }
          // FD_CLOEXEC is cleared in the child only.
          const flagsOf = (p: number, fd: number) =>
            Number(readFileSync(`/proc/${p}/fdinfo/${fd}`, "utf8").match(/^flags:\s*(\d+)/m)![1]);
          assert.equal(flagsOf(pid, keepW) & C.O_CLOEXEC, 0);
          assert.equal(sys.fcntl(keepW, C.F_GETFD) & C.FD_CLOEXEC, C.FD_CLOEXEC);
          assert.equal(sys.fcntl(listener.fd, C.F_GETFD) & C.FD_CLOEXEC, C.FD_CLOEXEC);
          assert.equal(statusHex(pid, "SigIgn"), "0000000000000000");
          assert.equal(statusHex(pid, "SigBlk"), "0000000000000000");
        } finally {
          if (pid > 0) await stop(pid);
          for (const fd of [strayR, strayW, keepR, keepW, listener.fd]) sys.close(fd);
          rmSync(dir, { recursive: true, force: true });
        }
      });

      test("argv and env reach the child byte for byte", async () => {
        const [r, w] = sys.pipe2(C.O_CLOEXEC);
        const argv = [
          "sh",
          "-c",
          `printf '%s\\0' "$0" "$@" "$X" > /proc/self/fd/${w}`,
          "",
          "two words",
          "ünïcødé",
        ];
        let pid = 0;
        try {
          pid = spawn({ path: "/bin/sh", argv, env: ["X=a=b ✓"], fds: [w], backend });
          sys.close(w);
          const st = await reap(pid);
          pid = 0;
          assert.deepEqual(st, { pid: st.pid, exited: true, code: 0 });
          const buf = new Uint8Array(4096);
          const n = sys.read(r, buf)!;
          assert.deepEqual(nulList(new TextDecoder().decode(buf.subarray(0, n))), [
            "",
            "two words",
            "ünïcødé",
            "a=b ✓",
          ]);
        } finally {
          if (pid > 0) await stop(pid);
          sys.close(r);
        }
      });

      test("without cwd the child starts in the parent's directory", async () => {
        const pid = spawn({ path: "/bin/sleep", argv: ["sleep", "30"], env: [], fds: [], backend });
        try {
          assert.equal(readlinkSync(`/proc/${pid}/cwd`), process.cwd());
        } finally {
          await stop(pid);
        }
      });

      test("exec failures throw SystemError from execve and leave no child behind", () => {
        const dir = mkdtempSync(join(tmpdir(), "instar-spawn-"));
        const before = children();
        try {
          const notExec = join(dir, "not-executable");
          writeFileSync(notExec, "#!/bin/sh\n");
          chmodSync(notExec, 0o644);
          const cases: [string, string][] = [[join(dir, "missing"), "ENOENT"], [notExec, "EACCES"]];
          for (const [path, code] of cases) {
            assert.throws(
              () => spawn({ path, argv: ["x"], env: [], fds: [], backend }),
              (e: unknown) =>
                e instanceof SystemError && e.code === code && e.syscall === "execve" &&
                e.message.includes(path),
              path,
            );
          }
          assert.throws(
            () =>
              spawn({
                path: "/bin/true",
                argv: ["true"],
                env: [],
                cwd: join(dir, "nope"),
                fds: [],
                backend,
              }),
            (e: unknown) => e instanceof SystemError && e.code === "ENOENT",
          );
          assert.deepEqual(
            [...children().keys()].filter((p) => !before.has(p)),
            [],
            "no new child",
          );
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });

      test("a passed listening socket answers a connection in the child", async () => {
        const listener = await rawListen();
        let pid = 0;
        try {
          const script = "import socket,sys\n" +
            "s=socket.socket(fileno=int(sys.argv[1])); s.setblocking(True)\n" +
            "c,_=s.accept(); c.sendall(b'hello from the child'); c.close()\n";
          pid = spawn({
            path: "/usr/bin/python3",
            argv: ["python3", "-c", script, String(listener.fd)],
            env: [],
            fds: [listener.fd],
            backend,
          });
          assert.equal(await exchange(listener.port, "hi"), "hello from the child");
          const st = await reap(pid);
          pid = 0;
          assert.deepEqual(st, { pid: st.pid, exited: true, code: 0 });
        } finally {
          if (pid > 0) await stop(pid);
          sys.close(listener.fd);
        }
      });

      test("200 spawns under GC pressure all succeed and leave no zombie", async () => {
        const before = children();
        const pids: number[] = [];
        let keep: unknown[] = [];
        const [r, w] = sys.pipe2(C.O_CLOEXEC);
        try {
          for (let i = 0; i < 200; i++) {
            // garbage: ~2 MB of short-lived objects per spawn, some kept for a while
            const junk = Array.from({ length: 20_000 }, (_, j) => ({ i, j, s: `x${j}` }));
            keep.push(junk.slice(0, 1000), new Uint8Array(64 * 1024));
            if (keep.length > 200) keep = keep.slice(100);
            pids.push(spawn({ path: "/bin/true", argv: ["true"], env: [], fds: [w], backend }));
            if (i % 20 === 19) await sleep(0);
          }
        } finally {
          sys.close(r);
          sys.close(w);
        }
        const results = [];
        for (const pid of pids) results.push(await reap(pid));
        assert.equal(results.filter((s) => s.exited && s.code === 0).length, 200);
        assert.deepEqual([...children().keys()].filter((p) => !before.has(p)), [], "no child left");
      });
    });
  }
});
