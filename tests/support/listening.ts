/**
 * Which listening sockets a process holds, read from /proc: its fds' socket
 * inodes matched against /proc/<pid>/net/{tcp,tcp6,unix}. Tells the serve
 * paths apart from outside (a fallback keeps the native server listening on
 * a throwaway address; a transplant leaves only the real socket) and shows a
 * TCP listener where there should be none. Test support, not a test file.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { socketInodes as procSocketInodes } from "../../src/proc.ts";

/** The listening sockets of `pid`: TCP as `host:port` (hex host as in /proc), Unix by path. */
export interface ListeningSockets {
  /** Local addresses of listening TCP sockets, e.g. `127.0.0.1:8080`, `[::1]:8080`, one per fd. */
  tcp: string[];
  /** Paths (`@name` for abstract ones, "" for unnamed) of listening Unix stream sockets, one per fd. */
  unix: string[];
}

// The socket inodes `pid` holds, as the /proc tables spell them.
function socketInodes(pid: number | "self"): string[] {
  return [...procSocketInodes(pid).keys()].map(String);
}

function ipv4(hex: string): string {
  const n = parseInt(hex, 16);
  return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join(".");
}

function ipv6(hex: string): string {
  const words: string[] = [];
  for (let i = 0; i < 32; i += 8) {
    const w = hex.slice(i, i + 8).match(/../g)!.reverse().join("");
    words.push(w.slice(0, 4), w.slice(4));
  }
  return words.map((w) => parseInt(w, 16).toString(16)).join(":").replace(/(^|:)0(:0)+(:|$)/, "::");
}

/** Parses /proc/net/tcp{,6} lines; listening sockets by inode. */
function listeningTcpLines(lines: string[], v6: boolean, out: Map<string, string>): void {
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== "0A") continue; // 0A: TCP_LISTEN
    const [host, port] = f[1].split(":");
    const h = v6 ? `[${ipv6(host)}]` : ipv4(host);
    out.set(f[9], `${h}:${parseInt(port, 16)}`);
  }
}

/**
 * The listening TCP sockets of `pid`, like {@link listeningSockets}, without
 * blocking the event loop: after a load test the namespace's /proc/net/tcp
 * holds tens of thousands of TIME_WAIT lines, and reading and splitting it
 * synchronously stalls this process (and a load client running in it) for a
 * quarter of a second — long enough for a draining server to take every
 * connection of the stalled client for idle. `grep` in a child process picks
 * the listening lines.
 */
export async function listeningTcpAsync(pid: number): Promise<string[]> {
  const files = [`/proc/${pid}/net/tcp`, `/proc/${pid}/net/tcp6`];
  const out = await new Promise<string>((resolve) => {
    execFile("grep", ["-sH", " 0A ", ...files], (_err, stdout) => resolve(String(stdout ?? "")));
  });
  const listening = new Map<string, string>();
  for (const [file, v6] of [[files[0], false], [files[1], true]] as const) {
    const lines = out.split("\n").filter((l) => l.startsWith(file + ":")).map((l) =>
      l.slice(file.length + 1)
    );
    listeningTcpLines(lines, v6, listening);
  }
  return socketInodes(pid).map((i) => listening.get(i)).filter((a): a is string => !!a);
}

/** Every listening TCP and Unix stream socket `pid` holds an fd of. */
export function listeningSockets(pid: number | "self"): ListeningSockets {
  const mine = socketInodes(pid);
  const tcp: string[] = [], unix: string[] = [];
  const listeningTcp = new Map<string, string>();
  for (const [file, v6] of [["tcp", false], ["tcp6", true]] as const) {
    let text = "";
    try {
      text = readFileSync(`/proc/${pid}/net/${file}`, "utf8");
    } catch { /* no IPv6 */ }
    listeningTcpLines(text.split("\n").slice(1), v6, listeningTcp);
  }
  const listeningUnix = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/net/unix`, "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    // Flags 00010000 (__SO_ACCEPTCON), type 0001 (SOCK_STREAM)
    if (f.length < 7 || f[3] !== "00010000" || f[4] !== "0001") continue;
    listeningUnix.set(f[6], f[7] ?? "");
  }
  for (const inode of mine) {
    const t = listeningTcp.get(inode);
    if (t !== undefined) tcp.push(t);
    const u = listeningUnix.get(inode);
    if (u !== undefined) unix.push(u);
  }
  return { tcp, unix };
}
