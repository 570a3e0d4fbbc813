/**
 * What `instar/auto` (src/auto/) needs of an Upgrader beyond its public API:
 * which inherited sockets the application has not listened on yet, a socket
 * for a server of its own (raw `node:net`), and a way for a new generation to
 * fail its upgrade with a reason the previous one reports. Kept out of the public class: an application that calls
 * `up.serve()` itself decides its own readiness.
 *
 * @module
 */

import * as host from "../host.ts";
import { messages } from "../protocol/messages.ts";
import type { Shared } from "./shared.ts";
import type { Sockets } from "./sockets.ts";

/** An Upgrader's insides, as instar/auto sees them. */
export interface Inside {
  /** The keys of the sockets the previous generation passed and nobody claimed yet. */
  unclaimed(): string[];
  /** Every key claimed so far. */
  claimed(): string[];
  /** A socket claimed as `up.serve()`'s, served by `start`, counted and drained as the endpoint it builds. */
  serveCounted: Sockets["serveCounted"];
  /**
   * Ends this generation before `ready()`: the previous one (if any) hears
   * `reason` and serves on; the reason goes to stderr; exit status 1.
   */
  failStart(reason: string): never;
  /** Tells the previous generation (if any, before `ready()`) that this one fails, and why. */
  tellParent(reason: string): void;
  /** Runs `fn` when the process exits (the `exit` event; not after a signal's default action). */
  onExit(fn: () => void): void;
}

const insides = new WeakMap<object, Inside>();

/** Records `up`'s insides (the Upgrader's constructor). */
export function expose(up: object, s: Shared, sockets: () => Sockets): void {
  const tellParent = (reason: string): void => {
    const link = s.link;
    if (!link) return;
    s.link = null;
    try {
      link.channel.send(messages.error(reason));
    } catch { /* the previous generation is gone: nothing to tell */ }
    link.channel.close();
  };
  insides.set(up, {
    unclaimed: () => sockets().registry.unclaimed,
    claimed: () => sockets().registry.claimed,
    serveCounted: (spec, start) => sockets().serveCounted(spec, start),
    tellParent,
    failStart(reason: string): never {
      host.writeStderr(`instar: ${reason}\n`);
      tellParent(reason);
      return host.exit(1);
    },
    onExit(fn: () => void): void {
      host.builtin<{ once(e: "exit", f: () => void): void }>("node:process").once("exit", fn);
    },
  });
}

/** `up`'s insides; throws for an object that is not an Upgrader. */
export function insideOf(up: object): Inside {
  const inside = insides.get(up);
  if (!inside) throw new TypeError("not an Upgrader");
  return inside;
}
