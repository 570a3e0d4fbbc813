/**
 * instar: zero-downtime graceful restarts for Deno and Bun servers.
 *
 * The running generation starts the new version of the program, passes it its
 * listening sockets, waits for it to say ready, then stops accepting, drains
 * and exits. If the new version crashes, hangs or is broken, the old one never
 * stopped serving.
 *
 * This module is what an application needs. Low-level primitives (the epoll
 * transplant, spawning, sd_notify, socket activation) are in `./unstable`,
 * without a stability promise.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create({ pidFile: "/run/app/app.pid" });
 * const listener = await up.listen({ port: 8080 });
 * (async () => {
 *   for await (const conn of listener) conn.readable.pipeTo(conn.writable).catch(() => {});
 * })();
 * await up.ready();
 * ```
 *
 * @module
 */

export { Upgrader } from "./src/lifecycle/upgrader.ts";
export type { UpgraderOptions } from "./src/lifecycle/options.ts";
export type { UpgraderEvents, UpgraderHandler } from "./src/lifecycle/events.ts";
export type { DatagramSpec, SocketSpec } from "./src/net/specs.ts";
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
export { logLifecycle, type LogOptions } from "./src/lifecycle/log.ts";
export type { EndpointMetrics, GenerationConnections, Metrics } from "./src/observe/metrics.ts";
export type { UpgradeCounts } from "./src/observe/counters.ts";
export type {
  DrainReport,
  UpgradeOutcome,
  UpgradeReport,
  UpgradeTrigger,
} from "./src/observe/report.ts";
export {
  metricsResponse,
  metricsText,
  PROMETHEUS_CONTENT_TYPE,
  prometheusText,
} from "./src/observe/prometheus.ts";
export { healthResponse } from "./src/observe/health.ts";
export { InstarError, SystemError, UpgradeError, UpgradeRefusedError } from "./src/errors.ts";
export type {
  Addr,
  ExitReason,
  NetAddr,
  State,
  UnixAddr,
  UpgradeFailure,
  UpgradeRefusal,
} from "./src/types.ts";
export type { StatusReport } from "./src/protocol.ts";
export type { SpawnBackend } from "./src/process/spawn.ts";
export {
  type Conn,
  type FdListenOptions,
  listen,
  type Listener,
  type ListenOptions,
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
export { readTlsFiles, type TlsFileOptions, type TlsFiles } from "./src/serve/tls_files.ts";
export {
  type NodeHttpServer,
  type NodeServeOptions,
  type NodeServePath,
  type NodeServing,
  serveNode,
  type UpgraderServeNodeOptions,
} from "./src/serve/serve_node.ts";
