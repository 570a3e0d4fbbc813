/**
 * The side that connects to a control socket: the `instar` command (status,
 * upgrade) and a new generation asking for a handover. Whoever bound the path
 * first answers there, so only a peer running as our own user is believed.
 *
 * @module
 */

import * as sys from "../ffi/mod.ts";
import { C } from "../ffi/mod.ts";
import { encodeUnix } from "../ffi/sockaddr.ts";
import { InstarError } from "../errors.ts";
import { Channel } from "./channel.ts";
import type { Message } from "./messages.ts";
import { messageOf } from "./validate.ts";

/**
 * Connects to the control socket at `path`. Nobody there throws the
 * SystemError of connect(2): ENOENT (no file) or ECONNREFUSED (a stale one);
 * with `nonBlocking`, a server whose backlog is full throws EAGAIN instead of
 * making the thread wait. The peer is not checked: {@link ControlClient.connect}
 * does that.
 */
export function connectControl(path: string, nonBlocking = false): Channel {
  const flags = C.SOCK_STREAM | C.SOCK_CLOEXEC | (nonBlocking ? C.SOCK_NONBLOCK : 0);
  const fd = sys.socket(C.AF_UNIX, flags);
  try {
    sys.connect(fd, encodeUnix(path), `control socket ${path}`);
  } catch (err) {
    sys.close(fd);
    throw err;
  }
  return new Channel(fd);
}

/** Whether connecting failed because nobody listens at the path. */
export function nobodyThere(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOENT" || code === "ECONNREFUSED";
}

/** The message of the `PERMISSION_DENIED` thrown when the peer runs as `peerUid`, not `ourUid`. */
export type OtherUser = (peerUid: number, ourUid: number) => string;

/** A connection to a control socket whose peer runs as this process's user. */
export class ControlClient {
  /** The socket path (or `@name`). */
  readonly path: string;
  /** The channel; a handover reads its hello (with the attached fds) from it. */
  readonly channel: Channel;

  private constructor(path: string, channel: Channel) {
    this.path = path;
    this.channel = channel;
  }

  /**
   * Connects to `path` and checks the peer's uid (SO_PEERCRED). Nobody there
   * throws as {@link connectControl} does (see {@link nobodyThere}); a peer of
   * another user is cut off and `PERMISSION_DENIED` thrown with `otherUser`'s
   * message. `nonBlocking` for a serving generation, whose thread must never
   * wait on a peer: then send with {@link sendNow}.
   */
  static connect(path: string, otherUser: OtherUser, nonBlocking = false): ControlClient {
    const channel = connectControl(path, nonBlocking);
    const { uid } = sys.peerCred(channel.fd);
    if (uid !== sys.getuid()) {
      channel.close();
      throw new InstarError("PERMISSION_DENIED", otherUser(uid, sys.getuid()));
    }
    return new ControlClient(path, channel);
  }

  /** Sends `msg` (a request), waiting up to 5 s for room as {@link Channel.send} does. */
  send(msg: Message): void {
    this.channel.send(msg);
  }

  /** Sends `msg` only if the socket has room for it now; else throws EAGAIN. */
  sendNow(msg: Message): void {
    this.channel.send(msg, [], 0);
  }

  /**
   * Waits (blocking the thread, up to `timeoutMs`) for the next reply,
   * version-checked. For a request answered by one reply (`status`): replies
   * that arrived in the same read are dropped, as {@link Channel.receiveSync}
   * does; read a stream of replies with {@link replies}.
   */
  replySync(timeoutMs: number): Message {
    return messageOf(this.channel.receiveSync(timeoutMs).msg);
  }

  /** The replies that have arrived, each version-checked as it is taken; never waits. */
  *replies(): Generator<Message, void, undefined> {
    for (const { msg } of this.channel.receive()) yield messageOf(msg);
  }

  /** True once the server closed the connection and every reply was read. */
  get ended(): boolean {
    return this.channel.eof;
  }

  /** Closes the connection. */
  close(): void {
    this.channel.close();
  }
}
