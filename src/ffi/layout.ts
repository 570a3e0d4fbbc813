/**
 * Constants and struct layouts of the platforms instar supports, in one place.
 * Linux x86_64 and aarch64 share the asm-generic constants and the LP64 struct
 * layouts; they differ in `struct epoll_event` (packed on x86_64) and in
 * syscall numbers. Each layout is checked against the C compiler by
 * `tests/ffi_test.ts`.
 *
 * @module
 */

import { InstarError } from "../errors.ts";

/** Byte offsets and sizes of the C structs instar builds by hand. */
export interface Layout {
  /** `struct sockaddr_in`: family u16 @0, port (network order) @2, address @4. */
  readonly sockaddrIn: { size: number; family: number; port: number; addr: number };
  /** `struct sockaddr_in6`. */
  readonly sockaddrIn6: {
    size: number;
    family: number;
    port: number;
    flowinfo: number;
    addr: number;
    scopeId: number;
  };
  /** `struct sockaddr_un`; `pathMax` counts the terminating NUL. */
  readonly sockaddrUn: { size: number; family: number; path: number; pathMax: number };
  /** `struct sockaddr_storage`. */
  readonly sockaddrStorage: { size: number };
  /** `struct msghdr`. */
  readonly msghdr: {
    size: number;
    name: number;
    namelen: number;
    iov: number;
    iovlen: number;
    control: number;
    controllen: number;
    flags: number;
  };
  /** `struct cmsghdr`; `align` is the CMSG_ALIGN unit. */
  readonly cmsghdr: { size: number; len: number; level: number; type: number; align: number };
  /** `struct iovec`. */
  readonly iovec: { size: number; base: number; len: number };
  /** `struct pollfd`. */
  readonly pollfd: { size: number; fd: number; events: number; revents: number };
  /** `struct epoll_event` (packed on x86_64). */
  readonly epollEvent: { size: number; events: number; data: number };
  /** `struct ucred` (SO_PEERCRED). */
  readonly ucred: { size: number; pid: number; uid: number; gid: number };
  /** `struct rlimit`: two `rlim_t` (unsigned long), the soft limit first. */
  readonly rlimit: { size: number; cur: number; max: number };
  /** `struct timespec`. */
  readonly timespec: { size: number; sec: number; nsec: number };
  /** The start of `struct tcp_info` (TCP_INFO): on a listening socket `unacked` is the accept queue's length. */
  readonly tcpInfo: { size: number; unacked: number };
  /** `sigset_t`. */
  readonly sigset: { size: number };
  /** Bytes reserved for `posix_spawn_file_actions_t` / `posix_spawnattr_t` (larger than glibc's and musl's). */
  readonly spawnOpaque: { size: number };
}

const LP64_COMMON = {
  sockaddrIn: { size: 16, family: 0, port: 2, addr: 4 },
  sockaddrIn6: { size: 28, family: 0, port: 2, flowinfo: 4, addr: 8, scopeId: 24 },
  sockaddrUn: { size: 110, family: 0, path: 2, pathMax: 108 },
  sockaddrStorage: { size: 128 },
  msghdr: {
    size: 56,
    name: 0,
    namelen: 8,
    iov: 16,
    iovlen: 24,
    control: 32,
    controllen: 40,
    flags: 48,
  },
  cmsghdr: { size: 16, len: 0, level: 8, type: 12, align: 8 },
  iovec: { size: 16, base: 0, len: 8 },
  pollfd: { size: 8, fd: 0, events: 4, revents: 6 },
  ucred: { size: 12, pid: 0, uid: 4, gid: 8 },
  timespec: { size: 16, sec: 0, nsec: 8 },
  rlimit: { size: 16, cur: 0, max: 8 },
  tcpInfo: { size: 104, unacked: 24 },
  sigset: { size: 128 },
  spawnOpaque: { size: 512 },
} as const;

/** Layouts for Linux on x86_64. */
export const LINUX_X86_64: Layout = {
  ...LP64_COMMON,
  epollEvent: { size: 12, events: 0, data: 4 },
};

/** Layouts for Linux on aarch64. */
export const LINUX_AARCH64: Layout = {
  ...LP64_COMMON,
  epollEvent: { size: 16, events: 0, data: 8 },
};

