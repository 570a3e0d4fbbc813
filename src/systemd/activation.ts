/**
 * systemd's socket activation without libsystemd: `$LISTEN_PID`,
 * `$LISTEN_FDS`, `$LISTEN_FDNAMES`, fds from 3 on.
 *
 * @module
 */

import * as host from "../host.ts";
import type * as Path from "node:path";
import { InstarError } from "../errors.ts";
import { C, fcntl, getpid, getppid, getsockname, getsockoptInt, setCloexec } from "../ffi/mod.ts";
import { type Addr, decode, parseIPv4, parseIPv6 } from "../ffi/sockaddr.ts";
import type { Env } from "./env.ts";

// node:path is loaded by the first call that needs it, not at start-up (memory: docs/benchmarks.md).
const path = (): typeof Path => host.builtin("node:path");

/**
 * The first fd systemd passes (`SD_LISTEN_FDS_START`).
 *
 * @example
 * ```ts
 * import { LISTEN_FDS_START } from "@instar/instar/unstable";
 *
 * console.log(`systemd passes sockets from fd ${LISTEN_FDS_START} on`);
 * ```
 */
export const LISTEN_FDS_START = 3;

/**
 * One socket the service manager passed.
 *
 * @example
 * ```ts
 * import { type ActivatedSocket, activatedSockets } from "@instar/instar/unstable";
 *
 * const sockets: ActivatedSocket[] = activatedSockets().sockets;
 * for (const s of sockets) console.log(s.fd, s.name, s.kind, s.listening);
 * ```
 */
export interface ActivatedSocket {
  /** The fd (3, 4, …); close-on-exec from now on. */
  fd: number;
  /** Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`), `"unknown"` when unnamed. */
  name: string;
  /**
   * `stream`, `dgram` or `seqpacket` for sockets; `other` for fds that are not
   * sockets (`ListenFIFO=`, `ListenSpecial=`, …).
   */
  kind: "stream" | "dgram" | "seqpacket" | "other";
  /** Whether it is a listening socket (`false` for a connection passed with `Accept=yes`). */
  listening: boolean;
  /**
   * Its local address, or `null` for a socket of another family (netlink, …)
   * or a non-socket. An AF_INET/AF_INET6 address says `transport: "tcp"`
   * whatever the `kind`: look at `kind` for UDP.
   */
  address: Addr | null;
}

/**
 * What {@link activatedSockets} found.
 *
 * @example
 * ```ts
 * import { type Activation, activatedSockets } from "@instar/instar/unstable";
 *
 * const activation: Activation = activatedSockets();
 * console.log(activation.sockets.length);
 * ```
 */
export interface Activation {
  /** The sockets passed to this process, in fd order; empty when none were. */
  sockets: ActivatedSocket[];
  /**
   * Set when `LISTEN_FDS` was present but is not meant for this process
   * (`LISTEN_PID` names another process, or is missing), saying so; those
   * fds were left alone.
   */
  ignored?: string;
}

/**
 * Options of {@link activatedSockets}.
 *
 * @example
 * ```ts
 * import { activatedSockets, type ActivationOptions } from "@instar/instar/unstable";
 *
 * const options: ActivationOptions = { env: { LISTEN_PID: "1", LISTEN_FDS: "0" } };
 * console.log(activatedSockets(options).sockets);
 * ```
 */
export interface ActivationOptions {
  /** Where `LISTEN_*` are read from and deleted from. Default: `process.env`. */
  env?: Env;
  /** The pid `LISTEN_PID` must name. Default: this process's. */
  pid?: number;
}

let cached: Activation | undefined;

/**
 * Set by `instar run` to its own pid in every generation's environment. With
 * `LISTEN_PID` equal to it and to the parent's pid, the passed fds are this
 * process's (docs/supervisor.md: a supervisor cannot put the child's pid in
 * `LISTEN_PID` before the exec without running code in the child).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { SUPERVISOR_PID_ENV } from "./activation.ts";
 *
 * console.log("supervised by", process.env[SUPERVISOR_PID_ENV] ?? "nobody");
 * ```
 */
export const SUPERVISOR_PID_ENV = "INSTAR_SUPERVISOR_PID";

const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;

function malformed(variable: string, value: string, expected: string): never {
  throw new InstarError(
    "INVALID_ACTIVATION",
    `${variable} is ${JSON.stringify(value)}; expected ${expected}. ` +
      "It is set by the service manager (or systemd-socket-activate): check the unit, " +
      "or unset LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES if nothing passes sockets",
  );
}

