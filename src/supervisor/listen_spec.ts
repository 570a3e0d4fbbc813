/**
 * `instar run --listen` specs: `[name=]tcp://host:port` or `[name=]unix:///path`
 * (`unix://@name` for the abstract namespace), parsed into the options of
 * `openSocket()` and the name the socket gets in `LISTEN_FDNAMES`.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import type { TcpListenOptions, UnixListenOptions } from "../net/listener.ts";

/**
 * One parsed `--listen` spec.
 *
 * @example
 * ```ts
 * import { type ListenSpec, parseListenSpec } from "./listen_spec.ts";
 *
 * const spec: ListenSpec = parseListenSpec("web=tcp://127.0.0.1:8080");
 * console.log(spec.name, spec.options); // "web" { hostname: "127.0.0.1", port: 8080 }
 * ```
 */
export interface ListenSpec {
  /** What was given on the command line. */
  text: string;
  /** The `LISTEN_FDNAMES` entry: the given name, else `unknown` (as systemd says). */
  name: string;
  /** Where to listen. */
  options: TcpListenOptions | UnixListenOptions;
}

// systemd's FileDescriptorName=: printable ASCII without ':' (the list separator), ≤ 255 bytes.
const NAME = /^[A-Za-z0-9_.@+-]{1,255}$/;

function bad(text: string, why: string): never {
  throw new InstarError(
    "INVALID_ARGUMENT",
    `--listen ${JSON.stringify(text)}: ${why}; expected [name=]tcp://HOST:PORT ` +
      "(e.g. tcp://0.0.0.0:8080, tcp://[::1]:0) or [name=]unix:///absolute/path",
  );
}

/**
 * Parses one `--listen` value; throws `INVALID_ARGUMENT` naming what is wrong.
 *
 * @example
 * ```ts
 * import { parseListenSpec } from "./listen_spec.ts";
 *
 * parseListenSpec("tcp://[::1]:0").options; // { hostname: "::1", port: 0 }
 * parseListenSpec("api=unix:///run/app.sock").options; // { path: "/run/app.sock" }
 * ```
 */
export function parseListenSpec(text: string): ListenSpec {
  if (typeof text !== "string" || text === "" || text.includes("\0")) bad(String(text), "empty");
  const m = /^(?:([^=:/]+)=)?([a-z]+):\/\/(.*)$/.exec(text);
  if (!m) bad(text, "no scheme");
  const [, rawName, scheme, rest] = m;
  if (rawName !== undefined && !NAME.test(rawName)) {
    bad(text, `the name ${JSON.stringify(rawName)} is not 1-255 of [A-Za-z0-9_.@+-]`);
  }
  const name = rawName ?? "unknown";
  if (scheme === "unix") {
    if (!rest.startsWith("/") && !rest.startsWith("@")) {
      bad(text, "a Unix socket needs an absolute path (unix:///run/app.sock) or @abstract");
    }
    if (rest.length < 2) bad(text, "the Unix socket path is empty");
    return { text, name, options: { path: rest } };
  }
  if (scheme !== "tcp") bad(text, `unknown scheme ${JSON.stringify(scheme)}`);
  const hp = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\[\]:/]+)):([0-9]{1,5})$/.exec(rest);
  if (!hp) bad(text, "the address is not HOST:PORT (IPv6 in brackets)");
  const port = Number(hp[3]);
  if (port > 65535) bad(text, `port ${port} is above 65535`);
  return { text, name, options: { hostname: hp[1] ?? hp[2], port } };
}
