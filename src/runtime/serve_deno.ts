/**
 * The Deno side of {@link serve}: `Deno.serve` on a loopback port. While
 * draining, every response carries `Connection: close`; WebSockets are
 * tracked so that a drain waits for them (Deno's own `shutdown()` closes them
 * at once with 1001) and closes the last ones with 1012.
 *
 * @module
 */

import type { Addr } from "../ffi/sockaddr.ts";
import type { AdapterStart, NativeServer, ServeAdapter } from "./serve_types.ts";
import { QuietClock, WebSocketSet, withClose } from "./http_drain.ts";
import { nativeServe } from "./natives.ts";
import {
  FD_BACKOFF_MS,
  fdsRecovered,
  isFdExhaustion,
  RateLimitedWarning,
} from "./fd_exhaustion.ts";
import { sleep } from "../timeout.ts";

type Info = { remoteAddr: Addr; completed: Promise<void> };
type Handler = (req: Request, info: Info) => Response | Promise<Response>;

interface DenoHttpServer {
  addr: Addr;
  finished: Promise<void>;
  shutdown(): Promise<void>;
  ref(): void;
  unref(): void;
}

interface DenoServeNs {
  serve(options: Record<string, unknown>, handler: Handler): DenoHttpServer;
}

// Deno keeps the WebSocket of an upgrade response under this symbol (ext/http 00_serve).
const ASSOCIATED_WS = "[[associated_ws]]";

// The WebSockets Deno.upgradeWebSocket made, by their upgrade response, until the handler of one
// of instar's servers returns that response. `pending` counts them, so that a server's handler
// wrapper looks one up only while there is one (until an upgrade response no handler returned
// is collected, each response costs one WeakMap lookup).
const upgrades = new WeakMap<object, WebSocket>();
let pending = 0;
let watching = false;
// An upgrade response no handler of instar's returned (the handler threw, or it was served by
// another server) is forgotten once collected, so that `pending` comes back down.
const unclaimed = new FinalizationRegistry<undefined>(() => void pending--);

// Wraps Deno.upgradeWebSocket, once, when this module loads: before every module of the
// application under instar/auto's preload; with `import` of instar, before the modules evaluated
// after instar's (a reference taken earlier is noticed only while draining: design.md).
function watchUpgrades(): void {
  const deno = (globalThis as { Deno?: { upgradeWebSocket?: unknown } }).Deno;
  const own = deno?.upgradeWebSocket;
  if (!deno || typeof own !== "function" || watching) return;
  const watched = function upgradeWebSocket(this: unknown, ...args: unknown[]): unknown {
    const made = own.apply(deno, args) as { socket?: unknown; response?: unknown } | undefined;
    // A replaced global (a mock, a polyfill) may return something else: passed on untouched.
    if (typeof made?.response === "object" && made.response && made.socket instanceof WebSocket) {
      upgrades.set(made.response, made.socket);
      unclaimed.register(made.response, undefined, made.response);
      pending++;
    }
    return made;
  };
  try {
    deno.upgradeWebSocket = watched;
    watching = deno.upgradeWebSocket === watched;
  } catch {
    // Read-only: every response's status is read instead (claimUpgrade).
  }
}
watchUpgrades();

// The WebSocket `res` upgrades to, taken out of the watch; undefined for any other response.
function claimUpgrade(res: Response): WebSocket | undefined {
  if (!watching) return res?.status === 101 ? associatedSocket(res) : undefined;
  if (pending === 0) return undefined;
  const ws = upgrades.get(res);
  if (ws === undefined) return undefined;
  upgrades.delete(res);
  unclaimed.unregister(res);
  pending--;
  return ws;
}

let wsKey: symbol | undefined;

