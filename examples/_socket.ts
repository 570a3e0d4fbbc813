// For the examples: a listening TCP socket made with libc, as instar hands
// them to servers (close-on-exec, non-blocking, SO_REUSEADDR).
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { encodeInet } from "../src/ffi/sockaddr.ts";

/** A listening socket on `hostname`:`port`; returns its fd. */
export function listenSocket(hostname: string, port: number): number {
  const addr = encodeInet(hostname, port);
  if (!addr) throw new Error(`${hostname} is not a numeric address`);
  const family = hostname.includes(":") ? C.AF_INET6 : C.AF_INET;
  const fd = sys.socket(family, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.setsockoptInt(fd, C.SOL_SOCKET, C.SO_REUSEADDR, 1);
  sys.bind(fd, addr, `${hostname}:${port}`);
  sys.listenFd(fd, C.SOMAXCONN);
  return fd;
}
