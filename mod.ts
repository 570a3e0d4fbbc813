/**
 * instar: zero-downtime graceful restarts for Deno and Bun servers.
 *
 * The running generation starts the new version of the program, passes it its
 * listening sockets, waits for it to say ready, then stops accepting, drains
 * and exits. If the new version crashes, hangs or is broken, the old one never
 * stopped serving.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create({ pidFile: "/tmp/app.pid" });
 * const listener = await up.listen({ port: 8080 });
 * (async () => {
 *   for await (const conn of listener) conn.readable.pipeTo(conn.writable).catch(() => {});
 * })();
 * await up.ready();
 * ```
 *
 * @module
 */

export { InstarError, SystemError } from "./src/errors.ts";
export type { Addr, NetAddr, UnixAddr } from "./src/ffi/sockaddr.ts";
export {
  type ExitReason,
  logLifecycle,
  type State,
  UpgradeError,
  type UpgradeFailure,
  Upgrader,
  type UpgraderEvents,
  type UpgraderHandler,
  type UpgraderOptions,
} from "./src/lifecycle/upgrader.ts";
export type { StatusReport } from "./src/protocol.ts";
export {
  type Conn,
  type FdListenOptions,
  listen,
  type Listener,
  type ListenOptions,
  type OpenSocket,
  openSocket,
  type TcpListenOptions,
  type UnixListenOptions,
} from "./src/net/listener.ts";
export {
  type bunServe,
  type BunServeOptions,
  type DenoServeOptions,
  type InstarServeOptions,
  type PortableServeOptions,
  type RuntimeServeOptions,
  serve,
  type ServeHandler,
  type ServeHandlerInfo,
  type ServeListenOptions,
  type ServeMode,
  type ServeOptions,
  type Server,
  type ServeTarget,
  type UpgraderServeOptions,
} from "./src/serve/serve.ts";
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
export {
  type ActivatedRequest,
  type ActivatedSocket,
  activatedSockets,
  type Activation,
  type ActivationOptions,
  encodeNotify,
  type Env,
  findActivated,
  LISTEN_FDS_START,
  type NotifierOptions,
  NOTIFY_MAX_BYTES,
  type NotifyFields,
  SystemdNotifier,
  systemdNotifier,
} from "./src/process/systemd.ts";
export {
  availableBackends,
  spawn,
  type SpawnBackend,
  type SpawnOptions,
} from "./src/process/spawn.ts";
