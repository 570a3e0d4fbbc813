import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C, type Layout, LINUX_AARCH64, LINUX_X86_64, platform } from "../src/ffi/layout.ts";
import { decode, encodeInet, encodeUnix, formatIPv6, parseIPv6 } from "../src/ffi/sockaddr.ts";
import { SYMBOLS } from "../src/ffi/symbols.ts";
import { checkTable, type DlLibrary } from "../src/ffi/backend.ts";
import { SystemError } from "../src/errors.ts";
import { denoBin, skipIf } from "./support/helpers.ts";

// A C program that prints the real offsets and sizes; compared with layout.ts.
const LAYOUT_PROBE = `
#define _GNU_SOURCE
#include <stdio.h>
#include <stddef.h>
#include <signal.h>
#include <poll.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spawn.h>
#define P(name, value) printf("%s %ld\\n", name, (long)(value))
int main(void) {
  P("sockaddrIn.size", sizeof(struct sockaddr_in));
  P("sockaddrIn.port", offsetof(struct sockaddr_in, sin_port));
  P("sockaddrIn.addr", offsetof(struct sockaddr_in, sin_addr));
  P("sockaddrIn6.size", sizeof(struct sockaddr_in6));
  P("sockaddrIn6.port", offsetof(struct sockaddr_in6, sin6_port));
  P("sockaddrIn6.flowinfo", offsetof(struct sockaddr_in6, sin6_flowinfo));
  P("sockaddrIn6.addr", offsetof(struct sockaddr_in6, sin6_addr));
  P("sockaddrIn6.scopeId", offsetof(struct sockaddr_in6, sin6_scope_id));
  P("sockaddrUn.size", sizeof(struct sockaddr_un));
  P("sockaddrUn.path", offsetof(struct sockaddr_un, sun_path));
  P("sockaddrUn.pathMax", sizeof(((struct sockaddr_un*)0)->sun_path));
  P("sockaddrStorage.size", sizeof(struct sockaddr_storage));
  P("msghdr.size", sizeof(struct msghdr));
  P("msghdr.name", offsetof(struct msghdr, msg_name));
  P("msghdr.namelen", offsetof(struct msghdr, msg_namelen));
  P("msghdr.iov", offsetof(struct msghdr, msg_iov));
  P("msghdr.iovlen", offsetof(struct msghdr, msg_iovlen));
  P("msghdr.control", offsetof(struct msghdr, msg_control));
  P("msghdr.controllen", offsetof(struct msghdr, msg_controllen));
  P("msghdr.flags", offsetof(struct msghdr, msg_flags));
  P("cmsghdr.size", sizeof(struct cmsghdr));
  P("cmsghdr.len", offsetof(struct cmsghdr, cmsg_len));
  P("cmsghdr.level", offsetof(struct cmsghdr, cmsg_level));
  P("cmsghdr.type", offsetof(struct cmsghdr, cmsg_type));
  P("cmsghdr.data", CMSG_LEN(0));
  P("iovec.size", sizeof(struct iovec));
  P("iovec.base", offsetof(struct iovec, iov_base));
  P("iovec.len", offsetof(struct iovec, iov_len));
  P("pollfd.size", sizeof(struct pollfd));
  P("pollfd.events", offsetof(struct pollfd, events));
  P("pollfd.revents", offsetof(struct pollfd, revents));
  P("epollEvent.size", sizeof(struct epoll_event));
  P("epollEvent.data", offsetof(struct epoll_event, data));
  P("ucred.size", sizeof(struct ucred));
  P("ucred.uid", offsetof(struct ucred, uid));
  P("ucred.gid", offsetof(struct ucred, gid));
  P("timespec.size", sizeof(struct timespec));
  P("timespec.nsec", offsetof(struct timespec, tv_nsec));
  P("rlimit.size", sizeof(struct rlimit));
  P("rlimit.cur", offsetof(struct rlimit, rlim_cur));
  P("rlimit.max", offsetof(struct rlimit, rlim_max));
  P("C.RLIMIT_NOFILE", RLIMIT_NOFILE);
  P("tcpInfo.unacked", offsetof(struct tcp_info, tcpi_unacked));
  P("sigset.size", sizeof(sigset_t));
  P("spawnFileActions.size", sizeof(posix_spawn_file_actions_t));
  P("spawnAttr.size", sizeof(posix_spawnattr_t));
  P("C.AF_UNIX", AF_UNIX); P("C.AF_INET", AF_INET); P("C.AF_INET6", AF_INET6);
  P("C.SOCK_STREAM", SOCK_STREAM); P("C.SOCK_DGRAM", SOCK_DGRAM);
  P("C.SOCK_NONBLOCK", SOCK_NONBLOCK); P("C.SOCK_CLOEXEC", SOCK_CLOEXEC);
  P("C.SOL_SOCKET", SOL_SOCKET); P("C.SO_REUSEADDR", SO_REUSEADDR); P("C.SO_TYPE", SO_TYPE);
  P("C.SO_ERROR", SO_ERROR); P("C.SO_KEEPALIVE", SO_KEEPALIVE); P("C.SO_REUSEPORT", SO_REUSEPORT);
  P("C.SO_PEERCRED", SO_PEERCRED); P("C.SO_ACCEPTCONN", SO_ACCEPTCONN); P("C.SO_DOMAIN", SO_DOMAIN);
  P("C.SO_PROTOCOL", SO_PROTOCOL); P("C.SO_SNDBUF", SO_SNDBUF); P("C.SO_RCVBUF", SO_RCVBUF);
  P("C.SO_PASSCRED", SO_PASSCRED);
  P("C.IPPROTO_TCP", IPPROTO_TCP); P("C.IPPROTO_IPV6", IPPROTO_IPV6); P("C.IPV6_V6ONLY", IPV6_V6ONLY);
  P("C.TCP_NODELAY", TCP_NODELAY); P("C.TCP_DEFER_ACCEPT", TCP_DEFER_ACCEPT); P("C.TCP_INFO", TCP_INFO);
  P("C.F_GETFD", F_GETFD); P("C.F_SETFD", F_SETFD); P("C.F_GETFL", F_GETFL); P("C.F_SETFL", F_SETFL);
  P("C.F_DUPFD_CLOEXEC", F_DUPFD_CLOEXEC); P("C.FD_CLOEXEC", FD_CLOEXEC);
  P("C.O_NONBLOCK", O_NONBLOCK); P("C.O_CLOEXEC", O_CLOEXEC);
  P("C.MSG_DONTWAIT", MSG_DONTWAIT); P("C.MSG_NOSIGNAL", MSG_NOSIGNAL); P("C.MSG_CTRUNC", MSG_CTRUNC);
  P("C.MSG_TRUNC", MSG_TRUNC);
  P("C.MSG_CMSG_CLOEXEC", MSG_CMSG_CLOEXEC); P("C.SCM_RIGHTS", SCM_RIGHTS);
  P("C.EPOLL_CTL_ADD", EPOLL_CTL_ADD); P("C.EPOLL_CTL_DEL", EPOLL_CTL_DEL); P("C.EPOLL_CTL_MOD", EPOLL_CTL_MOD);
  P("C.POLLIN", POLLIN); P("C.POLLOUT", POLLOUT); P("C.POLLERR", POLLERR); P("C.POLLHUP", POLLHUP);
  P("C.POLLNVAL", POLLNVAL); P("C.WNOHANG", WNOHANG);
  P("C.PROT_READ", PROT_READ); P("C.PROT_WRITE", PROT_WRITE); P("C.PROT_EXEC", PROT_EXEC);
  P("C.MAP_PRIVATE", MAP_PRIVATE); P("C.MAP_ANONYMOUS", MAP_ANONYMOUS);
  P("C.CLOCK_MONOTONIC", CLOCK_MONOTONIC);
  P("C.POSIX_SPAWN_SETSIGDEF", POSIX_SPAWN_SETSIGDEF); P("C.POSIX_SPAWN_SETSIGMASK", POSIX_SPAWN_SETSIGMASK);
  P("C.SOMAXCONN", SOMAXCONN);
  P("C.SHUT_RD", SHUT_RD); P("C.SHUT_WR", SHUT_WR); P("C.SHUT_RDWR", SHUT_RDWR);
  return 0;
}
`;

