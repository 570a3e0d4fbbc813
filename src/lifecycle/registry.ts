/**
 * The fd registry of a generation (in the spirit of tableflip's `Fds` and
 * ecdysis's listener registry): a socket is claimed by key from what the
 * previous generation passed, then from what systemd activated (by name or
 * address), else opened fresh; the registry lists what to pass to the next
 * generation and closes what nobody claimed.
 *
 * @module
 */

import { invalid } from "../errors.ts";
import { close as closeFd } from "../ffi/mod.ts";
import type { DatagramSpec, SocketSpec } from "../net/specs.ts";
import { type ActivatedSocket, activatedSockets, findActivated } from "../systemd/activation.ts";
import type { ControlMeta, Hello, ListenerMeta } from "../protocol/messages.ts";
import type { Endpoint } from "../types.ts";

/** The registry key of a spec: its name, else its address as asked for (port 0 stays 0). */
export function keyOf(spec: SocketSpec): string {
  if (spec === null || typeof spec !== "object" || "fd" in spec) {
    invalid(
      "listen options",
      spec,
      "{ hostname?, port }, { path } or { name }: fds are managed by the Upgrader",
    );
  }
  if (spec.name !== undefined) return `name:${spec.name}`;
  if ("path" in spec) return `unix:${spec.path}`;
  if ("port" in spec) return `tcp:${spec.hostname ?? "0.0.0.0"}:${spec.port}`;
  invalid("listen options", JSON.stringify(spec), "{ hostname?, port }, { path } or { name }");
}

/** The registry key of a datagram spec: `udp:<host>:<port>` or `unixgram:<path>` (port 0 stays 0). */
export function datagramKeyOf(spec: DatagramSpec): string {
  if (spec === null || typeof spec !== "object" || "fd" in spec) {
    invalid(
      "listenDatagram options",
      spec,
      "{ hostname?, port } or { path }: fds are managed by the Upgrader",
    );
  }
  if ("path" in spec) return `unixgram:${spec.path}`;
  if ("port" in spec) return `udp:${spec.hostname ?? "0.0.0.0"}:${spec.port}`;
  invalid("listenDatagram options", JSON.stringify(spec), "{ hostname?, port } or { path }");
}

/** The sockets of one generation, by key. */
export class Registry {
  #inherited = new Map<string, number>();
  // Keys whose socket systemd activated (in this generation or an earlier one): it stays systemd's.
  #fromSystemd = new Set<string>();
  #activated: ActivatedSocket[];
  #control: ControlMeta | null;
  #endpoints: Endpoint[] = [];
  #keys = new Set<string>();

  /** What the previous generation passed (`hello`) and systemd activated. */
  constructor(hello: Hello | null, activated: ActivatedSocket[]) {
    for (const l of hello?.listeners ?? []) {
      this.#inherited.set(l.key, l.fd);
      if (l.activated) this.#fromSystemd.add(l.key);
    }
    this.#control = hello?.control ?? null;
    this.#activated = activated;
  }

  /**
   * Reserves `spec`'s key and returns the socket to adopt for it: inherited,
   * then activated; `undefined` means open a fresh one. A key asked for
   * twice is `INVALID_ARGUMENT`; so is a bare name nobody passed.
   */
  claim(spec: SocketSpec): { key: string; fd: number | undefined; activated: boolean } {
    const key = keyOf(spec);
    if (this.#keys.has(key)) {
      invalid("listen options", key, "an address this Upgrader does not listen on yet");
    }
    this.#keys.add(key);
    const inherited = this.#inherited.get(key);
    if (inherited !== undefined) {
      this.#inherited.delete(key);
      return { key, fd: inherited, activated: this.#fromSystemd.has(key) };
    }
    const activated = findActivated(this.#activated, spec);
    if (activated) {
      this.#activated.splice(this.#activated.indexOf(activated), 1);
      this.#fromSystemd.add(key);
      return { key, fd: activated.fd, activated: true };
    }
    if (!("port" in spec) && !("path" in spec)) {
      this.#keys.delete(key);
      invalid(
        "name",
        spec.name,
        "the name of a socket systemd passed (FileDescriptorName=), or add an address",
      );
    }
    return { key, fd: undefined, activated: false };
  }

  /**
   * Reserves a datagram socket's key (`udp:host:port`, `unixgram:path`) and
   * returns the inherited socket for it, if any; `undefined` means open a
   * fresh one. (systemd's datagram sockets are not adopted: only listening
   * stream sockets are kept from LISTEN_FDS.)
   */
  claimDatagram(spec: DatagramSpec): { key: string; fd: number | undefined } {
    const key = datagramKeyOf(spec);
    if (this.#keys.has(key)) {
      invalid("listenDatagram options", key, "an address this Upgrader does not use yet");
    }
    this.#keys.add(key);
    const fd = this.#inherited.get(key);
    this.#inherited.delete(key);
    return { key, fd };
  }

  /** The keys of the inherited sockets nobody has claimed yet. */
  get unclaimed(): string[] {
    return [...this.#inherited.keys()];
  }

  /** Every key claimed so far (listeners, servers, datagram sockets). */
  get claimed(): string[] {
    return [...this.#keys];
  }

  /** Gives back a key whose socket could not be opened. */
  unclaim(key: string): void {
    this.#keys.delete(key);
  }

  /** Records a serving endpoint: it is passed on and drained. */
  add(e: Endpoint): void {
    this.#endpoints.push(e);
  }

  /** Every endpoint, in the order they were added. */
  get endpoints(): readonly Endpoint[] {
    return this.#endpoints;
  }

  /** The inherited control socket's fd if it is bound to `path`; the registry forgets it. */
  takeControl(path: string): number | undefined {
    const c = this.#control;
    if (c?.path !== path) return undefined;
    this.#control = null;
    return c.fd;
  }

  /** What the next generation gets, fd numbers as they are in this process. */
  passable(
    control: ControlMeta | null,
  ): { listeners: ListenerMeta[]; control: ControlMeta | null } {
    const listeners = this.#endpoints.map((e) => ({
      key: e.key,
      addr: e.addr,
      fd: e.fd,
      ...(this.#fromSystemd.has(e.key) ? { activated: true } : {}),
    }));
    return { listeners, control };
  }

  /** Closes what was passed or activated and not claimed, so the kernel stops queueing for us. */
  closeUnclaimed(warn: (message: string) => void): void {
    for (const [key, fd] of this.#inherited) {
      warn(`inherited listener ${key} was not claimed; closing it`);
      closeFd(fd);
    }
    this.#inherited.clear();
    if (this.#control) {
      warn(`the inherited control socket ${this.#control.path} is not used any more; closing it`);
      closeFd(this.#control.fd);
      this.#control = null;
    }
    for (const s of this.#activated) {
      warn(`socket-activated fd ${s.fd} (${s.name}) was not claimed; closing it`);
      closeFd(s.fd);
    }
    this.#activated = [];
  }
}

/**
 * The listening stream sockets systemd passed (`LISTEN_FDS`); any other fd it
 * passed is closed with a warning, since nothing here can serve it.
 */
export function activatedListeners(warn: (message: string) => void): ActivatedSocket[] {
  const { sockets } = activatedSockets();
  const usable = sockets.filter((s) => s.kind === "stream" && s.listening);
  for (const s of sockets) {
    if (usable.includes(s)) continue;
    warn(`socket-activated fd ${s.fd} (${s.name}) is not a listening stream socket; closing it`);
    try {
      closeFd(s.fd);
    } catch { /* already closed */ }
  }
  return usable;
}