/**
 * The sockets systemd passed to this process by socket activation
 * (`sd_listen_fds_with_names`). Reads `LISTEN_PID`, `LISTEN_FDS` and
 * `LISTEN_FDNAMES`, marks every passed fd close-on-exec (instar hands them to
 * later generations explicitly, so they must not leak into unrelated
 * children), and deletes the three variables from the environment so that no
 * child mistakes them for its own. With the default environment the first
 * call's result is remembered and returned by every later call.
 *
 * When `LISTEN_PID` is not this process, the fds are not ours: they are left
 * untouched and `ignored` says why. Malformed values (`LISTEN_FDS=abc`, a
 * name count that differs from `LISTEN_FDS`, a passed fd that is not open)
 * throw `INVALID_ACTIVATION`.
 *
 * @example
 * ```ts
 * import { activatedSockets, findActivated } from "@instar/instar/unstable";
 *
 * const { sockets } = activatedSockets();
 * const web = findActivated(sockets, { name: "web", port: 8080 });
 * if (web) console.log(`systemd passed fd ${web.fd}`);
 * ```
 */
export function activatedSockets(options: ActivationOptions = {}): Activation {
  const useProcessEnv = options.env === undefined;
  if (useProcessEnv && cached && options.pid === undefined) return cached;
  const env = options.env ?? (host.envRecord() as Env);
  const pidText = env.LISTEN_PID;
  const fdsText = env.LISTEN_FDS;
  const namesText = env.LISTEN_FDNAMES;
  // Consumed whatever happens next, as sd_listen_fds(unset_environment=1) does.
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  const ourPid = options.pid ?? getpid();
  // `instar run --listen` cannot know its child's pid before the exec: it names itself in
  // LISTEN_PID and in SUPERVISOR_PID_ENV, and the fds are ours when it is our parent.
  const bySupervisor = pidText !== undefined && pidText === env[SUPERVISOR_PID_ENV] &&
    options.pid === undefined && Number(pidText) === getppid();
  const result = readActivation(
    pidText,
    fdsText,
    namesText,
    bySupervisor ? Number(pidText) : ourPid,
  );
  if (useProcessEnv && options.pid === undefined) cached = result;
  return result;
}

function readActivation(
  pidText: string | undefined,
  fdsText: string | undefined,
  namesText: string | undefined,
  ourPid: number,
): Activation {
  if (fdsText === undefined || fdsText === "") return { sockets: [] };
  if (!DECIMAL.test(fdsText)) malformed("LISTEN_FDS", fdsText, "a decimal count of fds");
  const count = Number(fdsText);
  if (pidText === undefined || pidText === "") {
    return {
      sockets: [],
      ignored: `LISTEN_FDS=${fdsText} came without LISTEN_PID, so the fds are not known to be ours`,
    };
  }
  if (!DECIMAL.test(pidText) || Number(pidText) === 0) {
    malformed("LISTEN_PID", pidText, "the decimal pid of the process the fds are for");
  }
  if (Number(pidText) !== ourPid) {
    return {
      sockets: [],
      ignored: `LISTEN_PID=${pidText} names another process (this is ${ourPid}): ` +
        `its ${count} fd(s) are not ours and were left alone`,
    };
  }
  if (count > 65536) malformed("LISTEN_FDS", fdsText, "at most 65536 fds");
  let names: string[];
  if (namesText === undefined) {
    names = new Array(count).fill("unknown");
  } else {
    names = count === 0 && namesText === "" ? [] : namesText.split(":");
    if (names.length !== count) {
      malformed("LISTEN_FDNAMES", namesText, `${count} colon-separated name(s), one per fd`);
    }
  }
  const sockets: ActivatedSocket[] = [];
  for (let i = 0; i < count; i++) {
    const fd = LISTEN_FDS_START + i;
    try {
      fcntl(fd, C.F_GETFD);
    } catch (err) {
      throw new InstarError(
        "INVALID_ACTIVATION",
        `LISTEN_FDS=${count} but fd ${fd} is not open: the service manager's fds were closed ` +
          "before instar looked (or LISTEN_FDS is wrong)",
        { cause: err },
      );
    }
    setCloexec(fd, true);
    sockets.push({ fd, name: names[i] === "" ? "unknown" : names[i], ...describe(fd) });
  }
  return { sockets };
}