/** Compiles and runs the probe with `cc` (under `run`, e.g. qemu); returns what it printed. */
function probeLayouts(cc: string, run: string[] = []): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), "instar-layout-"));
  try {
    writeFileSync(join(dir, "probe.c"), LAYOUT_PROBE);
    execFileSync(cc, ["-static", "-o", join(dir, "probe"), join(dir, "probe.c")]);
    const [cmd, ...args] = [...run, join(dir, "probe")];
    const out = execFileSync(cmd, args, { encoding: "utf8" });
    return new Map(
      out.trim().split("\n").map((l) => {
        const [k, v] = l.split(" ");
        return [k, Number(v)];
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function which(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
}

/** Compares a layout table and the constants with what the compiler printed; returns how many. */
function compareLayouts(layout: Layout, real: Map<string, number>): number {
  const table = layout as unknown as Record<string, Record<string, number>>;
  let checked = 0;
  for (const [key, value] of real) {
    const [group, field] = key.split(".");
    if (group === "C") {
      assert.equal((C as Record<string, number>)[field], value, `constant ${field}`);
    } else if (group === "cmsghdr" && field === "data") {
      assert.equal(Math.ceil(table.cmsghdr.size / 8) * 8, value, "CMSG_LEN(0)");
    } else if (group === "spawnFileActions" || group === "spawnAttr") {
      assert.ok(table.spawnOpaque.size >= value, `${group} fits in spawnOpaque`);
    } else {
      assert.equal(table[group]?.[field], value, `layout ${key}`);
    }
    checked++;
  }
  return checked;
}

describe("ffi layer", () => {
  test("struct layouts and constants match the C compiler on this machine", () => {
    const checked = compareLayouts(platform().layout, probeLayouts("cc"));
    assert.ok(checked > 90, `compared ${checked} values`);
  });

  const cross = which("aarch64-linux-gnu-gcc") && which("qemu-aarch64");
  const aarch64 = "the linux-aarch64 layouts match the aarch64 C compiler (run under qemu-user)";
  const noCross = !cross &&
    "needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu, " +
      "qemu-user; .ci/run installs them)";
  test(aarch64, skipIf(noCross, aarch64), () => {
    const checked = compareLayouts(
      LINUX_AARCH64,
      probeLayouts("aarch64-linux-gnu-gcc", ["qemu-aarch64"]),
    );
    assert.ok(checked > 90, `compared ${checked} values`);
  });

  test("the aarch64 layout differs from x86_64 only in epoll_event", () => {
    const a = LINUX_AARCH64 as unknown as Record<string, unknown>;
    const x = LINUX_X86_64 as unknown as Record<string, unknown>;
    for (const key of Object.keys(x)) {
      if (key === "epollEvent") continue;
      assert.deepEqual(a[key], x[key], key);
    }
    assert.deepEqual(LINUX_AARCH64.epollEvent, { size: 16, events: 0, data: 8 });
  });

  test("every symbol of the table loads and the backend matches the runtime", () => {
    const b = sys.backend();
    assert.equal(b.runtime, sys.runtimeName());
    for (const name of Object.keys(SYMBOLS)) {
      assert.equal(typeof (b.libc as unknown as Record<string, unknown>)[name], "function", name);
    }
    assert.equal(sys.getpid(), process.pid);
  });

  test("checkTable() closes what it opened, whether every symbol is there or one is missing", () => {
    // A stand-in for the runtime's library of dlopen/dlsym/dlclose, recording what was closed.
    const fake = (lacking: string[], handle = 42n) => {
      const closed: string[] = [];
      const text = (b: Uint8Array) => new TextDecoder().decode(b.subarray(0, b.indexOf(0)));
      const symbols = {
        dlopen: () => handle,
        dlsym: (_h: bigint, name: Uint8Array) => (lacking.includes(text(name)) ? 0n : 1n),
        dlclose: (h: bigint) => (closed.push(`handle ${h}`), 0),
      };
      const lib = { symbols, close: () => void closed.push("library") };
      return { closed, open: () => lib as unknown as DlLibrary };
    };
    const all = fake([]);
    checkTable("libfake.so", all.open, () => assert.fail("bindAll with dlsym at hand"));
    assert.deepEqual(all.closed, ["handle 42", "library"]);
    const some = fake(["socket"]);
    assert.throws(
      () => checkTable("libfake.so", some.open, () => {}),
      /libfake\.so lacks socket/,
    );
    assert.deepEqual(some.closed, ["handle 42", "library"]);
    // dlopen(3) cannot open it by its path: the whole table is bound instead, the library closed.
    const unnamed = fake([], 0n);
    let boundAll = 0;
    checkTable("libfake.so", unnamed.open, () => void boundAll++);
    assert.equal(boundAll, 1);
    assert.deepEqual(unnamed.closed, ["library"]);
    // Without a dlsym of its own (glibc before 2.34), the whole table is bound instead.
    let bound = 0;
    checkTable("libold.so", () => {
      throw new Error("no dlsym");
    }, () => void bound++);
    assert.equal(bound, 1);
  });

  test("a library that lacks a symbol of the table is passed over for the next candidate", async () => {
    // A stub "libc" with errno but nothing else: opening it alone fails at start-up, naming what
    // it lacks, and the next candidate is taken (Bun compiles symbols on first use, so this is
    // checked when the library is opened, as Deno's dlopen of the whole table does).
    const dir = mkdtempSync(join(tmpdir(), "instar-stub-libc-"));
    try {
      const stub = join(dir, "libstub.so");
      writeFileSync(join(dir, "stub.c"), "int e; int *__errno_location(void) { return &e; }\n");
      execFileSync("cc", ["-shared", "-fPIC", "-o", stub, join(dir, "stub.c")]);
      const open = "Bun" in globalThis
        ? (await import("../src/ffi/backend_bun.ts")).openBun
        : (await import("../src/ffi/backend_deno.ts")).openDeno;
      const backend = open([stub, "libc.so.6"], false);
      assert.equal(backend.path, "libc.so.6");
      assert.equal(Number(backend.libc.getpid()), process.pid);
      assert.throws(() => open([stub], false), (err: Error & { code?: string }) => {
        assert.equal(err.code, "FFI_UNAVAILABLE");
        assert.match(err.message, /libstub\.so/);
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("each libc symbol is bound on its first use, not when the library opens", async () => {
    // Binding costs a trampoline per symbol (time and memory at every generation's start-up).
    const open = "Bun" in globalThis
      ? (await import("../src/ffi/backend_bun.ts")).openBun
      : (await import("../src/ffi/backend_deno.ts")).openDeno;
    const libc = open(["libc.so.6"], false).libc;
    const bound = (name: string) => "value" in Object.getOwnPropertyDescriptor(libc, name)!;
    assert.deepEqual(Object.keys(SYMBOLS).filter(bound), []);
    assert.equal(Number(libc.getpid()), process.pid);
    assert.deepEqual(Object.keys(SYMBOLS).filter(bound), ["getpid"]);
    assert.equal(libc.getpid, libc.getpid, "bound once");
  });

  test("a failed libc call throws SystemError carrying the errno name, number and syscall", () => {
    assert.throws(() => sys.close(987654), SystemError);
    try {
      sys.close(987654);
      assert.fail("close of a bad fd succeeded");
    } catch (e) {
      assert.ok(e instanceof SystemError);
      assert.equal(e.code, "EBADF");
      assert.equal(e.errno, 9);
      assert.equal(e.syscall, "close");
      assert.match(e.message, /close failed: EBADF \(errno 9\)/);
    }
  });

  test("errno names map both ways and strerror agrees with libc", () => {
    assert.equal(sys.errnoName(98), "EADDRINUSE");
    assert.equal(sys.errnoName(24), "EMFILE");
    assert.equal(sys.errnoNumber("ECONNREFUSED"), 111);
    assert.equal(sys.errnoName(4242), "E4242");
    assert.equal(sys.strerror(98), "Address already in use");
  });

  test("bind() to a port in use reports EADDRINUSE", () => {
    const a = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    const b = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    try {
      sys.bind(a, encodeInet("127.0.0.1", 0)!);
      sys.listenFd(a, 16);
      const { port } = decode(sys.getsockname(a)) as { port: number };
      assert.throws(() => sys.bind(b, encodeInet("127.0.0.1", port)!), { code: "EADDRINUSE" });
    } finally {
      sys.close(a);
      sys.close(b);
    }
  });

  test("sendFds() passes a listening socket that recvFds() receives close-on-exec", () => {
    const l = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    const [x, y] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    try {
      sys.bind(l, encodeInet("127.0.0.1", 0)!);
      sys.listenFd(l, 16);
      assert.equal(sys.sendFds(x, new TextEncoder().encode("meta"), [l, l]), 4);
      const got = sys.recvFds(y, 64)!;
      assert.equal(new TextDecoder().decode(got.data), "meta");
      assert.equal(got.fds.length, 2);
      assert.equal(got.truncated, false);
      for (const fd of got.fds) {
        assert.notEqual(fd, l);
        assert.deepEqual(decode(sys.getsockname(fd)), decode(sys.getsockname(l)));
        assert.equal(sys.fcntl(fd, C.F_GETFD) & C.FD_CLOEXEC, C.FD_CLOEXEC);
        assert.equal(sys.sameFile(fd, l), true);
        sys.close(fd);
      }
    } finally {
      sys.close(l);
      sys.close(x);
      sys.close(y);
    }
  });

  test("recvFds() reports truncation when more fds arrive than it has room for", () => {
    const [x, y] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    try {
      sys.sendFds(x, new Uint8Array([1]), [x, y, x, y, x]);
      const got = sys.recvFds(y, 8, 1)!;
      assert.equal(got.truncated, true);
      assert.ok(got.fds.length < 5, `kept ${got.fds.length} of 5`);
      for (const fd of got.fds) sys.close(fd);
    } finally {
      sys.close(x);
      sys.close(y);
    }
  });

  test("pipe2(), poll(), read() and write() move bytes and report readiness", () => {
    const [r, w] = sys.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
    try {
      const fds: sys.PollFd[] = [{ fd: r, events: C.POLLIN }];
      assert.equal(sys.poll(fds, 0), 0);
      assert.equal(sys.read(r, new Uint8Array(4)), null);
      assert.equal(sys.write(w, new Uint8Array([7, 8, 9])), 3);
      assert.equal(sys.poll(fds, 1000), 1);
      assert.equal(fds[0].revents! & C.POLLIN, C.POLLIN);
      const buf = new Uint8Array(8);
      assert.equal(sys.read(r, buf), 3);
      assert.deepEqual([...buf.subarray(0, 3)], [7, 8, 9]);
    } finally {
      sys.close(r);
      sys.close(w);
    }
  });

  test("sockaddr encoding round-trips IPv4, IPv6 and Unix addresses", () => {
    assert.deepEqual(decode(encodeInet("10.1.2.3", 8080)!), {
      transport: "tcp",
      hostname: "10.1.2.3",
      port: 8080,
    });
    assert.deepEqual(decode(encodeInet("::1", 443)!), {
      transport: "tcp",
      hostname: "::1",
      port: 443,
    });
    assert.equal(formatIPv6(parseIPv6("2001:db8:0:0:1:0:0:1")!), "2001:db8::1:0:0:1");
    assert.equal(formatIPv6(parseIPv6("::ffff:1.2.3.4")!), "::ffff:1.2.3.4");
    assert.equal(parseIPv6("1::2::3"), null);
    assert.equal(encodeInet("localhost", 1), null);
    assert.deepEqual(decode(encodeUnix("/tmp/a.sock")), { transport: "unix", path: "/tmp/a.sock" });
    assert.deepEqual(decode(encodeUnix("@instar-abstract")), {
      transport: "unix",
      path: "@instar-abstract",
    });
    assert.throws(() => encodeUnix("/" + "x".repeat(200)), { code: "INVALID_ARGUMENT" });
  });

  test("kcmp tells duplicates of one socket from different sockets", () => {
    const a = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    const b = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    const d = sys.dupCloexec(a);
    try {
      assert.equal(sys.sameFile(a, d), true);
      assert.equal(sys.sameFile(a, b), false);
    } finally {
      [a, b, d].forEach(sys.close);
    }
  });

  test("pidfd_open() and waitpid() observe a child's end", async () => {
    const child = (await import("node:child_process")).spawn("sleep", ["0.1"], { stdio: "ignore" });
    const pidfd = sys.pidfdOpen(child.pid!);
    try {
      const fds: sys.PollFd[] = [{ fd: pidfd, events: C.POLLIN }];
      assert.equal(sys.poll(fds, 5000), 1);
    } finally {
      sys.close(pidfd);
    }
  });

  test("mmap(), mprotect() and munmap() manage an anonymous page", () => {
    const addr = sys.mmapAnonymous(4096, C.PROT_READ | C.PROT_WRITE);
    assert.ok(addr > 0n);
    sys.mprotect(addr, 4096, C.PROT_READ);
    sys.munmap(addr, 4096);
    assert.throws(() => sys.mprotect(addr + 1n, 4096, C.PROT_READ), { code: "EINVAL" });
  });

  for (
    const [flags, code, hint] of [
      [["--allow-read", "--allow-env"], "FFI_UNAVAILABLE", /--allow-ffi/],
      [["--allow-ffi", "--allow-read", "--allow-env"], "PERMISSION_DENIED", /-A/],
    ] as const
  ) {
    test(`Deno run with ${flags.join(" ")} gets ${code} saying what to grant`, () => {
      const dir = mkdtempSync(join(tmpdir(), "instar-perm-"));
      try {
        const file = join(dir, "probe.ts");
        const ffiMod = new URL("../src/ffi/mod.ts", import.meta.url).href;
        writeFileSync(
          file,
          `import { getpid } from ${JSON.stringify(ffiMod)};\n` +
            `try { getpid(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }\n`,
        );
        const r = spawnSync(denoBin(), ["run", ...flags, "--no-check", file], { encoding: "utf8" });
        const out = JSON.parse(r.stdout.trim());
        assert.equal(out.code, code);
        assert.match(out.message, hint);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
