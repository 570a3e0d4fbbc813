/**
 * Established TCP connections by local port, asked of the kernel through
 * the sock_diag netlink interface (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY`)
 * instead of read from /proc/net/tcp{,6}. The kernel sends only the sockets
 * in state ESTABLISHED, as binary records: on a machine holding tens of
 * thousands of TIME_WAIT sockets, reading and scanning the text tables costs
 * 140–280 ms of CPU and stalls the event loop 76–170 ms per count (measured
 * with 88k entries, docs/benchmarks.md); this reads one batch at a time,
 * returning to the event loop in between.
 *
 * Layouts (Linux uapi, the same on x86_64 and aarch64): `struct nlmsghdr`
 * {u32 len, u16 type, u16 flags, u32 seq, u32 pid} = 16 bytes;
 * `struct inet_diag_req_v2` {u8 family, u8 protocol, u8 ext, u8 pad,
 * u32 states, struct inet_diag_sockid id} = 56 bytes; `struct inet_diag_msg`
 * {u8 family, u8 state, u8 timer, u8 retrans, struct inet_diag_sockid id
 * (be16 sport @4, …), u32 expires, u32 rqueue, u32 wqueue, u32 uid,
 * u32 inode @68} = 72 bytes.
 *
 * @module
 */

import * as sys from "../ffi/mod.ts";
import { C } from "../ffi/mod.ts";
import { socketInodesAsync, tcpConnections } from "../proc.ts";

const AF_NETLINK = 16;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const IPPROTO_TCP = 6;
const TCP_ESTABLISHED = 1;
const NLMSG_HDR = 16;
const INODE_AT = 68;
/** A dump batch is at most 32 KiB (or a page); a larger buffer never truncates one. */
const BUFFER = 128 * 1024;
/** A dump never takes more reads than this (each carries hundreds of sockets). */
const MAX_READS = 10_000;

function request(family: number): Uint8Array {
  const buf = new Uint8Array(NLMSG_HDR + 56);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, buf.byteLength, true);
  dv.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
  dv.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  dv.setUint32(8, 1, true); // seq
  buf[NLMSG_HDR] = family;
  buf[NLMSG_HDR + 1] = IPPROTO_TCP;
  dv.setUint32(NLMSG_HDR + 4, 1 << TCP_ESTABLISHED, true);
  return buf;
}

// Adds the inodes of the records in `buf[0, n)` whose local port is wanted; true at the dump's end.
function collect(buf: Uint8Array, n: number, out: Map<number, Set<number>>): boolean {
  const dv = new DataView(buf.buffer, 0, n);
  for (let at = 0; at + NLMSG_HDR <= n;) {
    const len = dv.getUint32(at, true), type = dv.getUint16(at + 4, true);
    if (len < NLMSG_HDR || at + len > n) throw new Error("malformed netlink message");
    if (type === NLMSG_DONE) return true;
    if (type === NLMSG_ERROR) {
      throw new Error(`netlink error ${-dv.getInt32(at + NLMSG_HDR, true)}`);
    }
    if (type === SOCK_DIAG_BY_FAMILY && len >= NLMSG_HDR + 72) {
      const port = dv.getUint16(at + NLMSG_HDR + 4, false); // big-endian
      out.get(port)?.add(dv.getUint32(at + NLMSG_HDR + INODE_AT, true));
    }
    at += (len + 3) & ~3; // NLMSG_ALIGN
  }
  return false;
}

// The kernel makes each batch (~32 KiB, hundreds of sockets) during the read before: one read,
// then back to the event loop, so a server with many connections is never stalled for the count.
async function dump(fd: number, family: number, out: Map<number, Set<number>>): Promise<void> {
  if (sys.write(fd, request(family)) === null) throw new Error("netlink send would block");
  const buf = new Uint8Array(BUFFER);
  let idle = 0;
  for (let reads = 0; reads < MAX_READS; reads++) {
    const n = sys.read(fd, buf);
    if (n === 0 || (n !== null && collect(buf, n, out))) return;
    // Nothing yet (a safety net: the kernel fills the queue as it is read): at most ~1 s.
    if (n === null && ++idle > 100) throw new Error("netlink dump stalled");
    await new Promise((r) => setTimeout(r, n === null ? 10 : 0));
  }
  throw new Error("netlink dump did not end");
}

/**
 * The inodes of the ESTABLISHED TCP sockets (IPv4 and IPv6) of this network
 * namespace whose local port is one of `ports`, by port; `null` when the
 * kernel does not answer (no sock_diag, a seccomp profile): count otherwise.
 */
export async function establishedByPort(
  ports: readonly number[],
): Promise<Map<number, Set<number>> | null> {
  const out = new Map(ports.map((p) => [p, new Set<number>()]));
  if (!ports.length) return out;
  let fd = -1;
  try {
    fd = sys.socket(AF_NETLINK, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK, NETLINK_SOCK_DIAG);
    await dump(fd, C.AF_INET, out);
    await dump(fd, C.AF_INET6, out);
    return out;
  } catch {
    return null;
  } finally {
    if (fd >= 0) sys.close(fd);
  }
}

/**
 * Open (ESTABLISHED) TCP connections on local port `port` held by process
 * `pid`: asked of the kernel through sock_diag, read from /proc/net/tcp when
 * sock_diag is unavailable; `null` when neither answers. A busy host's
 * /proc/net/tcp holds tens of thousands of TIME_WAIT lines that cost 5–14×
 * more CPU to parse than the kernel's binary dump (docs/benchmarks.md).
 */
export async function openConnections(
  port: number,
  pid: number | "self" = "self",
): Promise<number | null> {
  const byPort = await establishedByPort([port]);
  if (!byPort) return tcpConnections(port, pid);
  const held = await socketInodesAsync(pid).catch(() => null);
  if (!held) return null;
  let n = 0;
  for (const inode of byPort.get(port) ?? []) if (held.has(inode)) n++;
  return n;
}
