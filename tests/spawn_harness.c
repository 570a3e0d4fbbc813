// A C harness for the spawn trampoline, outside JavaScript: maps the hex given as
// argv[1] the way src/process/spawn.ts does and spawns through it. tests/spawn_test.ts builds it
// for each architecture (the foreign one runs under qemu-user) and checks the output.
// Under qemu-user, vfork is emulated with fork, so the errno the child reports through
// shared memory is not visible here; failures are checked through the exit status 127.
// Start it with default signal dispositions (Deno's node:child_process leaves signals 32
// and 33 ignored in its children, and qemu-user cannot reset those host signals).
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct spawn_args {
  const char *path; char *const *argv; char *const *envp; const char *cwd;
  const int *fds; long nfds; void *stack_top; int err; int step;
  uint64_t saved, full, empty; unsigned char dfl[32];
};

static long (*tramp)(struct spawn_args *);

static void inspect(long pid) {
  char p[64], line[256];
  snprintf(p, sizeof p, "/proc/%ld/wchan", pid);
  for (int i = 0; i < 1000; i++) { /* until sleep(1) sleeps: the loader opens files first */
    FILE *f = fopen(p, "r");
    int sleeping = f && fgets(line, sizeof line, f) && strstr(line, "nanosleep");
    if (f) fclose(f);
    if (sleeping) break;
    usleep(10000);
  }
  snprintf(p, sizeof p, "/proc/%ld/fd", pid);
  DIR *d = opendir(p);
  int fds[64], n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) && n < 64) if (e->d_name[0] != '.') fds[n++] = atoi(e->d_name);
  if (d) closedir(d);
  for (int i = 1; i < n; i++) for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) { int t = fds[j]; fds[j] = fds[j - 1]; fds[j - 1] = t; }
  printf("fds:");
  for (int i = 0; i < n; i++) printf(" %d", fds[i]);
  printf("\n");
  snprintf(p, sizeof p, "/proc/%ld/status", pid);
  FILE *f = fopen(p, "r");
  while (f && fgets(line, sizeof line, f)) if (!strncmp(line, "SigBlk", 6) || !strncmp(line, "SigIgn", 6)) printf("%s", line);
  if (f) fclose(f);
  kill((pid_t)pid, SIGKILL);
}

static int run(const char *path, char *const *argv, char *const *envp, const char *cwd,
               const int *fds, long nfds, void *stack, int wait) {
  struct spawn_args a;
  memset(&a, 0, sizeof a);
  a.path = path; a.argv = argv; a.envp = envp; a.cwd = cwd; a.fds = fds; a.nfds = nfds;
  a.stack_top = stack; a.full = ~0ULL;
  long pid = tramp(&a);
  if (pid <= 0) { printf("clone failed %ld\n", pid); return -1; }
  if (!wait) inspect(pid);
  int st = 0;
  waitpid((pid_t)pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: harness HEX [OUTPUT-FILE]\n"); return 2; }
  if (argc > 2 && !freopen(argv[2], "w", stdout)) { perror(argv[2]); return 1; }
  const char *hex = argv[1];
  size_t n = strlen(hex) / 2;
  unsigned char *mem = mmap(0, 0x20000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &mem[i]);
  __builtin___clear_cache((char *)mem, (char *)mem + n);
  if (mprotect(mem, 0x10000, PROT_READ | PROT_EXEC)) { perror("mprotect"); return 1; }
  tramp = (long (*)(struct spawn_args *))mem;
  signal(SIGPIPE, SIG_IGN); /* the runtimes ignore it; the child must not */
  int out[2], stray[2]; /* stray: no FD_CLOEXEC and never listed, so never in a child */
  if (pipe2(out, O_CLOEXEC) || pipe(stray)) { perror("pipe"); return 1; }
  char script[300];
  snprintf(script, sizeof script,
           "exec >/proc/self/fd/%d; echo \"argv:$0|$1|$2\"; echo \"env:$X\"; echo \"cwd:$(pwd)\"",
           out[1]);
  char *cargv[] = {"/bin/sh", "-c", script, "zero", "one two", NULL};
  char *cenv[] = {"X=hello world", NULL};
  int fds[] = {out[1]};
  printf("exit:%d\n", run("/bin/sh", cargv, cenv, "/tmp", fds, 1, mem + 0x20000, 1));
  close(out[1]);
  char buf[2048];
  ssize_t got, total = 0;
  while ((got = read(out[0], buf + total, sizeof buf - 1 - total)) > 0) total += got;
  buf[total] = 0;
  printf("%s", buf);
  /* a sleeping child: its fds and signal state, seen from here */
  char *sargv[] = {"sleep", "1000", NULL};
  int keep[] = {out[0]};
  run("/bin/sleep", sargv, cenv, NULL, keep, 1, mem + 0x20000, 0);
  char *fargv[] = {"x", NULL};
  printf("missing:%d\n", run("/nonexistent/x", fargv, cenv, NULL, NULL, 0, mem + 0x20000, 1));
  printf("badcwd:%d\n", run("/bin/true", fargv, cenv, "/nonexistent", NULL, 0, mem + 0x20000, 1));
  return 0;
}
