/**
 * instar's low-level primitives, for tools built on them: the epoll
 * transplant that puts a native server on a socket it did not open, pausing
 * a socket in every reactor of the process, spawning without running
 * JavaScript in the child, sd_notify and socket activation. They rest on
 * undocumented reactor details and may change in any release; applications
 * use the main module.
 *
 * @example
 * ```ts
 * import { activatedSockets } from "@instar/instar/unstable";
 *
 * for (const s of activatedSockets().sockets) console.log(s.fd, s.name, s.address);
 * ```
 *
 * @module
 */

export { type OpenSocket, openSocket } from "./src/net/listener.ts";
export {
  type DedupeMethod,
  type EpollRegistration,
  listeningFdsAt,
  pauseAccepting,
  type PausedSocket,
  pauseSocket,
  resumeAccepting,
  resumeSocket,
  transplant,
  type TransplantInfo,
  type TransplantOptions,
} from "./src/net/transplant.ts";
export type { Env } from "./src/systemd/env.ts";
export {
  encodeNotify,
  type NotifierOptions,
  NOTIFY_MAX_BYTES,
  type NotifyFields,
  SystemdNotifier,
  systemdNotifier,
} from "./src/systemd/notify.ts";
export {
  type ActivatedRequest,
  type ActivatedSocket,
  activatedSockets,
  type Activation,
  type ActivationOptions,
  findActivated,
  LISTEN_FDS_START,
} from "./src/systemd/activation.ts";
export { availableBackends, spawn, type SpawnOptions } from "./src/process/spawn.ts";
