/**
 * Everything instar reads from `/proc`, in one place: how this process was
 * started, its fds and epoll registrations, whether a process runs, and the
 * TCP connections a process holds. Linux only.
 *
 * @module
 */

import {
  readDir,
  readDirSync,
  readFileSync,
  readLink,
  readLinkSync,
  readText,
  readTextSync,
} from "./host.ts";

/** The NUL-separated list in a /proc file (`cmdline`, `environ`). */
export function readNulList(path: string): string[] {
  const parts = new TextDecoder().decode(readFileSync(path)).split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

/** What `/proc/self/fd/<fd>` points to, or `null` when the fd is not open. */
export function fdLink(fd: number, pid: number | "self" = "self"): string | null {
  try {
    return readLinkSync(`/proc/${pid}/fd/${fd}`);
  } catch {
    return null;
  }
}

/** The open fd numbers of process `pid` (this one by default). */
export function openFds(pid: number | "self" = "self"): number[] {
  return readDirSync(`/proc/${pid}/fd`).map(Number).filter((n) => Number.isInteger(n));
}

/** What /proc/<pid>/fd/<fd> links to for a socket: `socket:[<inode>]`. */
const SOCKET_LINK = /^socket:\[(\d+)\]$/;

/** The inode of a socket fd (`socket:[N]`), or `null` if `fd` is not an open socket. */
export function socketInode(fd: number, pid: number | "self" = "self"): number | null {
  const m = SOCKET_LINK.exec(fdLink(fd, pid) ?? "");
  return m ? Number(m[1]) : null;
}

/** The epoll fds of this process. */
export function epollFds(): number[] {
  return openFds().filter((fd) => fdLink(fd) === "anon_inode:[eventpoll]");
}

/**
 * One line of an epoll fd's fdinfo.
 *
 * @example
 * ```ts
 * import { type EpollRegistration, pauseSocket } from "@instar/instar/unstable";
 *
 * const paused = pauseSocket(3);
 * const removed: readonly EpollRegistration[] = paused.registrations;
 * console.log(removed.map((r) => r.events.toString(16)));
 * ```
 */
export interface EpollRegistration {
  /** The epoll fd whose fdinfo listed it. */
  epfd: number;
  /** The registered fd. */
  tfd: number;
  /** The event mask. */
  events: number;
  /** The user data. */
  data: bigint;
  /** The inode of the registered file. */
  inode: number;
}

// "tfd:       21 events: 8000201d data:     561b214dde00  pos:0 ino:1d1f sdev:9"
const TFD_LINE =
  /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\S*\s+ino:([0-9a-f]+)/;

/** The registrations `/proc/self/fdinfo/<epfd>` lists; empty if it cannot be read. */
export function epollRegistrations(epfd: number): EpollRegistration[] {
  let text: string;
  try {
    text = readTextSync(`/proc/self/fdinfo/${epfd}`);
  } catch {
    return [];
  }
  const out: EpollRegistration[] = [];
  for (const line of text.split("\n")) {
    const m = TFD_LINE.exec(line);
    if (!m) continue;
    out.push({
      epfd,
      tfd: Number(m[1]),
      events: parseInt(m[2], 16) >>> 0,
      data: BigInt("0x" + m[3]),
      inode: parseInt(m[4], 16),
    });
  }
  return out;
}

/** The fields of `/proc/<pid>/stat` after the command name (state first), or `null`. */
function statFields(pid: number): string[] | null {
  try {
    const stat = readTextSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** Whether process `pid` runs (and is not a zombie). */
export function processRuns(pid: number): boolean {
  const f = statFields(pid);
  return f !== null && f[0] !== "Z";
}

/**
 * The start time of process `pid` in clock ticks since boot (field 22 of
 * `/proc/<pid>/stat`), or `null`: with the pid it names one process for ever.
 */
export function processStartTime(pid: number): string | null {
  return statFields(pid)?.[19] ?? null;
}

/** When process `pid` started, in ms since the epoch (10 ms resolution), or `null`. */
export function processStartedAt(pid: number): number | null {
  const ticks = processStartTime(pid);
  if (ticks === null) return null;
  try {
    const btime = /^btime (\d+)$/m.exec(readTextSync("/proc/stat"));
    // /proc reports times in USER_HZ, 100 per second on every Linux architecture.
    return btime ? Number(btime[1]) * 1000 + Number(ticks) * 10 : null;
  } catch {
    return null;
  }
}

/** The parent pid of process `pid`, or `null`. */
export function parentOf(pid: number): number | null {
  const f = statFields(pid);
  return f ? Number(f[1]) : null;
}

/** The command name of process `pid` (`/proc/<pid>/comm`), or `null`. */
export function commandName(pid: number): string | null {
  try {
    return readTextSync(`/proc/${pid}/comm`).trim();
  } catch {
    return null;
  }
}

/** The inodes of the sockets process `pid` holds open. */
export function socketInodes(pid: number | "self" = "self"): Map<number, number> {
  const out = new Map<number, number>(); // inode -> fd
  for (const fd of openFds(pid)) {
    const inode = socketInode(fd, pid);
    if (inode !== null) out.set(inode, fd);
  }
  return out;
}

/** The kernel's TCP tables, IPv4 and IPv6. */
const TCP_TABLES = ["/proc/net/tcp", "/proc/net/tcp6"];

/** Inodes of the established TCP connections (either address family) whose local port is `port`. */
export function tcpConnectionInodes(port: number): Set<number> {
  const tables = TCP_TABLES.map((t) => readTextSync(t));
  return new Set(tables.flatMap((t) => established(t, port)));
}

/** A process holding a socket open: its pid and command line. */
export interface SocketHolder {
  /** Its pid. */
  pid: number;
  /** Its command line, NULs as spaces (`null` when it cannot be read). */
  command: string | null;
}

/** How far tcpListenerHolders looks: processes, and fd links read in all. */
const HOLDER_SCAN = { processes: 4096, fds: 65536 };

/**
 * The processes that hold a listening TCP socket on local `port` (either
 * family, any address), as far as this user may see their fds; `[]` when
 * /proc cannot tell. For an EADDRINUSE worth acting on: it names who holds
 * the port (another `instar run`, a copy of the app), which bind(2) does not.
 * At most `max` of them, and the scan is bounded (HOLDER_SCAN): it reads
 * /proc synchronously, on the event loop, and a host may run thousands of
 * processes holding thousands of fds each; past the bound it answers with
 * what it found.
 */
export function tcpListenerHolders(port: number, max: number = 3): SocketHolder[] {
  try {
    const inodes = new Set(TCP_TABLES.flatMap((t) => inState(readTextSync(t), port, "0A")));
    if (inodes.size === 0) return [];
    const out: SocketHolder[] = [];
    const budget = { fds: HOLDER_SCAN.fds };
    const pids = readDirSync("/proc").map(Number).filter((p) => Number.isInteger(p) && p > 0);
    for (const pid of pids.slice(0, HOLDER_SCAN.processes)) {
      if (out.length >= max || budget.fds <= 0) break;
      if (holdsAny(pid, inodes, budget)) out.push({ pid, command: commandLine(pid) });
    }
    return out;
  } catch {
    return [];
  }
}

/** Whether `pid` holds one of `inodes`, reading at most `budget.fds` fd links (spent from it). */
function holdsAny(pid: number, inodes: Set<number>, budget: { fds: number }): boolean {
  try {
    const fds = openFds(pid).slice(0, budget.fds);
    budget.fds -= fds.length;
    return fds.some((fd) => inodes.has(socketInode(fd, pid) ?? -1));
  } catch {
    return false; // another user's process, or gone
  }
}

function commandLine(pid: number): string | null {
  try {
    return readNulList(`/proc/${pid}/cmdline`).join(" ") || null;
  } catch {
    return null;
  }
}

/** Inodes of the connected Unix stream sockets bound to `path` (the ones a listener there accepted). */
export function unixConnectionInodes(path: string): Set<number> {
  const out = new Set<number>();
  for (const line of readTextSync("/proc/net/unix").split("\n").slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected, Type 0001 stream
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[4] === "0001" && f[5] === "03" && f.slice(7).join(" ") === path) {
      out.add(Number(f[6]));
    }
  }
  return out;
}

/**
 * Established TCP connections of process `pid` on local `port`, from
 * /proc/net/tcp{,6} and /proc/<pid>/fd; `null` without procfs. The tables hold
 * every socket of the network namespace (tens of thousands of TIME_WAIT
 * entries on a busy machine): they are read off the event loop and scanned
 * for the port without splitting every line.
 */
export async function tcpConnections(
  port: number,
  pid: number | "self" = "self",
): Promise<number | null> {
  try {
    const tables = await Promise.all(TCP_TABLES.map(readText));
    const theirs = await socketInodesAsync(pid);
    return tables.flatMap((t) => established(t, port)).filter((i) => theirs.has(i)).length;
  } catch {
    return null;
  }
}

/** The inodes of the sockets process `pid` holds open, read off the event loop: a server may hold thousands of connections. */
export async function socketInodesAsync(pid: number | "self"): Promise<Set<number>> {
  const dir = `/proc/${pid}/fd`;
  const links = await Promise.all(
    (await readDir(dir)).map((e) => readLink(`${dir}/${e}`).catch(() => "")),
  );
  const out = new Set<number>();
  for (const l of links) {
    const m = SOCKET_LINK.exec(l);
    if (m) out.add(Number(m[1]));
  }
  return out;
}

// The inodes of the ESTABLISHED (st 01) entries of a /proc/net/tcp{,6} table whose local port is
// `port`: the table holds every socket of the namespace, so it is scanned for the port instead of
// split line by line.
function established(table: string, port: number): number[] {
  return inState(table, port, "01");
}

// The inodes of the entries in state `st` (01 ESTABLISHED, 0A LISTEN) whose local port is `port`.
function inState(table: string, port: number, st: string): number[] {
  const needle = `:${port.toString(16).toUpperCase().padStart(4, "0")} `;
  const out: number[] = [];
  for (let at = table.indexOf(needle); at >= 0; at = table.indexOf(needle, at + 1)) {
    const start = table.lastIndexOf("\n", at) + 1;
    const end = table.indexOf("\n", at);
    const f = table.slice(start, end < 0 ? undefined : end).trim().split(/\s+/);
    // sl local_address rem_address st …: only a match in local_address counts
    if (f.length > 9 && f[1].endsWith(needle.trimEnd()) && f[3] === st) out.push(Number(f[9]));
    if (end < 0) break;
    at = end;
  }
  return out;
}

/**
 * The pid of process `pid` in its own (innermost) pid namespace: the last
 * field of `NSpid:` in `/proc/<pid>/status`; 1 for a namespace's init. `null`
 * when it cannot be read.
 */
export function namespacePid(pid: number | "self" = "self"): number | null {
  try {
    const m = /^NSpid:\s*([\d\s]+)$/m.exec(readTextSync(`/proc/${pid}/status`));
    const last = m?.[1].trim().split(/\s+/).at(-1);
    return last ? Number(last) : null;
  } catch {
    return null;
  }
}

/** The program file process `pid` runs (`/proc/<pid>/exe`, without " (deleted)"), or `null`. */
export function executablePath(pid: number): string | null {
  try {
    return readLinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "");
  } catch {
    return null;
  }
}
