/**
 * `--ready-url <path>` (`INSTAR_AUTO_READY_URL`): an application that listens
 * before it is warm is ready only once `GET <path>` answers 2xx.
 *
 * The question must reach the new generation alone. Its listening sockets are
 * the old generation's, which still accepts on them until the new one is
 * ready, so a request to the shared port may be answered by the old one. So
 * the application's first server is started once more — a twin with the same
 * handler (Bun's and Deno's options with `tls`/`cert`/`key` dropped; for a
 * node server, a plain `http.Server` with the same `request` listeners) — on
 * a Unix socket in a directory only this user can enter, asked there in plain
 * HTTP/1.1 every {@link INTERVAL_MS} ms, and closed once it answered 2xx.
 *
 * @module
 */

import type * as net from "node:net";
import * as host from "../host.ts";

/** Starts the application's server once more on the Unix socket `path`; resolves with its closer. */
export type Twin = (path: string) => Promise<() => void>;

/** How often the ready URL is asked. */
const INTERVAL_MS = 100;
/** How long one question may take. */
const ASK_MS = 2_000;

/** Asks `urlPath` on the twin of an application's server until it answers 2xx. */
export class ReadyUrl {
  /** The URL's path, e.g. `/ready`. */
  readonly path: string;
  /** What the last question got (a status or why there was none), for the failure's reason. */
  last = "not asked yet";
  #stopped = false;

  /** A probe of `path`. */
  constructor(path: string) {
    this.path = path;
  }

  /** Resolves `true` once `path` answered 2xx on `twin`, `false` if stopped first. */
  async wait(twin: Twin): Promise<boolean> {
    const dir = host.makeTempDirSync("instar-ready-");
    const sock = `${dir}/s.sock`;
    let close: (() => void) | undefined;
    try {
      close = await twin(sock);
      while (!this.#stopped) {
        this.last = await ask(sock, this.path).catch((err: Error) => err.message);
        if (/^2\d\d$/.test(this.last)) return true;
        await new Promise((r) => setTimeout(r, INTERVAL_MS));
      }
      return false;
    } finally {
      close?.();
      host.removeTreeSync(dir);
    }
  }

  /** Stops asking (the generation failed). */
  stop(): void {
    this.#stopped = true;
  }
}

/** `GET urlPath` on the Unix socket `sock`: resolves with the status code, rejects without one. */
function ask(sock: string, urlPath: string): Promise<string> {
  const netMod = host.builtin<typeof net>("node:net");
  return new Promise((resolve, reject) => {
    const s = netMod.connect({ path: sock });
    let head = "";
    const end = (err: Error | null, status?: string) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(status!);
    };
    const timer = setTimeout(() => end(new Error(`no answer within ${ASK_MS} ms`)), ASK_MS);
    s.setEncoding("latin1");
    s.once("connect", () => {
      s.write(`GET ${urlPath} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    });
    s.on("data", (chunk: string) => {
      head += chunk;
      if (!head.includes("\r\n")) return;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      end(m ? null : new Error(`not an HTTP answer: ${JSON.stringify(head.slice(0, 40))}`), m?.[1]);
    });
    s.once("error", (err: Error) => end(err));
    s.once("close", () => end(new Error("closed without an answer")));
  });
}
