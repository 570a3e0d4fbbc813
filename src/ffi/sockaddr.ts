/**
 * Encoding and decoding `struct sockaddr_in`, `sockaddr_in6` and `sockaddr_un`.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { C, platform } from "./layout.ts";
import type { Addr } from "../types.ts";

export type { Addr, NetAddr, UnixAddr } from "../types.ts";

/** Parses a numeric IPv4 address into 4 bytes, or returns `null`. */
export function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i])) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Parses a numeric IPv6 address (with `::` and a trailing IPv4 part) into 16 bytes, or returns `null`. */
export function parseIPv6(s: string): Uint8Array | null {
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (i === items.length - 1 && it.includes(".")) {
        const v4 = parseIPv4(it);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(it)) {
        out.push(parseInt(it, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array(missing).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Formats 16 bytes as the canonical (RFC 5952) IPv6 text. */
export function formatIPv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[2 * i] << 8) | b[2 * i + 1]);
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** Encodes a numeric IPv4/IPv6 address and port; `null` if `hostname` is not numeric. */
export function encodeInet(hostname: string, port: number): Uint8Array | null {
  const L = platform().layout;
  const v4 = parseIPv4(hostname);
  if (v4) {
    const buf = new Uint8Array(L.sockaddrIn.size);
    const dv = new DataView(buf.buffer);
    dv.setUint16(L.sockaddrIn.family, C.AF_INET, true);
    dv.setUint16(L.sockaddrIn.port, port, false);
    buf.set(v4, L.sockaddrIn.addr);
    return buf;
  }
  const v6 = parseIPv6(hostname);
  if (v6) {
    const buf = new Uint8Array(L.sockaddrIn6.size);
    const dv = new DataView(buf.buffer);
    dv.setUint16(L.sockaddrIn6.family, C.AF_INET6, true);
    dv.setUint16(L.sockaddrIn6.port, port, false);
    buf.set(v6, L.sockaddrIn6.addr);
    return buf;
  }
  return null;
}

/** The longest Unix socket path, in bytes, that fits `sockaddr_un`. */
export function maxUnixPathBytes(): number {
  return platform().layout.sockaddrUn.pathMax - 1;
}

/**
 * Encodes a Unix socket path; a leading `@` names the Linux abstract namespace.
 * Throws `INVALID_ARGUMENT` when the path does not fit.
 */
export function encodeUnix(path: string): Uint8Array {
  const L = platform().layout.sockaddrUn;
  const abstract = path.startsWith("@");
  const bytes = new TextEncoder().encode(abstract ? path.slice(1) : path);
  if (path.length === 0 || bytes.includes(0)) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `Unix socket path ${JSON.stringify(path)} is empty or contains NUL`,
    );
  }
  if (bytes.byteLength > L.pathMax - 1) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `Unix socket path ${JSON.stringify(path)} is ${bytes.byteLength} bytes; ` +
        `sockaddr_un holds at most ${
          L.pathMax - 1
        }: use a shorter path (a relative one, or a shorter directory)`,
    );
  }
  // Abstract addresses are exactly as long as the name; paths carry their NUL.
  const size = L.path + (abstract ? 1 + bytes.byteLength : bytes.byteLength + 1);
  const buf = new Uint8Array(size);
  new DataView(buf.buffer).setUint16(L.family, C.AF_UNIX, true);
  buf.set(bytes, L.path + (abstract ? 1 : 0));
  return buf;
}

/** Decodes a sockaddr written by the kernel. */
export function decode(buf: Uint8Array): Addr {
  const L = platform().layout;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const family = dv.getUint16(0, true);
  if (family === C.AF_INET) {
    const a = buf.subarray(L.sockaddrIn.addr, L.sockaddrIn.addr + 4);
    return {
      transport: "tcp",
      hostname: a.join("."),
      port: dv.getUint16(L.sockaddrIn.port, false),
    };
  }
  if (family === C.AF_INET6) {
    return {
      transport: "tcp",
      hostname: formatIPv6(buf.subarray(L.sockaddrIn6.addr, L.sockaddrIn6.addr + 16)),
      port: dv.getUint16(L.sockaddrIn6.port, false),
    };
  }
  if (family === C.AF_UNIX) {
    const raw = buf.subarray(L.sockaddrUn.path);
    if (raw.byteLength === 0) return { transport: "unix", path: "" };
    if (raw[0] === 0) {
      return { transport: "unix", path: "@" + new TextDecoder().decode(raw.subarray(1)) };
    }
    const end = raw.indexOf(0);
    return {
      transport: "unix",
      path: new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end)),
    };
  }
  throw new InstarError(
    "UNSUPPORTED_ADDRESS",
    `socket address family ${family} is not AF_INET, AF_INET6 or AF_UNIX`,
  );
}

/** A short human form of an address: `127.0.0.1:80`, `[::1]:80`, `unix:/run/x.sock`. */
export function formatAddr(a: Addr): string {
  if (a.transport === "unix") return `unix:${a.path}`;
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}
