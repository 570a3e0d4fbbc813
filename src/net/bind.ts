/**
 * Binding a fresh socket, for listeners (src/net/listener.ts) and datagram
 * sockets (src/net/datagram.ts) alike: option checks, bind(2) with a message
 * saying what the errno means, and the replacement of a Unix socket file
 * nobody serves any more.
 *
 * @module
 */

import type * as Fs from "node:fs";
import * as host from "../host.ts";
import { invalid, SystemError } from "../errors.ts";
import { bind, C, close as closeFd, connect, socket } from "../ffi/mod.ts";
import { decode } from "../ffi/sockaddr.ts";

// node:fs is loaded by the first call that needs it, not at start-up (memory: docs/benchmarks.md).
const fs = (): typeof Fs => host.builtin("node:fs");

/** Throws `INVALID_ARGUMENT` unless `port` is an integer from 0 to 65535; returns it. */
export function checkPort(port: unknown): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535) {
    invalid("port", port, "an integer from 0 to 65535");
  }
  return port;
}

/** Throws `INVALID_ARGUMENT` unless `mode` is absent or a file mode. */
export function checkMode(mode: unknown): void {
  if (
    mode !== undefined &&
    (typeof mode !== "number" || !Number.isInteger(mode) || mode < 0 || mode > 0o7777)
  ) {
    invalid("mode", mode, "a file mode from 0 to 0o7777, e.g. 0o660");
  }
}

/** Whether an encoded IPv6 address is "::" (every address: IPv4 is taken too, IPV6_V6ONLY off). */
export function isV6Any(sa: Uint8Array): boolean {
  return (decode(sa) as { hostname: string }).hostname === "::";
}

/** `bind(2)`; a failure says what the errno means: "cannot <verb> <where>: …". */
export function bindExplained(fd: number, sa: Uint8Array, where: string, verb: string): void {
  try {
    bind(fd, sa);
  } catch (err) {
    if (!(err instanceof SystemError)) throw err;
    const why: Record<string, string> = {
      EADDRINUSE: `cannot ${verb} ${where}: the address is already in use`,
      EACCES: `cannot ${verb} ${where}: permission denied (ports below 1024 need ` +
        "CAP_NET_BIND_SERVICE; Unix paths need write access to the directory)",
      EADDRNOTAVAIL: `cannot ${verb} ${where}: that address is not on this machine`,
    };
    throw new SystemError("bind", err.errno, err.code, why[err.code] ?? `cannot ${verb} ${where}`);
  }
}

/** Where and how a Unix socket of `type` (SOCK_STREAM or SOCK_DGRAM) is bound. */
export interface UnixBind {
  path: string;
  mode?: number;
  type: number;
  /** For messages: "unix:/run/app.sock". */
  where: string;
  /** For messages: "listen on", "bind". */
  verb: string;
  /** The message when the path is taken by a live socket or a non-socket; absent: bind's own. */
  busy?: string;
}

/**
 * Binds `fd` to a Unix path. A socket file nobody serves any more (a crashed
 * server's: connect(2) is refused) is replaced; `mode` is applied to the file.
 */
export function bindUnix(fd: number, sa: Uint8Array, o: UnixBind): void {
  const abstract = o.path.startsWith("@");
  try {
    bindExplained(fd, sa, o.where, o.verb);
  } catch (err) {
    if ((err as SystemError).code !== "EADDRINUSE" || abstract) throw err;
    if (!isStaleSocket(o.path, sa, o.type)) {
      if (o.busy === undefined) throw err;
      throw new SystemError("bind", (err as SystemError).errno, "EADDRINUSE", o.busy);
    }
    fs().unlinkSync(o.path);
    bindExplained(fd, sa, o.where, o.verb);
  }
  if (o.mode !== undefined && !abstract) fs().chmodSync(o.path, o.mode);
}

// A socket file whose connect(2) is refused: nobody reads or accepts there any more.
function isStaleSocket(path: string, sa: Uint8Array, type: number): boolean {
  try {
    if (!fs().lstatSync(path).isSocket()) return false;
  } catch {
    return false;
  }
  const probe = socket(C.AF_UNIX, type | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  try {
    connect(probe, sa);
    return false; // someone serves there
  } catch (err) {
    return (err as SystemError).code === "ECONNREFUSED";
  } finally {
    closeFd(probe);
  }
}