// The WebSocket Deno keeps on an upgrade response (made without the watch).
function associatedSocket(res: Response): WebSocket | undefined {
  wsKey ??= Object.getOwnPropertySymbols(res).find((k) => k.description === ASSOCIATED_WS);
  const ws = wsKey === undefined ? undefined : (res as unknown as Record<symbol, unknown>)[wsKey];
  return ws instanceof WebSocket ? ws : undefined;
}

/** Starts `Deno.serve` for {@link serve}. */
export const denoAdapter: ServeAdapter = {
  start(s: AdapterStart): NativeServer {
    // The runtime's own Deno.serve: instar/auto may have replaced the global.
    const denoServe = nativeServe("Deno") as DenoServeNs["serve"];
    const options = s.options;
    // serve() checked that there is one, given as `fetch` or `handler`: on Deno both are `(req, info)`.
    const handler = s.handler as unknown as Handler;
    const userOnListen = options.onListen as ((addr: Addr) => void) | undefined;
    const signal = options.signal as AbortSignal | undefined;
    const opts: Record<string, unknown> = { ...options };
    // The socket decides where to listen; the signal stops instar's server, which stops Deno's.
    for (const k of ["signal", "transport", "reusePort", "tcpBacklog"]) delete opts[k];
    Object.assign(
      opts,
      "path" in s.listenOn ? { path: s.listenOn.path, onListen() {} } : {
        hostname: s.listenOn.hostname,
        port: s.listenOn.port ?? 0,
        reusePort: false,
        onListen() {},
      },
    );

    const sockets = new WebSocketSet<WebSocket>();
    let draining = false;
    const clock = new QuietClock();
    const add = (ws: WebSocket): void => {
      sockets.add(ws);
      ws.addEventListener("close", () => sockets.delete(ws));
    };
    // Reading a response's `status` costs Deno's fast path for it (about 270 instructions of a
    // hello world's 10,100 per request, counted with callgrind): the WebSockets are known from
    // Deno.upgradeWebSocket instead (watchUpgrades()), and `status` is read only while draining.
    const track = (res: Response): Response => {
      const ws = claimUpgrade(res);
      if (ws) add(ws);
      else if (draining && res?.status === 101) {
        // Made through a reference to Deno.upgradeWebSocket taken before instar wrapped it.
        const upgraded = associatedSocket(res);
        if (upgraded) add(upgraded);
      } else if (draining) {
        clock.mark();
        return withClose(res);
      }
      return res;
    };
    // One wrapper, which also counts. Deno builds no Request and no info for a handler that
    // takes no arguments (`length` 0; about 7 % of a hello world's CPU per request at 6,000
    // req/s in one run), so such a handler gets a wrapper that takes none, and is given nothing
    // (`(...args)` too), as by Deno.serve itself.
    const count = s.count ?? new Float64Array(1);
    const plain = () => {
      count[0]++;
      const out = (handler as () => Response | Promise<Response>)();
      return out instanceof Promise ? out.then(track) : track(out);
    };
    const wrapped: Handler = handler.length === 0 ? plain : (req, info) => {
      count[0]++;
      let i = info;
      if (s.proxied) {
        const real = s.remoteOf((info.remoteAddr as { port: number }).port);
        if (real) {
          i = {
            remoteAddr: real,
            get completed() {
              return info.completed;
            },
          };
        }
      }
      const out = handler(req, i);
      return out instanceof Promise ? out.then(track) : track(out);
    };
    // A restart behind the proxy binds the address the proxy connects to (the first server's).
    let first: Addr | undefined;
    const life = new ServerLife(() => {
      const again = !first
        ? {}
        : s.sameAddress && first.transport === "tcp"
        ? { port: first.port }
        : s.restartOn
        ? { path: s.restartOn() }
        : {};
      const server = denoServe({ ...opts, ...again }, wrapped);
      first ??= server.addr;
      return server;
    }, s);
    signal?.addEventListener("abort", () => s.shutdown(), { once: true });
    const tls = options.cert !== undefined && options.key !== undefined;
    return {
      native: life.current,
      throwaway: life.current.addr,
      tls,
      // Deno negotiates HTTP/2 over TLS (ALPN).
      multiplexed: tls,
      draining: (on) => {
        // The quiet wait counts from the drain's start, not from the last answer before it.
        if (on) clock.mark();
        draining = on;
      },
      quiet: (idleMs, maxMs) => clock.quiet(idleMs, maxMs),
      async finish(): Promise<void> {
        // WebSockets first: Deno's shutdown() would close them at once.
        await sockets.closed();
        // Closes idle connections and waits for in-flight responses.
        await life.shutdown();
      },
      closeWebSockets: (ms) => sockets.closeAll(ms),
      closeSpread: (windowMs) => void sockets.closeSpread(windowMs),
      // The connections are cut by now, so Deno's graceful shutdown ends at once.
      close: () => life.shutdown(),
      finished: life.finished,
      listening(addr: Addr, url: URL): void {
        if (userOnListen) userOnListen(addr);
        else console.log(`Listening on ${url.href}`);
      },
      ref: () => life.ref(true),
      unref: () => life.ref(false),
    };
  },
};