/** Linux constants (asm-generic values, identical on x86_64 and aarch64). */
export const C = {
  AF_UNIX: 1,
  AF_INET: 2,
  AF_INET6: 10,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_REUSEADDR: 2,
  SO_TYPE: 3,
  SO_ERROR: 4,
  SO_SNDBUF: 7,
  SO_RCVBUF: 8,
  SO_KEEPALIVE: 9,
  SO_REUSEPORT: 15,
  SO_PASSCRED: 16,
  SO_PEERCRED: 17,
  SO_ACCEPTCONN: 30,
  SO_PROTOCOL: 38,
  SO_DOMAIN: 39,
  IPPROTO_TCP: 6,
  IPPROTO_IPV6: 41,
  IPV6_V6ONLY: 26,
  TCP_NODELAY: 1,
  TCP_DEFER_ACCEPT: 9,
  TCP_INFO: 11,
  SOMAXCONN: 4096,
  SHUT_RD: 0,
  SHUT_WR: 1,
  SHUT_RDWR: 2,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  F_SETFL: 4,
  F_DUPFD_CLOEXEC: 1030,
  FD_CLOEXEC: 1,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CTRUNC: 0x8,
  MSG_TRUNC: 0x20,
  MSG_CMSG_CLOEXEC: 0x40000000,
  SCM_RIGHTS: 1,
  EPOLL_CTL_ADD: 1,
  EPOLL_CTL_DEL: 2,
  EPOLL_CTL_MOD: 3,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  WNOHANG: 1,
  PROT_NONE: 0,
  PROT_READ: 1,
  PROT_WRITE: 2,
  PROT_EXEC: 4,
  MAP_PRIVATE: 0x02,
  MAP_ANONYMOUS: 0x20,
  MAP_SHARED: 0x01,
  MFD_CLOEXEC: 0x1,
  MFD_ALLOW_SEALING: 0x2,
  F_ADD_SEALS: 1033,
  F_GET_SEALS: 1034,
  F_SEAL_SEAL: 0x1,
  F_SEAL_SHRINK: 0x2,
  F_SEAL_GROW: 0x4,
  SEEK_END: 2,
  CLOCK_MONOTONIC: 1,
  POSIX_SPAWN_SETSIGDEF: 0x04,
  POSIX_SPAWN_SETSIGMASK: 0x08,
  KCMP_FILE: 0,
  SYS_pidfd_open: 434,
  SYS_close_range: 436,
  CLOSE_RANGE_CLOEXEC: 4,
  SCM_CREDENTIALS: 2,
  F_SETOWN: 8,
  O_ASYNC: 0o20000,
  PR_SET_CHILD_SUBREAPER: 36,
  PR_GET_CHILD_SUBREAPER: 37,
  RLIMIT_NOFILE: 7,
} as const;

/** Linux signal numbers (identical on x86_64 and aarch64). */
export const SIGNALS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
};

/** The name of a signal number, or `SIG<n>` for one without a name. */
export function signalName(signo: number): string {
  for (const [name, n] of Object.entries(SIGNALS)) if (n === signo) return name;
  return `SIG${signo}`;
}

/** A platform instar can run on: its name, layouts and the syscall numbers it needs. */
export interface Platform {
  /** `linux-x86_64` or `linux-aarch64`. */
  readonly name: string;
  /** Struct layouts. */
  readonly layout: Layout;
  /** `kcmp(2)` syscall number. */
  readonly sysKcmp: number;
  /** `openat(2)`, `readlinkat(2)` and `getdents64(2)` syscall numbers (src/ffi/files.ts). */
  readonly sysFiles: { openat: number; readlinkat: number; getdents64: number };
}

let current: Platform | undefined;

/**
 * The OS and CPU as `process.platform` and `process.arch` name them (`linux`, `x64`), from
 * `Deno.build` on Deno: there the first touch of `process` sets up the Node compatibility layer
 * (+8 MB resident, docs/benchmarks.md "A minimal app's memory"); Bun's `process` is cheap.
 */
export function osArch(): { os: string; arch: string } {
  const g = globalThis as unknown as {
    Deno?: { build: { os: string; arch: string } };
    process: { platform: string; arch: string };
  };
  if (!g.Deno) return { os: g.process.platform, arch: g.process.arch };
  const { os, arch } = g.Deno.build;
  return { os, arch: arch === "x86_64" ? "x64" : arch === "aarch64" ? "arm64" : arch };
}

/** The platform this process runs on; throws `UNSUPPORTED_PLATFORM` elsewhere. */
export function platform(): Platform {
  if (current) return current;
  const { os, arch } = osArch();
  const key = `${os}-${arch}`;
  if (key === "linux-x64") {
    current = {
      name: "linux-x86_64",
      layout: LINUX_X86_64,
      sysKcmp: 312,
      sysFiles: { openat: 257, readlinkat: 267, getdents64: 217 },
    };
  } else if (key === "linux-arm64") {
    current = {
      name: "linux-aarch64",
      layout: LINUX_AARCH64,
      sysKcmp: 272,
      sysFiles: { openat: 56, readlinkat: 78, getdents64: 61 },
    };
  } else {
    throw new InstarError(
      "UNSUPPORTED_PLATFORM",
      `instar has struct layouts for linux-x86_64 and linux-aarch64, not ${key}; ` +
        "run on Linux or open an issue with the layouts of your platform",
    );
  }
  return current;
}
