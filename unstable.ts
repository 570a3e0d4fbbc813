/**
 * instar's low-level primitives, for tools built on them: the standalone
 * {@link listen}, {@link serve}, {@link serveNode} and {@link listenDatagram}
 * (one socket for one process: unlike `up.listen`, `up.serve`, `up.serveNode`
 * and `up.listenDatagram` of the main module, what they open does not survive
 * an upgrade), the Prometheus text of a {@link Metrics} object, the epoll
 * transplant that puts a native server on a socket it did not open, pausing
 * a socket in every reactor of the process, spawning without running
 * JavaScript in the child, sd_notify and socket activation. Some rest on
 * undocumented reactor details, and any of them may change in any release;
 * applications use the main module.
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
  type DatagramAddr,
  type DatagramOptions,
  type DatagramSocket,
  type FdDatagramOptions,
  listenDatagram,
  type ReceivedDatagram,
  type UdpDatagramOptions,
  type UnixDatagramOptions,
} from "./src/net/datagram.ts";
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
  type ServeMode,
  type ServeOptions,
  type Server,
  type ServeTarget,
} from "./src/serve/serve.ts";
export {
  type NodeHttpServer,
  type NodeServeOptions,
  type NodeServePath,
  type NodeServing,
  serveNode,
} from "./src/serve/serve_node.ts";
export { PROMETHEUS_CONTENT_TYPE, prometheusText } from "./src/observe/prometheus.ts";
// The types the functions above name, so that this module documents itself.
export type { InstarError } from "./src/errors.ts";
export type { EndpointMetrics, GenerationConnections, Metrics } from "./src/observe/metrics.ts";
export type { UpgradeCounts } from "./src/observe/counters.ts";
export type {
  DrainReport,
  UpgradeOutcome,
  UpgradeReport,
  UpgradeTrigger,
} from "./src/observe/report.ts";
export type { Addr, IdleConnections, NetAddr, State, UnixAddr } from "./src/types.ts";
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
} from "./src/runtime/transplant.ts";
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
export {
  availableBackends,
  spawn,
  type SpawnBackend,
  type SpawnOptions,
} from "./src/process/spawn.ts";
