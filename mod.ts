/**
 * instar: zero-downtime graceful restarts for Deno and Bun servers.
 *
 * The running generation starts the new version of the program, passes it its
 * listening sockets, waits for it to say ready, then stops accepting, drains
 * and exits. If the new version crashes, hangs or is broken, the old one never
 * stopped serving.
 *
 * This module is what an application needs: the {@link Upgrader} (whose
 * `listen`, `serve`, `serveNode` and `listenDatagram` open sockets that
 * survive upgrades), {@link logLifecycle}, the `/metrics` and `/healthz`
 * answers, {@link readTlsFiles} and the errors. Low-level primitives (the
 * standalone `listen`/`serve`, which do not survive upgrades, the epoll
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

// Values: what an application calls.
export { Upgrader } from "./src/lifecycle/upgrader.ts";
export { logLifecycle, type LogOptions } from "./src/lifecycle/log.ts";
export { metricsResponse } from "./src/observe/prometheus.ts";
export { healthResponse } from "./src/observe/health.ts";
export { readTlsFiles, type TlsFileOptions, type TlsFiles } from "./src/serve/tls_files.ts";
export { InstarError, SystemError, UpgradeError, UpgradeRefusedError } from "./src/errors.ts";

// Types: what the Upgrader's options, methods, events and metrics name.
export type { UpgraderOptions } from "./src/lifecycle/options.ts";
export type { Spread, UpgraderEvents, UpgraderHandler } from "./src/lifecycle/events.ts";
export type { DatagramSpec, SocketSpec } from "./src/net/specs.ts";
export type {
  DatagramAddr,
  DatagramSocket,
  ReceivedDatagram,
  UdpDatagramOptions,
  UnixDatagramOptions,
} from "./src/net/datagram.ts";
export type { EndpointMetrics, GenerationConnections, Metrics } from "./src/observe/metrics.ts";
export type { UpgradeCounts } from "./src/observe/counters.ts";
export type {
  DrainReport,
  UpgradeOutcome,
  UpgradeReport,
  UpgradeTrigger,
} from "./src/observe/report.ts";
export type {
  Addr,
  ExitReason,
  IdleConnections,
  NetAddr,
  State,
  UnixAddr,
  UpgradeFailure,
  UpgradeRefusal,
} from "./src/types.ts";
export type { FdLimit, StatusReport } from "./src/protocol/messages.ts";
export type { SpawnBackend } from "./src/process/spawn.ts";
export type { Conn, Listener, TcpListenOptions, UnixListenOptions } from "./src/net/listener.ts";
export type {
  bunServe,
  BunServeOptions,
  DenoServeOptions,
  InstarServeOptions,
  PortableServeOptions,
  RuntimeServeOptions,
  ServeHandler,
  ServeHandlerInfo,
  ServeListenOptions,
  ServeMode,
  Server,
  UpgraderServeOptions,
} from "./src/serve/serve.ts";
export type {
  NodeHttpServer,
  NodeServeOptions,
  NodeServePath,
  NodeServing,
  UpgraderServeNodeOptions,
} from "./src/serve/serve_node.ts";
export type { DedupeMethod } from "./src/runtime/transplant.ts";