const SO_TYPES: Record<number, ActivatedSocket["kind"]> = {
  1: "stream",
  2: "dgram",
  5: "seqpacket",
};

function describe(fd: number): Pick<ActivatedSocket, "kind" | "listening" | "address"> {
  let type: number;
  try {
    type = getsockoptInt(fd, C.SOL_SOCKET, C.SO_TYPE);
  } catch {
    return { kind: "other", listening: false, address: null }; // ENOTSOCK: a FIFO or special file
  }
  const kind = SO_TYPES[type] ?? "other";
  const listening = getsockoptInt(fd, C.SOL_SOCKET, C.SO_ACCEPTCONN) !== 0;
  let address: Addr | null;
  try {
    address = decode(getsockname(fd));
  } catch (err) {
    if (!(err instanceof InstarError) || err.code !== "UNSUPPORTED_ADDRESS") throw err;
    address = null;
  }
  return { kind, listening, address };
}

/**
 * What {@link findActivated} looks for: a name, an address, or both (name first).
 *
 * @example
 * ```ts
 * import { type ActivatedRequest, activatedSockets, findActivated } from "@instar/instar/unstable";
 *
 * const want: ActivatedRequest = { name: "web", port: 8080 };
 * const web = findActivated(activatedSockets().sockets, want);
 * ```
 */
export interface ActivatedRequest {
  /** A `FileDescriptorName=`; matched first. */
  name?: string;
  /** Numeric address, `localhost`, or omitted/`0.0.0.0`/`::` for any; with `port`. */
  hostname?: string;
  /** TCP port; `0` never matches an address (it asks for a fresh port). */
  port?: number;
  /** Unix socket path or `@abstract` name; relative paths resolve against the working directory. */
  path?: string;
}

function canonicalHost(h: string): string | null {
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (parseIPv4(h)) return h;
  const v6 = parseIPv6(h);
  if (!v6) return null;
  if (v6.slice(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) {
    return v6.slice(12).join("."); // ::ffff:a.b.c.d is the IPv4 address
  }
  return Array.from(v6, (b) => b.toString(16).padStart(2, "0")).join("");
}

const ANY = new Set(["0.0.0.0", "00000000000000000000000000000000"]);
const LOOPBACK = new Set(["127.0.0.1", "00000000000000000000000000000001"]);

function hostMatches(wanted: string | undefined, actual: string): boolean {
  if (wanted === undefined || wanted === "") return true;
  const a = canonicalHost(actual);
  if (a === null) return false;
  if (wanted === "localhost") return LOOPBACK.has(a);
  const w = canonicalHost(wanted);
  if (w === null) return false;
  // systemd's ListenStream=8080 binds [::]:8080 dual-stack: any wildcard matches any wildcard.
  return w === a || (ANY.has(w) && ANY.has(a));
}

/**
 * Finds the activated socket for a listen request: the first socket named
 * `request.name`, else the first listening stream socket whose address
 * matches `hostname`/`port` or `path`. Port 0 and a missing address never
 * match by address. Returns `undefined` when nothing matches.
 *
 * @example
 * ```ts
 * import { activatedSockets, findActivated } from "@instar/instar/unstable";
 *
 * const { sockets } = activatedSockets();
 * const api = findActivated(sockets, { hostname: "127.0.0.1", port: 8080 });
 * const admin = findActivated(sockets, { path: "/run/app/admin.sock" });
 * ```
 */
export function findActivated(
  sockets: readonly ActivatedSocket[],
  request: ActivatedRequest,
): ActivatedSocket | undefined {
  if (request.name !== undefined) {
    const byName = sockets.find((s) => s.name === request.name);
    if (byName) return byName;
  }
  const streams = sockets.filter((s) => s.kind === "stream" && s.listening && s.address);
  if (request.path !== undefined && request.path !== "") {
    const want = request.path.startsWith("@") ? request.path : path().resolve(request.path);
    return streams.find((s) => s.address!.transport === "unix" && s.address!.path === want);
  }
  if (request.port !== undefined && request.port !== 0) {
    return streams.find((s) => {
      const a = s.address!;
      return a.transport === "tcp" && a.port === request.port &&
        hostMatches(request.hostname, a.hostname);
    });
  }
  return undefined;
}
