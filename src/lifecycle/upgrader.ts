/**
 * The lifecycle of one generation: adopt the listeners of the previous
 * generation, tell it when this one is ready, start the next one on demand,
 * and drain when this generation must stop.
 *
 * @module
 */

import process from "node:process";
import {
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import * as sys from "../ffi/mod.ts";
import { C, signalName, SIGNALS } from "../ffi/mod.ts";
import { InstarError, invalid } from "../errors.ts";
import { type Addr, formatAddr } from "../ffi/sockaddr.ts";
import { listen, type Listener, type ListenOptions, openSocket } from "../net/listener.ts";
import { serve, type Server, type UpgraderServeOptions } from "../serve/serve.ts";
import { checkOneObject, splitListenOptions } from "../serve/options.ts";
import { type PausedSocket, pauseSocket, resumeSocket } from "../net/transplant.ts";
import { spawn, type SpawnBackend } from "../process/spawn.ts";
import {
  type ActivatedSocket,
  activatedSockets,
  findActivated,
  type SystemdNotifier,
  systemdNotifier,
} from "../process/systemd.ts";
import {
  Channel,
  checkListeningFd,
  connectControl,
  CONTROL_FD_ENV,
  type Hello,
  type ListenerMeta,
  messageOf,
  nobodyThere,
  PROTOCOL_VERSION,
  protocolError,
  type StatusReport,
  validateHello,
} from "../protocol.ts";
import { processRuns } from "../proc.ts";

/** Why a generation stops: a newer one took over, or it was told to stop. */
export type ExitReason = "upgrade" | "stop";

/** Where a generation is in its life, for readiness probes and `instar status`. */
export type State = "starting" | "ready" | "upgrading" | "draining" | "stopped";

/** Why an upgrade did not happen. */
export type UpgradeFailure =
  | "exited"
  | "killed"
  | "ready-timeout"
  | "exec-failed"
  | "protocol-error"
  | "in-progress"
  | "not-ready"
  | "stopping";

/**
 * An upgrade failed or was refused; `reason` says why. The running generation
 * keeps serving in every case.
 *
 * @example
 * ```ts
 * import { Upgrader, UpgradeError } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * try {
 *   const pid = await up.upgrade();
 *   console.log("new generation", pid);
 * } catch (err) {
 *   if (err instanceof UpgradeError) console.error(err.reason, err.message);
 * }
 * ```
 */
export class UpgradeError extends InstarError {
  /** Why: the child exited, was killed, timed out, could not be executed, broke the protocol; or a trigger was refused. */
  readonly reason: UpgradeFailure;
  /** The new generation's pid, when one was started. */
  readonly pid?: number;
  /** Its exit code (`exited`). */
  readonly exitCode?: number;
  /** The signal that killed it (`killed`). */
  readonly signal?: string;
  /** The errno name (`exec-failed`). */
  readonly errno?: string;

  /**
   * Creates the error of a failed or refused upgrade.
   *
   * @param reason why the upgrade failed
   * @param message what happened and what to do
   * @param details pid, exit code, signal or errno
   * @param options the underlying cause
   */
  constructor(
    reason: UpgradeFailure,
    message: string,
    details: { pid?: number; exitCode?: number; signal?: string; errno?: string } = {},
    options?: ErrorOptions,
  ) {
    super("UPGRADE_FAILED", message, options);
    this.name = "UpgradeError";
    this.reason = reason;
    Object.assign(this, details);
  }
}

/** Options of {@link Upgrader.create}. */
export interface UpgraderOptions {
  /** How long the new generation may take to call `ready()`, in ms (default 60 000). */
  readyTimeout?: number;
  /** How long in-flight connections may take to finish after a handover, in ms (default 30 000). */
  drainTimeout?: number;
  /** A file the ready generation writes its pid to, atomically. */
  pidFile?: string;
  /** The signal that triggers an upgrade (default `SIGHUP`); `null` for none. SIGUSR1 is refused. */
  upgradeSignal?: string | null;
  /** Signals that stop this generation gracefully (default `SIGTERM`, `SIGINT`). */
  stopSignals?: string[];
  /** How the next generation is started (default `auto`). */
  spawnBackend?: SpawnBackend;
  /** The executable of the next generation (default: this process's executable, captured at start-up). */
  command?: string;
  /** Its full argv after argv[0] (default: this process's, from /proc/self/cmdline). */
  args?: string[];
  /** Its environment (default: the one this process started with, from /proc/self/environ). */
  env?: Record<string, string>;
  /** Its working directory (default: this process's at start-up). */
  cwd?: string;
  /** Call `process.exit(0)` once drained (default true). */
  exitAfterDrain?: boolean;
  /**
   * A Unix socket path (mode 0600) on which this generation hands its listeners
   * to an independently started process (SCM_RIGHTS) and answers the `instar`
   * command. A process started with the same path takes over from the running
   * one; with nobody there it listens fresh.
   */
  controlSocket?: string;
  /**
   * Talk to systemd: sd_notify over `NOTIFY_SOCKET` (READY, RELOADING,
   * MAINPID, STOPPING, …) and adopt socket-activated listeners (`LISTEN_FDS`).
   * Default: on when systemd set those variables; `false` turns both off.
   */
  systemd?: boolean;
}

/** Events an {@link Upgrader} emits, with their payloads. */
export interface UpgraderEvents {
  /** The state changed. */
  state: { state: State };
  /** An upgrade began. */
  "upgrade-started": { generation: number };
  /** The new generation's process exists. */
  "upgrade-spawned": { pid: number };
  /** The new generation said ready; this one drains now. */
  "upgrade-succeeded": { pid: number; ms: number };
  /** The upgrade failed; this generation serves on. */
  "upgrade-failed": { error: UpgradeError };
  /** This generation stopped accepting and drains. */
  draining: { reason: ExitReason };
  /** Draining finished; `forced` connections were closed at the drain timeout. */
  drained: { forced: number };
  /** serve() could not transplant and serves through its node:net proxy; `reason` says why. */
  "serve-fallback": { addr: string; reason: InstarError };
  /** Something worth a log line that is not an error of the caller's. */
  warning: { message: string };
}

// A new generation being waited for: how to hear from it and how to tell it ended.
interface Attempt {
  pid: number;
  channel: Channel;
  who: string;
  ended(eof: boolean): UpgradeError | null;
  abandon(): void;
}

/** A subscriber to one event of {@link UpgraderEvents}. */
export type UpgraderHandler<K extends keyof UpgraderEvents> = (payload: UpgraderEvents[K]) => void;

/** How long a stopping generation lets its runtime deliver connections it already accepted. */
const DRAIN_DELAY_MS = 250;

interface StartInfo {
  execPath: string;
  argv: string[] | null;
  env: string[] | null;
  cwd: string;
  /** Why argv/env could not be read, if they could not. */
  problem: string | null;
}

function readNulList(path: string): string[] {
  const parts = new TextDecoder().decode(readFileSync(path)).split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

// Captured when this module loads: the binary may be replaced on disk later
// (Deno then reports "… (deleted)"), and process.env may have been changed
// (Bun loads .env into it) — the next generation gets what this one started with.
const START: StartInfo = (() => {
  const info: StartInfo = {
    execPath: process.execPath.replace(/ \(deleted\)$/, ""),
    argv: null,
    env: null,
    cwd: process.cwd(),
    problem: null,
  };
  try {
    info.argv = readNulList("/proc/self/cmdline");
    info.env = readNulList("/proc/self/environ");
  } catch (err) {
    info.problem = (err as Error).message;
  }
  return info;
})();

function listenKey(options: ListenOptions): string {
  if ("fd" in options) {
    invalid("listen() options", "{ fd }", "hostname/port or path: fds are managed by the Upgrader");
  }
  if ("path" in options) return `unix:${options.path}`;
  return `tcp:${options.hostname ?? "0.0.0.0"}:${options.port}`;
}

function signalNumber(option: string, name: string): number {
  const n = SIGNALS[name];
  if (n === undefined) invalid(option, name, "a signal name such as SIGHUP");
  if (name === "SIGUSR1") {
    invalid(option, name, "another signal: Deno's inspector owns SIGUSR1");
  }
  if (name === "SIGKILL" || name === "SIGSTOP") {
    invalid(option, name, "a signal that can be handled");
  }
  return n;
}

function msOption(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    invalid(option, value, "a positive number of milliseconds");
  }
  return value;
}

/**
 * The lifecycle of one generation of a server.
 *
 * @example
 * ```ts
 * import { Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create({ pidFile: "/tmp/app.pid" });
 * const listener = await up.listen({ port: 8080 });
 * (async () => {
 *   for await (const conn of listener) {
 *     conn.readable.pipeTo(conn.writable).catch(() => {});
 *   }
 * })();
 * await up.ready(); // the previous generation, if any, drains now
 * console.log("exiting because of", await up.exit);
 * ```
 */
export class Upgrader {
  /** This generation's number: 1 for a fresh start, then 2, 3, … */
  readonly generation: number;
  /** The pid of the generation that started this one, or `null`. */
  readonly parentPid: number | null;
  /** Resolves with the reason this generation must stop; draining starts at the same moment. */
  readonly exit: Promise<ExitReason>;
  /** Resolves once draining has finished. */
  readonly drained: Promise<void>;

  #state: State = "starting";
  #options: UpgraderOptions;
  #readyTimeout: number;
  #drainTimeout: number;
  #inherited = new Map<string, { fd: number; addr: Addr }>();
  #parent: Channel | null;
  #listeners: { key: string; listener: Listener }[] = [];
  #servers: { key: string; fd: number; addr: Addr; server: Server }[] = [];
  #paused: PausedSocket[] = [];
  #handlers = new Map<string, Set<(p: unknown) => void>>();
  #resolveExit!: (r: ExitReason) => void;
  #resolveDrained!: () => void;
  #pending: { abort: (e: UpgradeError) => void } | null = null;
  #children = new Set<number>();
  #reaper: ReturnType<typeof setInterval> | undefined;
  #signalHandlers: [string, () => void][] = [];
  #notify: SystemdNotifier;
  #activated: ActivatedSocket[] = [];

  private constructor(
    options: UpgraderOptions,
    hello: Hello | null,
    parent: Channel | null,
  ) {
    this.#options = options;
    this.#readyTimeout = msOption("readyTimeout", options.readyTimeout, 60_000);
    this.#drainTimeout = msOption("drainTimeout", options.drainTimeout, 30_000);
    this.generation = hello?.generation ?? 1;
    this.parentPid = hello?.pid ?? null;
    this.#parent = parent;
    for (const l of hello?.listeners ?? []) {
      if (l.key.startsWith("control:")) this.#inheritedControl = { path: l.key.slice(8), fd: l.fd };
      else this.#inherited.set(l.key, { fd: l.fd, addr: l.addr });
    }
    this.#notify = systemdNotifier({ enabled: options.systemd !== false });
    // Activated sockets belong to the first generation; later ones inherit through instar.
    if (!hello && options.systemd !== false) {
      const activation = activatedSockets();
      this.#activated = activation.sockets.filter((s) => s.kind === "stream" && s.listening);
      for (const s of activation.sockets) {
        if (!this.#activated.includes(s)) sys.close(s.fd); // not ours to serve: don't hold it open
      }
    }
    this.#wireSystemd();
    this.exit = new Promise((r) => (this.#resolveExit = r));
    this.drained = new Promise((r) => (this.#resolveDrained = r));
  }

  /**
   * Starts the lifecycle. In a generation started by instar this reads the
   * previous generation's message and checks every fd it names; a malformed
   * message or a wrong fd throws `PROTOCOL_ERROR` (and tells the parent).
   */
  // deno-lint-ignore require-await -- async so that bad options reject rather than throw
  static async create(options: UpgraderOptions = {}): Promise<Upgrader> {
    const upgradeSignal = options.upgradeSignal === undefined ? "SIGHUP" : options.upgradeSignal;
    const stopSignals = options.stopSignals ?? ["SIGTERM", "SIGINT"];
    if (upgradeSignal !== null) signalNumber("upgradeSignal", upgradeSignal);
    for (const s of stopSignals) signalNumber("stopSignals", s);
    if (options.command !== undefined && !options.command.startsWith("/")) {
      invalid("command", options.command, "an absolute path");
    }

    let { hello, channel } = readHello();
    if (!hello && options.controlSocket) {
      ({ hello, channel } = requestHandover(options.controlSocket));
    }
    const up = new Upgrader(options, hello, channel);
    up.#installSignals(upgradeSignal, stopSignals);
    return up;
  }

  /** Where this generation is in its life. */
  get state(): State {
    return this.#state;
  }

  /** This process's pid. */
  get pid(): number {
    return process.pid;
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof UpgraderEvents>(event: K, handler: UpgraderHandler<K>): () => void {
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, set = new Set());
    set.add(handler as (p: unknown) => void);
    return () => set.delete(handler as (p: unknown) => void);
  }

  #emit<K extends keyof UpgraderEvents>(event: K, payload: UpgraderEvents[K]): void {
    for (const h of this.#handlers.get(event) ?? []) {
      try {
        h(payload);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  // Type=notify-reload: RELOADING at the start of an upgrade, EXTEND_TIMEOUT
  // while the child starts, MAINPID + READY from the old generation before it
  // stops accepting (systemd must know the new main pid before the old exits),
  // READY + STATUS after a failure, STOPPING on stop.
  #wireSystemd(): void {
    if (!this.#notify.enabled) return;
    let extend: ReturnType<typeof setInterval> | undefined;
    const EXTEND_USEC = 15_000_000;
    this.on("upgrade-started", () => {
      this.#sd((n) => n.reloading());
      extend = setInterval(() => this.#sd((n) => n.extendTimeout(EXTEND_USEC)), 5_000);
    });
    this.on("upgrade-succeeded", ({ pid }) => {
      clearInterval(extend);
      this.#sd((n) => n.readyWithMainPid(pid));
    });
    this.on("upgrade-failed", ({ error }) => {
      if (["in-progress", "not-ready", "stopping"].includes(error.reason)) return; // a refused trigger
      clearInterval(extend);
      this.#sd((n) => n.upgradeFailed(`upgrade failed: ${error.reason}`));
    });
    this.on("draining", ({ reason }) => {
      if (reason === "stop") this.#sd((n) => n.stopping());
    });
  }

  // systemd must not stop us because a notification failed: report and go on.
  #sd(send: (n: SystemdNotifier) => boolean): void {
    try {
      send(this.#notify);
    } catch (err) {
      this.#emit("warning", { message: `sd_notify: ${(err as Error).message}` });
    }
  }

  #setState(state: State): void {
    this.#state = state;
    this.#emit("state", { state });
  }

  /**
   * A listener for `options`: the previous generation's socket when it passed
   * one for the same options (port 0 keeps the port it got), a fresh one
   * otherwise.
   */
  async listen(options: ListenOptions): Promise<Listener> {
    const key = this.#newKey(options);
    const fd = this.#claim(key, options);
    const listener = await listen(fd === undefined ? options : { fd });
    if (fd !== undefined) this.#holdUntilReady(listener.fd);
    this.#listeners.push({ key, listener });
    return listener;
  }

  /**
   * Serves HTTP with the runtime's own server (`Deno.serve` / `Bun.serve`, at
   * full speed) on a socket that survives upgrades, like
   * {@link Upgrader.listen}'s. One options object, like the runtime's own
   * server's: where to listen (`port` and `hostname`, or `path` with
   * `socketMode` for a Unix socket; `backlog`), the handler as `fetch` or
   * `handler`, the runtime's own options (typed with its own types) and
   * instar's (`mode`, `onFallback`, `drainTimeoutMs`, …). On a handover the
   * server stops accepting, reads what it accepted, and drains within the
   * drain timeout.
   *
   * @typeParam WebSocketData Bun's `ws.data` type (as in `Bun.serve<WebSocketData>`).
   * @example
   * ```ts
   * import { Upgrader } from "@instar/instar";
   *
   * const up = await Upgrader.create();
   * await up.serve({ port: 8080, fetch: () => new Response("hello") });
   * await up.ready();
   * ```
   */
  async serve<WebSocketData = undefined>(
    options: UpgraderServeOptions<WebSocketData>,
  ): Promise<Server> {
    // The old (listenOptions, options, handler) form fails here with the new form in the message.
    checkOneObject("up.serve()", options, arguments.length);
    const { listen: listenOptions, serve: serveOptions } = splitListenOptions(options);
    const key = this.#newKey(listenOptions);
    const claimed = this.#claim(key, listenOptions);
    const { fd, addr } = await openSocket(claimed === undefined ? listenOptions : { fd: claimed });
    try {
      const onFallback = (reason: InstarError) =>
        this.#emit("serve-fallback", { addr: formatAddr(addr), reason });
      const server = await serve(fd, {
        drainTimeoutMs: this.#drainTimeout,
        onFallback,
        ...serveOptions,
      });
      if (claimed !== undefined) this.#holdUntilReady(fd);
      this.#servers.push({ key, fd, addr, server });
      return server;
    } catch (err) {
      sys.close(fd);
      throw err;
    }
  }

  // A new generation accepts nothing on a shared socket before it is ready: the
  // previous one serves until then, and a new version that dies before ready()
  // takes no connection with it. (Synchronous right after the runtime started
  // serving: its reactor has not run yet.)
  #holdUntilReady(fd: number): void {
    if (this.#state === "starting" && this.parentPid !== null) this.#paused.push(pauseSocket(fd));
  }

  #newKey(options: ListenOptions): string {
    const key = listenKey(options);
    if (this.#listeners.some((l) => l.key === key) || this.#servers.some((s) => s.key === key)) {
      invalid("listen options", key, "an address this Upgrader does not listen on yet");
    }
    return key;
  }

  // The previous generation's socket for this key, or systemd's; undefined: open a fresh one.
  #claim(key: string, options: ListenOptions): number | undefined {
    const inherited = this.#inherited.get(key);
    if (inherited) {
      this.#inherited.delete(key);
      return inherited.fd;
    }
    const activated = findActivated(
      this.#activated,
      options as Parameters<typeof findActivated>[1],
    );
    if (activated) {
      this.#activated.splice(this.#activated.indexOf(activated), 1);
      return activated.fd;
    }
    return undefined;
  }

  /**
   * Declares this generation ready: unclaimed inherited sockets are closed,
   * the PID file is written, and the previous generation is told to drain.
   */
  async ready(): Promise<void> {
    if (this.#state !== "starting" || this.#readyCalled) {
      throw new InstarError(
        "INVALID_STATE",
        `ready() called in state ${this.#state}; call it once`,
      );
    }
    this.#readyCalled = true;
    // The control socket first: if it cannot be had, the previous generation is not
    // told anything and serves on.
    const control = this.#options.controlSocket
      ? await this.#controlSocket(this.#options.controlSocket)
      : -1;
    for (const [key, { fd }] of this.#inherited) {
      // Nobody will accept on it here: close it so the kernel stops queueing for us.
      this.#emit("warning", { message: `inherited listener ${key} was not claimed; closing it` });
      sys.close(fd);
    }
    this.#inherited.clear();
    const unused = this.#inheritedControl; // the option is gone, or names another path
    if (unused) {
      this.#emit("warning", {
        message: `the inherited control socket ${unused.path} is not used any more; closing it`,
      });
      sys.close(unused.fd);
      this.#inheritedControl = null;
    }
    for (const s of this.#activated) {
      this.#emit("warning", {
        message: `socket-activated fd ${s.fd} (${s.name}) was not claimed; closing it`,
      });
      sys.close(s.fd);
    }
    this.#activated = [];
    for (const p of this.#paused) resumeSocket(p);
    this.#paused = [];
    if (this.#options.pidFile) writePidFile(this.#options.pidFile, process.pid);
    if (this.#parent) {
      try {
        this.#parent.send({ type: "ready", v: PROTOCOL_VERSION, pid: process.pid });
      } catch (err) {
        // The previous generation is gone; this one serves alone, which is the goal anyway.
        this.#emit("warning", {
          message: `could not tell the previous generation: ${(err as Error).message}`,
        });
      }
      this.#parent.close();
      this.#parent = null;
    }
    if (control >= 0) this.#startControl(control);
    // A later generation is announced by the one it replaces (MAINPID + READY).
    if (this.generation === 1) this.#sd((n) => n.ready());
    this.#setState("ready");
  }

  #control: { fd: number; timer: ReturnType<typeof setInterval>; peers: Set<Channel> } | null =
    null;

  // The control socket: inherited from the previous generation, or created here
  // with mode 0600 set before listen(2), so no other user can connect in between
  // (an abstract name has no mode; SO_PEERCRED refuses other users there too).
  async #controlSocket(path: string): Promise<number> {
    const inherited = this.#inheritedControl;
    if (inherited?.path === path) {
      this.#inheritedControl = null;
      return inherited.fd;
    }
    return (await openSocket({ path, mode: 0o600, backlog: 64 })).fd;
  }

  #startControl(fd: number): void {
    const peers = new Set<Channel>();
    const timer = setInterval(() => this.#pollControl(), 50);
    (timer as { unref?: () => void }).unref?.();
    this.#control = { fd, timer, peers };
  }

  #inheritedControl: { path: string; fd: number } | null = null;
  #readyCalled = false;

  #pollControl(): void {
    const ctl = this.#control;
    if (!ctl) return;
    for (;;) {
      let fd: number;
      try {
        fd = sys.accept4(ctl.fd, C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
      } catch (err) {
        this.#emit("warning", { message: `control socket: ${(err as Error).message}` });
        break;
      }
      if (fd < 0) break;
      const peer = new Channel(fd);
      if (sys.peerCred(fd).uid !== sys.getuid()) {
        // Only the same user may take the listeners or drive upgrades.
        try {
          peer.send({
            type: "failed",
            v: PROTOCOL_VERSION,
            reason: "forbidden",
            message: "peer uid differs from the server's",
          });
        } catch { /* it may be gone */ }
        peer.close();
        this.#emit("warning", { message: "control socket: refused a peer with another uid" });
        continue;
      }
      ctl.peers.add(peer);
    }
    for (const peer of ctl.peers) {
      try {
        for (const { msg } of peer.receive()) this.#onControlMessage(peer, messageOf(msg));
        if (peer.eof) {
          ctl.peers.delete(peer);
          peer.close();
        }
      } catch (err) {
        ctl.peers.delete(peer);
        try {
          peer.send({
            type: "failed",
            v: PROTOCOL_VERSION,
            reason: "protocol-error",
            message: (err as Error).message,
          });
        } catch { /* gone */ }
        peer.close();
      }
    }
  }

  #onControlMessage(peer: Channel, m: ReturnType<typeof messageOf>): void {
    const ctl = this.#control!;
    const reply = (msg: Parameters<Channel["send"]>[0]) => {
      try {
        peer.send(msg);
      } catch { /* the peer went away */ }
    };
    if (m.type === "status") {
      reply({ type: "status-reply", v: PROTOCOL_VERSION, status: this.status() });
      return;
    }
    if (m.type === "upgrade") {
      ctl.peers.delete(peer); // answered below even while this generation drains
      const off = this.on(
        "upgrade-spawned",
        ({ pid }) => reply({ type: "progress", v: PROTOCOL_VERSION, event: "spawned", pid }),
      );
      this.upgrade().then(
        (pid) => reply({ type: "upgraded", v: PROTOCOL_VERSION, pid }),
        (err: UpgradeError) =>
          reply({ type: "failed", v: PROTOCOL_VERSION, reason: err.reason, message: err.message }),
      ).finally(() => {
        off();
        peer.close();
      });
      return;
    }
    if (m.type === "handover") {
      ctl.peers.delete(peer); // handled below, not by the poller
      this.#handover(peer, m.pid);
      return;
    }
    protocolError(`unexpected ${m.type} message on the control socket`);
  }

  // An independently started process asked for the listeners.
  #handover(peer: Channel, peerPid: number): void {
    this.#run(() => {
      const entries = this.#passable();
      try {
        peer.send(
          {
            type: "hello",
            v: PROTOCOL_VERSION,
            generation: this.generation + 1,
            pid: process.pid,
            transfer: "scm_rights",
            listeners: entries.map((e, i) => ({ key: e.key, addr: e.addr, fd: i })),
          },
          entries.map((e) => e.fd),
        );
      } catch (err) {
        peer.close();
        throw new UpgradeError(
          "protocol-error",
          `could not send the listeners to process ${peerPid}: ${(err as Error).message}`,
          { pid: peerPid },
        );
      }
      const who = `process ${peerPid}`;
      return {
        pid: peerPid,
        channel: peer,
        who,
        ended: (eof) =>
          eof
            ? new UpgradeError(
              "exited",
              `${who} closed the control connection before it was ready`,
              {
                pid: peerPid,
              },
            )
            : null,
        abandon: () => {},
      };
    }).catch((err: UpgradeError) => {
      // Refused before anything was sent: say why to the peer.
      if (peer.fd < 0) return;
      try {
        peer.send({
          type: "failed",
          v: PROTOCOL_VERSION,
          reason: err.reason,
          message: err.message,
        });
      } catch { /* gone */ }
      peer.close();
    });
  }

  /** The addresses this generation listens and serves on. */
  addrs(): Addr[] {
    return [
      ...this.#listeners.map(({ listener }) => listener.addr),
      ...this.#servers.map(({ addr }) => addr),
    ];
  }

  /**
   * What this generation reports about itself (`instar status`). Counting the
   * HTTP servers' connections reads /proc/net/tcp: not for a hot path.
   */
  status(): StatusReport {
    return {
      pid: process.pid,
      generation: this.generation,
      state: this.#state,
      listeners: [
        ...this.#listeners.map(({ listener }) => ({
          addr: formatAddr(listener.addr),
          connections: listener.connections,
        })),
        // The native HTTP servers keep no count: ask the kernel.
        ...this.#servers.map(({ addr }) => ({
          addr: formatAddr(addr),
          connections: openConnections(addr),
        })),
      ],
      parentPid: this.parentPid,
      previous: this.#previous(),
    };
  }

  // The generation that started this one, while it still drains: what it still serves.
  #previous(): StatusReport["previous"] {
    const pid = this.parentPid;
    if (pid === null || !processRuns(pid)) return null;
    return {
      pid,
      generation: this.generation - 1,
      listeners: this.addrs().map((addr) => ({
        addr: formatAddr(addr),
        connections: openConnections(addr, pid),
      })),
    };
  }

  // Every socket the next generation gets: listeners, HTTP servers' sockets, the control socket.
  #passable(): ListenerMeta[] {
    const out: ListenerMeta[] = [
      ...this.#listeners.map(({ key, listener }) => ({
        key,
        addr: listener.addr,
        fd: listener.fd,
      })),
      ...this.#servers.map(({ key, addr, fd }) => ({ key, addr, fd })),
    ];
    if (this.#control) {
      const path = this.#options.controlSocket!;
      out.push({ key: `control:${path}`, addr: { transport: "unix", path }, fd: this.#control.fd });
    }
    return out;
  }

  /**
   * Starts the next generation of the program as it now is on disk, hands it
   * the listeners, and resolves with its pid once it is ready; this generation
   * then drains. Rejects with an {@link UpgradeError} (and keeps serving) when
   * the new generation exits, is killed, is not ready in time, cannot be
   * executed, or breaks the protocol.
   */
  upgrade(): Promise<number> {
    return this.#run(() => this.#startChild());
  }

  // Why a trigger cannot start an upgrade now, or null.
  #refusal(): UpgradeError | null {
    if (this.#state === "ready") return null;
    if (this.#state === "upgrading") {
      return new UpgradeError(
        "in-progress",
        "an upgrade is already in flight; wait for its result",
      );
    }
    if (this.#state === "starting") {
      return new UpgradeError("not-ready", "cannot upgrade before ready() was called");
    }
    return new UpgradeError("stopping", `cannot upgrade while ${this.#state}`);
  }

  /**
   * One upgrade, however the next generation comes to exist: `start` creates
   * it and returns the channel it answers on. This generation serves on
   * whatever happens; on success it drains.
   */
  #run(start: () => Attempt): Promise<number> {
    const refused = this.#refusal();
    if (refused) {
      this.#emit("upgrade-failed", { error: refused });
      return Promise.reject(refused);
    }
    this.#setState("upgrading");
    this.#emit("upgrade-started", { generation: this.generation + 1 });
    const started = performance.now();
    const failed = (err: UpgradeError): never => {
      if (this.#state === "upgrading") this.#setState("ready");
      this.#emit("upgrade-failed", { error: err });
      throw err;
    };
    let attempt: Attempt;
    try {
      attempt = start();
    } catch (err) {
      return Promise.reject(err).catch(failed);
    }
    this.#emit("upgrade-spawned", { pid: attempt.pid });
    return this.#awaitReady(attempt).then(
      () => {
        attempt.channel.close();
        if (this.#children.size) this.#reapLater();
        this.#emit("upgrade-succeeded", { pid: attempt.pid, ms: performance.now() - started });
        this.#beginExit("upgrade");
        return attempt.pid;
      },
      (err: UpgradeError) => {
        attempt.channel.close();
        attempt.abandon();
        return failed(err);
      },
    );
  }

  // Resolves when the new generation says ready; rejects when it refuses, breaks
  // the protocol, ends, or is not ready in time. A stop aborts the wait.
  #awaitReady(attempt: Attempt): Promise<void> {
    const { channel, pid, who } = attempt;
    return new Promise<void>((resolve, reject) => {
      const done = (err: UpgradeError | null) => {
        clearInterval(tick);
        clearTimeout(timer);
        this.#pending = null;
        if (err) reject(err);
        else resolve();
      };
      this.#pending = { abort: done };
      const timer = setTimeout(() => {
        done(
          new UpgradeError(
            "ready-timeout",
            `${who} was not ready within ${this.#readyTimeout} ms`,
            { pid },
          ),
        );
      }, this.#readyTimeout);
      const tick = setInterval(() => {
        try {
          for (const { msg } of channel.receive()) {
            const m = messageOf(msg);
            if (m.type === "ready") return done(null);
            if (m.type === "error") {
              return done(
                new UpgradeError("protocol-error", `${who} refused the handover: ${m.message}`, {
                  pid,
                }),
              );
            }
            protocolError(`unexpected ${m.type} message from ${who}`);
          }
        } catch (err) {
          return done(
            new UpgradeError("protocol-error", (err as Error).message, { pid }, { cause: err }),
          );
        }
        const ended = attempt.ended(channel.eof);
        if (ended) done(ended);
      }, 20);
    });
  }

  /** Stops this generation gracefully: stop accepting, drain, exit. */
  stop(): void {
    this.#pending?.abort(new UpgradeError("stopping", "the running generation is stopping"));
    this.#beginExit("stop");
  }

  #installSignals(upgradeSignal: string | null, stopSignals: string[]): void {
    if (upgradeSignal) {
      const onUpgrade = () => {
        this.upgrade().catch(() => {/* reported through the upgrade-failed event */});
      };
      process.on(upgradeSignal, onUpgrade);
      this.#signalHandlers.push([upgradeSignal, onUpgrade]);
    }
    let stops = 0;
    const onStop = () => {
      if (++stops > 1) {
        // A second stop signal: the operator does not want to wait for the drain.
        for (const { listener } of this.#listeners) listener.closeConnections();
        for (const { server } of this.#servers) void server.stop(true);
        process.exit(1);
      }
      this.stop();
    };
    for (const s of stopSignals) {
      process.on(s, onStop);
      this.#signalHandlers.push([s, onStop]);
    }
  }

  // Starts the program as it now is on disk with the sockets inherited.
  #startChild(): Attempt {
    const opts = this.#options;
    const [mine, theirs] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    const channel = new Channel(mine);
    const listeners = this.#passable();
    const path = opts.command ?? START.execPath;
    if ((!opts.args && !START.argv?.length) || (!opts.env && !START.env)) {
      channel.close();
      sys.close(theirs);
      throw new UpgradeError(
        "exec-failed",
        `cannot tell how this program was started (${
          START.problem ?? "empty /proc/self/cmdline"
        }); ` +
          "pass the command, args and env options",
      );
    }
    const env = opts.env
      ? Object.entries(opts.env).map(([k, v]) => `${k}=${v}`)
      : START.env!.filter((e) => !e.startsWith(`${CONTROL_FD_ENV}=`) && !e.startsWith("LISTEN_"));
    env.push(`${CONTROL_FD_ENV}=${theirs}`);
    const argv = opts.args ? [path, ...opts.args] : START.argv!;
    let pid: number;
    try {
      // The hello waits in the socket buffer, so the child reads it at once.
      channel.send({
        type: "hello",
        v: PROTOCOL_VERSION,
        generation: this.generation + 1,
        pid: process.pid,
        transfer: "inherit",
        listeners,
      });
      pid = spawn({
        path,
        argv,
        env,
        cwd: opts.cwd ?? START.cwd,
        fds: [...listeners.map((l) => l.fd), theirs],
        backend: opts.spawnBackend ?? "auto",
      });
    } catch (err) {
      channel.close();
      throw new UpgradeError(
        "exec-failed",
        `could not start ${path}: ${(err as Error).message}`,
        { errno: (err as InstarError).code ?? "UNKNOWN" },
        { cause: err },
      );
    } finally {
      sys.close(theirs);
    }
    this.#children.add(pid);
    const who = `generation ${this.generation + 1} (pid ${pid})`;
    return {
      pid,
      channel,
      who,
      // A closed channel without ready means the child is ending: its exit status says why.
      ended: () => {
        const end = sys.waitpidNoHang(pid);
        if (!end) return null;
        this.#children.delete(pid);
        if (end.exited) {
          return new UpgradeError(
            "exited",
            `${who} exited with code ${end.code} before it was ready`,
            { pid, exitCode: end.code },
          );
        }
        const signal = signalName(end.signal);
        return new UpgradeError("killed", `${who} was killed by ${signal} before it was ready`, {
          pid,
          signal,
        });
      },
      abandon: () => {
        if (this.#children.has(pid)) this.#killAndReap(pid);
      },
    };
  }

  // Kills a child that failed its upgrade and reaps it before the failure is
  // reported: no zombie is ever left. pidfd tells when it is gone.
  #killAndReap(pid: number): void {
    let pidfd = -1;
    try {
      pidfd = sys.pidfdOpen(pid);
    } catch { /* kernel without pidfd: the reaper timer takes it */ }
    try {
      sys.kill(pid, SIGNALS.SIGKILL);
      if (pidfd >= 0) sys.poll([{ fd: pidfd, events: C.POLLIN }], 2000);
    } catch {
      /* already gone */
    } finally {
      if (pidfd >= 0) sys.close(pidfd);
    }
    if (sys.waitpidNoHang(pid)) this.#children.delete(pid);
    else this.#reapLater();
  }

  // Children that outlive the handover are reaped while this generation drains.
  #reapLater(): void {
    this.#reaper ??= setInterval(() => {
      for (const pid of this.#children) {
        try {
          if (sys.waitpidNoHang(pid)) this.#children.delete(pid);
        } catch {
          this.#children.delete(pid);
        }
      }
    }, 200);
    (this.#reaper as { unref?: () => void }).unref?.();
  }

  #beginExit(reason: ExitReason): void {
    if (this.#state === "draining" || this.#state === "stopped") return;
    this.#setState("draining");
    this.#resolveExit(reason);
    this.#emit("draining", { reason });
    for (const [sig, h] of this.#signalHandlers) {
      // Keep stop signals (a second one forces the exit); drop the upgrade trigger.
      if (sig === (this.#options.upgradeSignal ?? "SIGHUP")) process.off(sig, h);
    }
    void this.#drain(reason);
  }

  async #drain(reason: ExitReason): Promise<void> {
    // The next generation answers the control socket from now on.
    if (this.#control) {
      clearInterval(this.#control.timer);
      for (const p of this.#control.peers) p.close();
      // After a handover the socket file belongs to the next generation; on stop it goes.
      const path = this.#options.controlSocket!;
      if (reason === "stop" && !path.startsWith("@")) rmSync(path, { force: true });
      sys.close(this.#control.fd);
      this.#control = null;
    }
    // serve()'s shutdown stops accepting, reads what it accepted, then drains;
    // it runs while the listeners below wait for the same reason.
    const shutdowns = this.#servers.map(({ server }) =>
      server.shutdown().catch((err) => {
        this.#emit("warning", { message: `server shutdown: ${(err as Error).message}` });
      })
    );
    // Stop accepting first and give the runtime a moment to hand over what it
    // accepted but has not delivered yet; closing at once would drop those.
    if (this.#listeners.length) {
      for (const { listener } of this.#listeners) {
        try {
          pauseSocket(listener.fd);
        } catch (err) {
          this.#emit("warning", {
            message: `pausing ${formatAddr(listener.addr)}: ${(err as Error).message}`,
          });
        }
      }
      await new Promise((r) => setTimeout(r, DRAIN_DELAY_MS));
    }
    for (const { listener } of this.#listeners) listener.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      Promise.all([
        ...this.#listeners.map(({ listener }) => listener.drained()),
        ...shutdowns,
      ]).then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), this.#drainTimeout))),
    ]);
    clearTimeout(timer);
    let forced = 0;
    if (timedOut) {
      for (const { listener } of this.#listeners) {
        forced += listener.connections;
        listener.closeConnections();
      }
      for (const { server, addr } of this.#servers) {
        forced += openConnections(addr) ?? 0;
        await server.stop(true).catch(() => {});
      }
    }
    for (const { fd } of this.#servers) sys.close(fd);
    if (reason === "stop" && this.#options.pidFile) removePidFileIfOurs(this.#options.pidFile);
    for (const [sig, h] of this.#signalHandlers) process.off(sig, h);
    this.#setState("stopped");
    this.#emit("drained", { forced });
    this.#resolveDrained();
    if (this.#options.exitAfterDrain ?? true) process.exit(0);
  }
}

/** Reads and checks the previous generation's hello, if this process was started by one. */
function readHello(): { hello: Hello | null; channel: Channel | null } {
  const raw = process.env[CONTROL_FD_ENV];
  if (raw === undefined) return { hello: null, channel: null };
  delete process.env[CONTROL_FD_ENV];
  if (!/^\d+$/.test(raw)) {
    protocolError(`${CONTROL_FD_ENV}=${JSON.stringify(raw)} is not an fd number`);
  }
  const fd = Number(raw);
  let channel: Channel;
  try {
    sys.setCloexec(fd, true);
    channel = new Channel(fd);
  } catch (err) {
    throw new InstarError(
      "PROTOCOL_ERROR",
      `instar control protocol: ${CONTROL_FD_ENV}=${fd} is not an open socket (${
        (err as Error).message
      })`,
      { cause: err },
    );
  }
  return { hello: receiveHello(channel, "inherit"), channel };
}

/**
 * Reads the hello on `channel` and checks every fd it names. Received fds are
 * mapped by index (scm_rights); inherited ones are taken by number (inherit).
 * On any fault the peer is told, every received fd is closed, and it throws.
 */
function receiveHello(channel: Channel, transfer: Hello["transfer"]): Hello {
  let received: number[] = [];
  try {
    const { msg, fds } = channel.receiveSync(10_000);
    received = fds;
    const hello = validateHello(msg);
    if (hello.transfer !== transfer) {
      protocolError(`expected ${transfer} transfer, got ${hello.transfer}`);
    }
    if (transfer === "inherit") {
      for (const f of received) sys.close(f); // nothing may arrive attached
      received = [];
    } else {
      if (received.length !== hello.listeners.length) {
        protocolError(
          `${hello.listeners.length} listeners announced, ${received.length} fds received`,
        );
      }
      for (const l of hello.listeners) {
        if (l.fd >= received.length) protocolError(`listener ${l.key} names fd index ${l.fd}`);
        l.fd = received[l.fd];
      }
    }
    for (const l of hello.listeners) {
      checkListeningFd(l.fd, l.addr, l.key);
      sys.setCloexec(l.fd, true); // never leak into the program's own children
    }
    return hello;
  } catch (err) {
    for (const f of received) sys.close(f);
    try {
      channel.send({
        type: "error",
        v: PROTOCOL_VERSION,
        pid: process.pid,
        message: (err as Error).message,
      });
    } catch { /* the parent is gone; the error below still says what happened */ }
    channel.close();
    throw err;
  }
}

/**
 * Connects to a running generation's control socket and asks for its
 * listeners. Nobody there (no file, or a stale one): a fresh start.
 */
function requestHandover(path: string): { hello: Hello | null; channel: Channel | null } {
  let channel: Channel;
  try {
    channel = connectControl(path);
  } catch (err) {
    if (nobodyThere(err)) return { hello: null, channel: null }; // a fresh start
    throw err;
  }
  if (sys.peerCred(channel.fd).uid !== sys.getuid()) {
    channel.close();
    throw new InstarError(
      "PERMISSION_DENIED",
      `control socket ${path} belongs to another user; refusing its listeners`,
    );
  }
  channel.send({ type: "handover", v: PROTOCOL_VERSION, pid: process.pid });
  return { hello: receiveHello(channel, "scm_rights"), channel };
}

/**
 * Established TCP connections of process `pid` on `addr`'s local port, from
 * /proc/net/tcp{,6} and /proc/<pid>/fd; `null` for Unix sockets or without procfs.
 */
function openConnections(addr: Addr, pid: number | "self" = "self"): number | null {
  if (addr.transport !== "tcp") return null;
  try {
    const theirs = new Set<string>();
    for (const e of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${e}`));
        if (m) theirs.add(m[1]);
      } catch { /* closed meanwhile */ }
    }
    const port = addr.port.toString(16).toUpperCase().padStart(4, "0");
    let n = 0;
    for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      for (const line of readFileSync(table, "utf8").split("\n").slice(1)) {
        const f = line.trim().split(/\s+/);
        // local_address is HEXIP:PORT, st 01 is ESTABLISHED, inode is field 9
        if (f.length > 9 && f[1].endsWith(`:${port}`) && f[3] === "01" && theirs.has(f[9])) n++;
      }
    }
    return n;
  } catch {
    return null;
  }
}

function writePidFile(path: string, pid: number): void {
  const tmp = `${path}.${pid}.tmp`;
  writeFileSync(tmp, `${pid}\n`);
  renameSync(tmp, path);
}

function removePidFileIfOurs(path: string): void {
  try {
    if (readFileSync(path, "utf8").trim() === String(process.pid)) rmSync(path);
  } catch { /* already gone */ }
}

/**
 * Writes one line per lifecycle event of `up` to stderr (or `write`), e.g.
 * `[app pid=4242 gen=2] upgrade-failed: exited: generation 3 (pid 4250) exited with code 1…`.
 *
 * @example
 * ```ts
 * import { logLifecycle, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * logLifecycle(up, "api");
 * ```
 */
export function logLifecycle(
  up: Upgrader,
  name = "instar",
  write: (line: string) => void = (line) => process.stderr.write(line + "\n"),
): void {
  const say = (what: string) => write(`[${name} pid=${up.pid} gen=${up.generation}] ${what}`);
  up.on("state", ({ state }) => {
    if (state === "ready") {
      const addrs = up.addrs().map(formatAddr).join(", ");
      say(`ready on ${addrs || "(no listeners)"}`);
    }
  });
  up.on(
    "upgrade-started",
    ({ generation }) => say(`upgrade-started: starting generation ${generation}`),
  );
  up.on("upgrade-spawned", ({ pid }) => say(`upgrade-spawned: pid ${pid}`));
  up.on(
    "upgrade-succeeded",
    ({ pid, ms }) => say(`upgrade-succeeded: pid ${pid} ready after ${ms.toFixed(0)} ms`),
  );
  up.on("upgrade-failed", ({ error }) => say(`upgrade-failed: ${error.reason}: ${error.message}`));
  up.on("draining", ({ reason }) => say(`draining: ${reason}`));
  up.on(
    "drained",
    ({ forced }) => say(`drained: ${forced} connection(s) closed at the drain timeout`),
  );
  up.on(
    "serve-fallback",
    ({ addr, reason }) =>
      say(`serve-fallback: ${addr} served through the node:net proxy: ${reason.message}`),
  );
  up.on("warning", ({ message }) => say(`warning: ${message}`));
}
