/**
 * The libc symbols instar calls, in Deno's `ForeignLibraryInterface` notation.
 * This table is the single source of truth: the Deno backend passes it to
 * `Deno.dlopen` as is, the Bun backend translates each type name for `bun:ffi`.
 *
 * Conventions: `buffer` is a `Uint8Array` (or `null`) whose address is passed;
 * `usize` carries raw addresses and sizes as `number | bigint`.
 *
 * @module
 */

/** Every libc function instar may call, with its C prototype. */
export const SYMBOLS = {
  // int socket(int domain, int type, int protocol);
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen);
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  // int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen);
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  // int bind(int fd, const struct sockaddr *addr, socklen_t addrlen);
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int listen(int fd, int backlog);
  listen: { parameters: ["i32", "i32"], result: "i32" },
  // int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  // int connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen);
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int shutdown(int sockfd, int how);
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  // int getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen);
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int fcntl(int fd, int cmd, ... /* int arg */);
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int dup3(int oldfd, int newfd, int flags);
  dup3: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int close(int fd);
  close: { parameters: ["i32"], result: "i32" },
  // int pipe2(int pipefd[2], int flags);
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  // int socketpair(int domain, int type, int protocol, int sv[2]);
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // ssize_t sendmsg(int fd, const struct msghdr *msg, int flags);
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  // ssize_t recvmsg(int fd, struct msghdr *msg, int flags);
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  // ssize_t sendto(int fd, const void *buf, size_t len, int flags,
  //                const struct sockaddr *dest_addr, socklen_t addrlen);
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  // ssize_t recvfrom(int fd, void *buf, size_t len, int flags,
  //                  struct sockaddr *src_addr, socklen_t *addrlen);
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  // ssize_t read(int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t write(int fd, const void *buf, size_t count);
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout);
  poll: { parameters: ["buffer", "usize", "i32"], result: "i32" },
  // pid_t waitpid(pid_t pid, int *wstatus, int options);
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // int kill(pid_t pid, int sig);
  kill: { parameters: ["i32", "i32"], result: "i32" },
  // pid_t getpid(void);
  getpid: { parameters: [], result: "i32" },
  // pid_t getppid(void);
  getppid: { parameters: [], result: "i32" },
  // uid_t getuid(void);
  getuid: { parameters: [], result: "u32" },
  // int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
  //           unsigned long arg5); used for PR_SET_CHILD_SUBREAPER (instar run)
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  // long syscall(long number, ...); used for pidfd_open and kcmp, which older libcs lack
  syscall: {
    parameters: ["i64", "i64", "i64", "i64", "i64", "i64"],
    result: "i64",
  },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
  mmap: {
    parameters: ["usize", "usize", "i32", "i32", "i32", "i64"],
    result: "usize",
  },
  // int memfd_create(const char *name, unsigned int flags); the counter region (glibc 2.27, musl 1.1.20)
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  // int ftruncate(int fd, off_t length);
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // off_t lseek(int fd, off_t offset, int whence); the size of a passed counter region
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // int mprotect(void *addr, size_t len, int prot);
  mprotect: { parameters: ["usize", "usize", "i32"], result: "i32" },
  // int munmap(void *addr, size_t length);
  munmap: { parameters: ["usize", "usize"], result: "i32" },
  // int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // int epoll_create1(int flags);
  epoll_create1: { parameters: ["i32"], result: "i32" },
  // int getrlimit(int resource, struct rlimit *rlim);
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // int setrlimit(int resource, const struct rlimit *rlim);
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // int clock_gettime(clockid_t clockid, struct timespec *tp);
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  // int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *file_actions,
  //                 const posix_spawnattr_t *attrp, char *const argv[], char *const envp[]);
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int posix_spawn_file_actions_init(posix_spawn_file_actions_t *file_actions);
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fildes, int newfildes);
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // int posix_spawn_file_actions_addclose(posix_spawn_file_actions_t *fa, int fildes);
  posix_spawn_file_actions_addclose: { parameters: ["buffer", "i32"], result: "i32" },
  // int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *fa, const char *path);
  posix_spawn_file_actions_addchdir_np: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *file_actions);
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_init(posix_spawnattr_t *attr);
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags);
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  // int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *sigmask);
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *sigdefault);
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_destroy(posix_spawnattr_t *attr);
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  // void *memcpy(void *dest, const void *src, size_t n); copies bytes into mapped memory
  memcpy: { parameters: ["usize", "buffer", "usize"], result: "usize" },
  // char *strerror(int errnum);
  strerror: { parameters: ["i32"], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * dlopen(3), dlsym(3) and dlclose(3), with which a backend checks that the
 * library has every symbol of {@link SYMBOLS} without binding any (each
 * binding costs a trampoline). libc has them since glibc 2.34, and in musl and
 * macOS.
 */
export const DL_SYMBOLS = {
  // void *dlopen(const char *file, int mode);
  dlopen: { parameters: ["buffer", "i32"], result: "usize" },
  // void *dlsym(void *handle, const char *name);
  dlsym: { parameters: ["usize", "buffer"], result: "usize" },
  // int dlclose(void *handle);
  dlclose: { parameters: ["usize"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** How errno is reached: glibc and musl export `__errno_location`, macOS `__error`. */
export const ERRNO_SYMBOLS = {
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

/** macOS spelling of {@link ERRNO_SYMBOLS}. */
export const ERRNO_SYMBOLS_DARWIN = {
  // int *__error(void);
  __error: { parameters: [], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

/** A type name of the table, as Deno spells it. */
export type NativeType =
  | "i8"
  | "u8"
  | "i16"
  | "u16"
  | "i32"
  | "u32"
  | "i64"
  | "u64"
  | "usize"
  | "isize"
  | "f64"
  | "buffer"
  | "void";

/** A function signature in the notation of {@link SYMBOLS}. */
export interface Signature {
  readonly parameters: readonly NativeType[];
  readonly result: NativeType;
}

/** The JavaScript value a native type is passed as. */
export type ArgOf<T extends NativeType> = T extends "buffer" ? Uint8Array | null
  : T extends "i64" | "u64" | "usize" | "isize" ? number | bigint
  : T extends "void" ? undefined
  : number;

/** The JavaScript value a native type is returned as. */
export type ResultOf<T extends NativeType> = T extends "i64" | "u64" | "usize" | "isize"
  ? number | bigint
  : T extends "void" ? void
  : number;

type ArgsOf<P extends readonly NativeType[]> = {
  [I in keyof P]: P[I] extends NativeType ? ArgOf<P[I]> : never;
};

/** The callable form of a signature. */
export type NativeFunction<S extends Signature> = (
  ...args: ArgsOf<S["parameters"]>
) => ResultOf<S["result"]>;

/** The callable form of the whole table. */
export type LibcSymbols = {
  readonly [K in keyof typeof SYMBOLS]: NativeFunction<(typeof SYMBOLS)[K]>;
};
