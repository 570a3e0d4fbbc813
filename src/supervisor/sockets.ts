/**
 * The listening sockets `instar run --listen` holds for the whole life of the
 * supervisor: while no generation runs (a crash, a restart) the kernel keeps
 * queueing connections on them, so none is refused. Generation 1 gets them
 * the systemd way: fds 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and
 * `LISTEN_PID` (see docs/supervisor.md for why `LISTEN_PID` names the
 * supervisor, with `INSTAR_SUPERVISOR_PID`).
 *
 * @module
 */

import * as sys from "../ffi/mod.ts";
import { type Addr, formatAddr } from "../ffi/sockaddr.ts";
import { openSocket } from "../net/listener.ts";
import { LISTEN_FDS_START, SUPERVISOR_PID_ENV } from "../systemd/activation.ts";
import type { ListenSpec } from "./listen_spec.ts";

/**
 * One socket the supervisor holds.
 *
 * @example
 * ```ts
 * import { type HeldSocket, openHeld } from "./sockets.ts";
 * import { parseListenSpec } from "./listen_spec.ts";
 *
 * const held: HeldSocket[] = await openHeld([parseListenSpec("tcp://127.0.0.1:0")]);
 * console.log(held[0].addr);
 * ```
 */
export interface HeldSocket {
  /** Its `LISTEN_FDNAMES` entry. */
  name: string;
  /** The supervisor's close-on-exec fd, numbered above the fds it is passed as. */
  fd: number;
  /** Where it listens (the real port when 0 was asked for). */
  addr: Addr;
}

/**
 * Opens every `--listen` socket (close-on-exec, held above fd 3 + count so that
 * moving them to 3, 4, … in the child never overwrites one of them). On a
 * failure the ones already open are closed and the error names the spec.
 *
 * @example
 * ```ts
 * import { closeHeld, openHeld } from "./sockets.ts";
 * import { parseListenSpec } from "./listen_spec.ts";
 *
 * const held = await openHeld([parseListenSpec("web=tcp://127.0.0.1:0")]);
 * closeHeld(held);
 * ```
 */
export async function openHeld(specs: readonly ListenSpec[]): Promise<HeldSocket[]> {
  const held: HeldSocket[] = [];
  const floor = LISTEN_FDS_START + specs.length;
  try {
    for (const spec of specs) {
      let s: { fd: number; addr: Addr };
      try {
        s = await openSocket({ backlog: sys.C.SOMAXCONN, ...spec.options });
      } catch (err) {
        (err as Error).message = `--listen ${spec.text}: ${(err as Error).message}`;
        throw err;
      }
      let fd = s.fd;
      if (fd < floor) {
        fd = sys.dupCloexec(s.fd, floor);
        sys.close(s.fd);
      }
      held.push({ name: spec.name, fd, addr: s.addr });
    }
  } catch (err) {
    closeHeld(held);
    throw err;
  }
  return held;
}

/**
 * Closes the held sockets.
 *
 * @example
 * ```ts
 * import { closeHeld } from "./sockets.ts";
 *
 * closeHeld([]);
 * ```
 */
export function closeHeld(held: readonly HeldSocket[]): void {
  for (const h of held) {
    try {
      sys.close(h.fd);
    } catch { /* closed already */ }
  }
}

/**
 * The environment entries and fd moves that pass `held` to a child started by
 * the supervisor `supervisorPid`; nothing when `held` is empty.
 *
 * @example
 * ```ts
 * import { activationFor } from "./sockets.ts";
 *
 * const { env, moves } = activationFor([], 1);
 * console.log(env, moves); // [] []
 * ```
 */
export function activationFor(
  held: readonly HeldSocket[],
  supervisorPid: number,
): { env: string[]; moves: { from: number; to: number }[] } {
  if (held.length === 0) return { env: [], moves: [] };
  return {
    env: [
      `LISTEN_FDS=${held.length}`,
      `LISTEN_FDNAMES=${held.map((h) => h.name).join(":")}`,
      `LISTEN_PID=${supervisorPid}`,
      `${SUPERVISOR_PID_ENV}=${supervisorPid}`,
    ],
    moves: held.map((h, i) => ({ from: h.fd, to: LISTEN_FDS_START + i })),
  };
}

/**
 * "tcp 127.0.0.1:8080 (web)", for log lines.
 *
 * @example
 * ```ts
 * import { describeHeld } from "./sockets.ts";
 *
 * describeHeld({ name: "web", fd: 9, addr: { transport: "tcp", hostname: "127.0.0.1", port: 80 } });
 * ```
 */
export function describeHeld(h: HeldSocket): string {
  return `${formatAddr(h.addr)}${h.name === "unknown" ? "" : ` (${h.name})`}`;
}
