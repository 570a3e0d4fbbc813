/**
 * When an unmodified application is ready: instar/auto calls `up.ready()`
 * for it.
 *
 * - A generation that inherited sockets (2, 3, …) is ready as soon as the
 *   application serves on every one of them and no serve is still starting:
 *   the old generation drains only once the new one took all it had.
 * - A first generation (nothing inherited) is ready once the application's
 *   listens stop: `settleMs` after the last one started serving, with none
 *   pending. Later listens still work; the next generation inherits them.
 * - With `readyUrl`, then also once that path answers 2xx on this generation
 *   alone (ready_url.ts).
 * - Not ready within `timeoutMs` (it never listened, or never on a socket the
 *   previous generation had: another port; the ready URL never answered 2xx):
 *   this generation fails with a reason naming what is missing, and the
 *   previous one serves on.
 *
 * @module
 */

import type { Upgrader } from "../lifecycle/upgrader.ts";
import type { Inside } from "../lifecycle/inside.ts";
import { ReadyUrl, type Twin } from "./ready_url.ts";

/** How readiness is decided (from the environment: options.ts). */
export interface ReadinessSettings {
  /** A first generation is ready this long after its last listen. */
  settleMs: number;
  /** Not ready by then: the generation fails with the reason. */
  timeoutMs: number;
  /** Ready only once `GET <readyUrl>` answers 2xx on this generation (`INSTAR_AUTO_READY_URL`). */
  readyUrl?: string;
}

/** Counts the application's serves and calls `up.ready()` when they cover what is expected. */
export class AutoReadiness {
  #up: Upgrader;
  #inside: Inside;
  #settings: ReadinessSettings;
  #expected: string[];
  #pending = 0;
  #served: string[] = [];
  #settle: ReturnType<typeof setTimeout> | undefined;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  #ready = false;
  #probe: ReadyUrl | undefined;
  #twin: Twin | undefined;
  #warm: boolean;

  /** Readiness of `up` (whose insides are `inside`), decided with `settings`. */
  constructor(up: Upgrader, inside: Inside, settings: ReadinessSettings) {
    this.#up = up;
    this.#inside = inside;
    this.#settings = settings;
    this.#expected = inside.unclaimed();
    this.#warm = settings.readyUrl === undefined;
    // Unref'd: Deno 2.9.6 runs a preload's event loop until nothing is pending before it
    // starts the application, so a timer that kept it alive would hold the application back.
    // An application that ends without listening just ends (nothing was served); one that
    // runs on without listening hears the reason at the deadline.
    this.#deadline = unrefTimer(setTimeout(() => this.#timedOut(), settings.timeoutMs));
    inside.onExit(() => {
      if (!this.#ready) inside.tellParent("instar/auto: the application exited before it listened");
    });
  }

  /**
   * Follows one serve the application started (`what` names it for errors):
   * resolves with what `serving` resolves, or fails the generation if it
   * rejects before ready (after ready, the error is the application's: it rejects).
   * `twin` starts the same server elsewhere, for the ready URL (the first one given is asked;
   * a raw `node:net` server has none).
   */
  follow<T>(what: string, serving: Promise<T>, twin?: Twin): Promise<T> {
    this.#twin ??= twin;
    this.#pending++;
    clearTimeout(this.#settle);
    return serving.then(
      (value) => {
        this.#pending--;
        this.#served.push(what);
        this.#check();
        return value;
      },
      (err) => {
        this.#pending--;
        if (!this.#ready) this.#inside.failStart(`instar/auto: ${what} failed: ${message(err)}`);
        throw err;
      },
    );
  }

  #check(): void {
    if (this.#ready || this.#pending > 0) return;
    if (this.#expected.length > 0) {
      if (this.#inside.unclaimed().length === 0) this.#declare();
      return;
    }
    this.#settle = setTimeout(() => this.#declare(), this.#settings.settleMs);
  }

  #declare(): void {
    if (this.#ready || this.#pending > 0) return;
    if (!this.#warm) return this.#askReadyUrl();
    this.#ready = true;
    clearTimeout(this.#deadline);
    this.#up.ready().catch((err) =>
      this.#inside.failStart(`instar/auto: ready() failed: ${message(err)}`)
    );
  }

  // Once: later listens that finish while it asks call #declare again.
  #askReadyUrl(): void {
    if (this.#probe) return;
    if (!this.#twin) {
      this.#inside.failStart(
        "instar/auto: a ready URL needs an HTTP server, and the application listened with raw " +
          "node:net servers only",
      );
    }
    this.#probe = new ReadyUrl(this.#settings.readyUrl!);
    this.#probe.wait(this.#twin!).then(
      (answered) => {
        this.#warm = answered;
        this.#declare();
      },
      (err) =>
        this.#inside.failStart(`instar/auto: the ready URL's server failed: ${message(err)}`),
    );
  }

  #timedOut(): void {
    if (this.#ready) return;
    const ms = this.#settings.timeoutMs;
    if (this.#probe) {
      this.#probe.stop();
      this.#inside.failStart(
        `instar/auto: GET ${this.#probe.path} did not answer 2xx on this generation within ${ms} ms ` +
          `of its start (last: ${this.#probe.last})`,
      );
    }
    const missing = this.#inside.unclaimed();
    if (this.#served.length === 0 && this.#pending === 0) {
      this.#inside.failStart(
        `instar/auto: the application did not listen within ${ms} ms (instar/auto serves ` +
          "Bun.serve, Deno.serve and node:http/node:https/node:net listen(); is this a server?)",
      );
    }
    const listened = this.#inside.claimed().join(", ") || "nothing";
    this.#inside.failStart(
      missing.length > 0
        ? `instar/auto: the application did not listen on ${missing.join(", ")} within ${ms} ms, ` +
          `which the previous generation served (it listened on ${listened})`
        : `instar/auto: the application's listens did not finish within ${ms} ms`,
    );
  }
}

function unrefTimer(t: ReturnType<typeof setTimeout>): ReturnType<typeof setTimeout> {
  const deno = (globalThis as unknown as { Deno?: { unrefTimer(id: number): void } }).Deno;
  if (typeof t === "number") deno?.unrefTimer(t);
  else (t as { unref?: () => void }).unref?.();
  return t;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