/**
 * One `Deno.serve` after another on the same socket: Deno's accept loop ends
 * for good when accept(2) fails with EMFILE/ENFILE (the server's `finished`
 * rejects, "Too many open files (os error 24)"). Then a new server is started
 * on a throwaway address and the socket moved under it again (`reattach`),
 * retried every {@link FD_BACKOFF_MS} while fds are short; meanwhile
 * connections wait in the socket's backlog. Said in a rate-limited warning.
 */
class ServerLife {
  current: DenoHttpServer;
  readonly finished: Promise<void>;
  #all = new Set<DenoHttpServer>();
  #stopping = false;
  #refed = true;
  #end!: { resolve: () => void; reject: (err: unknown) => void };
  #warning: RateLimitedWarning;

  constructor(readonly start: () => DenoHttpServer, readonly s: AdapterStart) {
    this.#warning = new RateLimitedWarning(s.warn);
    this.finished = new Promise((resolve, reject) => (this.#end = { resolve, reject }));
    this.current = this.#add(start());
  }

  #add(server: DenoHttpServer): DenoHttpServer {
    this.#all.add(server);
    server.finished.then(
      () => this.#ended(server),
      (err) => this.#failed(server, err),
    );
    return server;
  }

  #ended(server: DenoHttpServer): void {
    this.#all.delete(server);
    if (server === this.current) this.#end.resolve();
  }

  #failed(server: DenoHttpServer, err: unknown): void {
    this.#all.delete(server);
    if (server !== this.current) return;
    const restartable = this.s.reattach || (this.s.sameAddress && server.addr.transport === "tcp");
    if (this.#stopping || !restartable || !isFdExhaustion(err)) return this.#end.reject(err);
    this.#warning.report(
      `Deno.serve stopped accepting: ${(err as Error).message}; restarting it on the same socket`,
    );
    void this.#restart();
  }

  // A new server, then the socket under it; both need fds, so retry until there are some.
  async #restart(): Promise<void> {
    while (!this.#stopping) {
      let next: DenoHttpServer | undefined;
      try {
        next = this.start();
        this.s.reattach?.(next.addr);
        if (!this.#refed) next.unref();
        this.current = this.#add(next);
        fdsRecovered();
        return;
      } catch (err) {
        if (next) await next.shutdown().catch(() => {});
        this.#warning.report(`cannot restart Deno.serve yet: ${(err as Error).message}`);
        await sleep(FD_BACKOFF_MS);
      }
    }
    this.#end.resolve();
  }

  ref(on: boolean): void {
    this.#refed = on;
    if (on) this.current.ref();
    else this.current.unref();
  }

  async shutdown(): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#all].map((srv) => srv.shutdown().catch(() => {})));
    if (!this.#all.size) this.#end.resolve();
  }
}
