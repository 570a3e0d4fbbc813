// WebSockets across upgrades (examples/ws_chat.ts, black box): open sockets
// stay on the old generation and keep chatting while it drains, new sockets
// reach the new generation, and the old one exits once its last socket closes
// or the drain timeout closes it.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import process from "node:process";
import {
  alive,
  cleanupAfterTests,
  ROOT,
  RUNTIME,
  type ServerProcess,
  stopped,
  within,
} from "./support/helpers.ts";
import { type Generations, startGenerations, upgradeByHup } from "./support/generations.ts";

const EXAMPLE = join(ROOT, "examples", "ws_chat.ts");

const left = cleanupAfterTests();
const { sockets } = left;

/** A WebSocket client that queues what it receives. */
class ChatClient {
  readonly messages: string[] = [];
  readonly closed: Promise<{ code: number; reason: string; at: number }>;
  #ws: WebSocket;
  #read = 0;
  #wake: (() => void) | undefined;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (e) => {
      this.messages.push(String(e.data));
      this.#wake?.();
    };
    this.closed = new Promise((resolve) => {
      ws.onclose = (e) => {
        resolve({ code: e.code, reason: e.reason, at: performance.now() });
        this.#wake?.();
      };
    });
  }

  static open(port: number, timeoutMs = 20_000): Promise<ChatClient> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    sockets.push(ws);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("WebSocket did not open")), timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(new ChatClient(ws));
      };
      ws.onerror = () => {
        clearTimeout(timer);
        reject(new Error(`WebSocket to port ${port} failed`));
      };
    });
  }

  send(text: string): void {
    this.#ws.send(text);
  }

  close(): void {
    this.#ws.close();
  }

  /** The next received message matching `re` (skipping others), within `timeoutMs`. */
  async next(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      while (this.#read < this.messages.length) {
        const m = this.messages[this.#read++].match(re);
        if (m) return m;
      }
      const left = deadline - performance.now();
      if (left <= 0 || this.#ws.readyState >= WebSocket.CLOSING) {
        throw new Error(`no message matching ${re}; got ${JSON.stringify(this.messages)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }

  /** Sends `text` and waits for its broadcast; returns the pid that served it. */
  async say(text: string): Promise<number> {
    this.send(text);
    const m = await this.next(new RegExp(`^pid (\\d+): ${text}$`));
    return Number(m[1]);
  }
}

/** Starts the chat example; resolves once generation 1 reports itself ready on its control socket. */
function startChat(
  drainTimeoutMs: number,
  mode = "auto",
  more: string[] = [],
): Promise<Generations> {
  return startGenerations(left, EXAMPLE, [
    ...["--drain-timeout", String(drainTimeoutMs), "--serve-mode", mode, ...more],
  ]);
}

/**
 * Sends SIGHUP to `pid`; resolves with the next generation's pid once the old
 * generation logged upgrade-succeeded: the moment it starts draining, from
 * which a drain-timeout test measures.
 */
async function upgradeLogged(server: ServerProcess, pid: number): Promise<number> {
  const from = server.lines.length;
  process.kill(pid, "SIGHUP");
  const m = await server.waitFor(/upgrade-(succeeded|failed): (.*)/, 60_000, from);
  assert.equal(m[1], "succeeded", m[2]);
  const next = Number(/pid (\d+)/.exec(m[2])![1]);
  server.pids.add(next); // killed by after() even if it has not logged yet
  return next;
}

describe(`WebSocket chat across upgrades (${RUNTIME})`, () => {
  for (const mode of ["transplant", "fallback"]) {
    test(`open WebSockets keep chatting on the old generation, new ones reach the new generation, and the old one exits 0 once they close (serve ${mode})`, async () => {
      const g = await startChat(60_000, mode);
      const { server, port } = g;
      const oldPid = server.pid;
      const a = await ChatClient.open(port);
      const b = await ChatClient.open(port);
      assert.equal(Number((await a.next(/^welcome pid (\d+) generation 1$/))[1]), oldPid);
      await b.next(/^welcome/);
      assert.equal(await a.say("before the upgrade"), oldPid);
      // A broadcast reaches the other client of the generation too.
      await b.next(/^pid \d+: before the upgrade$/);

      const newPid = await upgradeByHup(g, oldPid);
      assert.notEqual(newPid, oldPid);
      assert.equal(Number((await a.next(/^draining pid (\d+)/))[1]), oldPid);

      // The old generation still serves its open sockets, broadcasts included.
      for (let i = 0; i < 5; i++) {
        assert.equal(await a.say(`after the upgrade ${i}`), oldPid);
        assert.equal(
          Number((await b.next(new RegExp(`^pid (\\d+): after the upgrade ${i}$`)))[1]),
          oldPid,
        );
      }
      assert.equal(await b.say("b is still here"), oldPid);

      // A new socket reaches the new generation, which chats on its own.
      const c = await ChatClient.open(port);
      assert.equal(Number((await c.next(/^welcome pid (\d+) generation 2$/))[1]), newPid);
      assert.equal(await c.say("hello from the new generation"), newPid);
      assert.equal(await a.say("old and new side by side"), oldPid);
      assert.equal(alive(oldPid), true, "the old generation waits for its open sockets");
      assert.ok(
        a.messages.every((m) => m.includes(`pid ${oldPid}`)),
        `the old generation's client only hears the old generation: ${JSON.stringify(a.messages)}`,
      );

      // Closing the old sockets lets the old generation finish draining and exit cleanly.
      a.close();
      b.close();
      assert.equal(await within(server.exited, 30_000, "old generation exit"), 0);
      await server.waitFor(new RegExp(`pid=${oldPid} gen=1\\] drained: 0 connection`), 5_000);

      assert.equal(await c.say("the new generation serves on"), newPid);
      c.close();
      await within(c.closed, 10_000, "new socket close");
      process.kill(newPid, "SIGTERM");
      await stopped(newPid);
    });
  }

  test("at a short drain timeout the old generation closes a WebSocket left open, then exits 0", async () => {
    const drainMs = 1500;
    // No spread: the close comes at the timeout itself (ws_herd_test.ts covers the spread).
    const { server, port } = await startChat(drainMs, "auto", ["--close-spread", "0"]);
    const oldPid = server.pid;
    const a = await ChatClient.open(port);
    await a.next(/^welcome/);
    const newPid = await upgradeLogged(server, oldPid);
    const drainingAt = performance.now();
    assert.equal(await a.say("still open"), oldPid);

    const { code, reason, at } = await within(
      a.closed,
      30_000,
      "old socket closed by the drain timeout",
    );
    // 1012 "service restart", with a reason: a close frame, not a cut TCP connection.
    assert.equal(code, 1012);
    assert.match(reason, /restarting/);
    assert.ok(at - drainingAt >= drainMs - 200, `closed after ${at - drainingAt} ms`);
    assert.equal(await within(server.exited, 30_000, "old generation exit"), 0);
    await server.waitFor(new RegExp(`pid=${oldPid} gen=1\\] drained: 1 connection`), 5_000);

    const c = await ChatClient.open(port);
    assert.equal(Number((await c.next(/^welcome pid (\d+) generation 2$/))[1]), newPid);
    c.close();
    await within(c.closed, 10_000, "new socket close");
    process.kill(newPid, "SIGTERM");
    await stopped(newPid);
  });
});
