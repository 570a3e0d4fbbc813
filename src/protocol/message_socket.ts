/**
 * The event-driven end of a control connection: what a serving generation
 * uses, through the runtime's event loop, so that nothing blocks.
 *
 * @module
 */

import type { Socket as NetSocket } from "node:net";
import type { InstarError } from "../errors.ts";
import { protocolError, shown } from "./fault.ts";
import type { Message } from "./messages.ts";
import { messageOf } from "./validate.ts";

/** Longest message a peer may send by default; longer is a protocol error. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/** How long a connection closed with a last message may take to flush it before it is cut. */
export const CLOSE_GRACE_MS = 1000;

/** What a {@link MessageSocket} reports. */
export interface MessageHandlers {
  /** One complete, version-checked message. */
  message(m: Message): void;
  /** The peer closed, or broke the protocol (`error`); no more messages come. */
  end(error: InstarError | null): void;
}

/**
 * Closes `socket`, after writing `msg` if given: the message and the end of
 * the stream are sent at once, and the socket is destroyed (its fd closed)
 * when the peer closes its side, at the latest after {@link CLOSE_GRACE_MS}.
 * The grace lets a peer that writes before it reads (its request crossing
 * the refusal) still read why; a peer that neither reads nor closes cannot
 * hold the fd longer.
 */
export function closeWith(socket: NetSocket, msg?: Message): void {
  if (socket.destroyed) return;
  if (!msg) {
    socket.destroy();
    return;
  }
  if (socket.writableEnded) return; // closing already, with its own last message
  const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  socket.once("close", () => clearTimeout(timer));
  socket.resume(); // what the peer still sends is discarded, so its end is seen
  socket.end(JSON.stringify(msg) + "\n");
}

/**
 * A control connection read through the event loop: newline-delimited JSON
 * from a `node:net` socket, checked with {@link messageOf}. Writes are queued
 * by the runtime and never block. Fds a peer attaches are dropped by the
 * kernel, since the runtime reads with read(2).
 */
export class MessageSocket {
  /** The runtime socket. */
  readonly socket: NetSocket;
  #buf = "";
  #ended = false;
  #handlers: MessageHandlers;
  #maxBytes: number;

  /** Starts reading `socket`, reporting to `handlers`; a line longer than `maxBytes` is a protocol error. */
  constructor(socket: NetSocket, handlers: MessageHandlers, maxBytes = MAX_MESSAGE_BYTES) {
    this.socket = socket;
    this.#handlers = handlers;
    this.#maxBytes = maxBytes;
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => this.#data(d));
    socket.on("end", () => this.#end(null));
    socket.on("close", () => this.#end(null));
    socket.on("error", () => this.#end(null));
  }

  #data(d: string): void {
    if (this.#ended) return;
    this.#buf += d;
    let nl: number;
    try {
      // Lengths in UTF-16 units: at most the bytes received, so the check is never laxer.
      while (!this.#ended && (nl = this.#buf.indexOf("\n")) >= 0) {
        if (nl > this.#maxBytes) this.#tooLong();
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        this.#handlers.message(messageOf(parseLine(line)));
      }
      if (this.#buf.length > this.#maxBytes) this.#tooLong();
    } catch (err) {
      this.#buf = "";
      this.#end(err as InstarError);
    }
  }

  #tooLong(): never {
    protocolError(`message longer than ${this.#maxBytes} bytes`);
  }

  /** Sends what arrives from now on to `handlers` (a control connection turned handover). */
  rebind(handlers: MessageHandlers): void {
    this.#handlers = handlers;
  }

  #end(error: InstarError | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#handlers.end(error);
  }

  /** Queues `msg`; false when the connection is gone. */
  send(msg: Message): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false;
    this.socket.write(JSON.stringify(msg) + "\n");
    return true;
  }

  /** Sends `msg` (if given) and closes: see {@link closeWith}. Nothing more is reported. */
  close(msg?: Message): void {
    this.#ended = true;
    this.#buf = "";
    closeWith(this.socket, msg);
  }
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    protocolError(`malformed message ${shown(line)}`);
  }
}
