// The Upgrader inside the test process: every failure reason of upgrade(),
// for both spawn backends, and bad options.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { UpgradeError, Upgrader } from "../mod.ts";
import { getBody, zombieChildren } from "./support/helpers.ts";
import process from "node:process";

async function upgrader(extra: Record<string, unknown>) {
  const up = await Upgrader.create({
    upgradeSignal: null,
    stopSignals: [],
    exitAfterDrain: false,
    ...extra,
  });
  const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
  await up.ready();
  return { up, listener };
}

for (const backend of ["fork", "posix_spawn"] as const) {
  describe(`upgrade() failures (${backend})`, () => {
    test("a command that cannot be executed rejects with exec-failed and the errno", async () => {
      const { up, listener } = await upgrader({
        spawnBackend: backend,
        command: "/nonexistent/instar-test-binary",
        args: [],
      });
      try {
        const failed: string[] = [];
        up.on("upgrade-failed", ({ error }) => failed.push(error.reason));
        const err = await up.upgrade().then(() => null, (e) => e);
        assert.ok(err instanceof UpgradeError, String(err));
        assert.equal(err.reason, "exec-failed");
        assert.equal(err.errno, "ENOENT");
        assert.match(err.message, /nonexistent\/instar-test-binary/);
        assert.deepEqual(failed, ["exec-failed"]);
        assert.equal(up.state, "ready", "keeps serving");
      } finally {
        listener.close();
      }
    });

    test("a new generation that exits before ready rejects with exited and its code", async () => {
      const { up, listener } = await upgrader({
        spawnBackend: backend,
        command: "/bin/sh",
        args: ["-c", "exit 7"],
      });
      try {
        const err = await up.upgrade().then(() => null, (e) => e);
        assert.equal(err?.reason, "exited");
        assert.equal(err.exitCode, 7);
        assert.deepEqual(zombieChildren(process.pid), []);
      } finally {
        listener.close();
      }
    });

    test("a new generation killed by a signal rejects with killed and the signal name", async () => {
      const { up, listener } = await upgrader({
        spawnBackend: backend,
        command: "/bin/sh",
        args: ["-c", "kill -SEGV $$"],
      });
      try {
        const err = await up.upgrade().then(() => null, (e) => e);
        assert.equal(err?.reason, "killed");
        assert.equal(err.signal, "SIGSEGV");
      } finally {
        listener.close();
      }
    });

    test("a new generation that hangs is killed and reaped at the ready timeout", async () => {
      const { up, listener } = await upgrader({
        spawnBackend: backend,
        command: "/bin/sleep",
        args: ["30"],
        readyTimeout: 300,
      });
      try {
        const err = await up.upgrade().then(() => null, (e) => e);
        assert.equal(err?.reason, "ready-timeout");
        assert.ok(err.pid > 0);
        assert.deepEqual(zombieChildren(process.pid), []);
        assert.throws(() => process.kill(err.pid, 0), { code: "ESRCH" }, "the child is gone");
        // and the next attempt is allowed
        const again = await up.upgrade().then(() => null, (e) => e);
        assert.equal(again?.reason, "ready-timeout");
      } finally {
        listener.close();
      }
    });

    test("a program that is not an instar generation never says ready: protocol is not faked", async () => {
      const { up, listener } = await upgrader({
        spawnBackend: backend,
        command: "/usr/bin/env",
        args: [
          "python3",
          "-c",
          "import os, time; os.write(int(os.environ['INSTAR_CONTROL_FD']), " +
          'b\'{"type":"ready","v":9}\\n\'); time.sleep(5)',
        ],
        readyTimeout: 3000,
      });
      try {
        const err = await up.upgrade().then(() => null, (e) => e);
        assert.equal(err?.reason, "protocol-error");
        assert.match(err.message, /version 9/);
      } finally {
        listener.close();
      }
    });
  });
}

describe("Upgrader options and triggers", () => {
  test("bad options are refused with INVALID_ARGUMENT naming them", async () => {
    await assert.rejects(() => Upgrader.create({ upgradeSignal: "SIGUSR1" }), /SIGUSR1.*inspector/);
    await assert.rejects(() => Upgrader.create({ stopSignals: ["SIGNOPE"] }), /SIGNOPE/);
    await assert.rejects(() => Upgrader.create({ command: "relative/path" }), /absolute path/);
    await assert.rejects(
      () => Upgrader.create({ readyTimeout: -1, upgradeSignal: null, stopSignals: [] }),
      /readyTimeout is -1/,
    );
  });

  test("upgrade() before ready() and ready() twice are refused", async () => {
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    const err = await up.upgrade().then(() => null, (e) => e);
    assert.equal(err?.reason, "not-ready");
    await up.ready();
    await assert.rejects(() => up.ready(), { code: "INVALID_STATE" });
  });

  test("listening twice on the same options is refused", async () => {
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    const l = await up.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await assert.rejects(() => up.listen({ hostname: "127.0.0.1", port: 0 }), {
        code: "INVALID_ARGUMENT",
      });
    } finally {
      l.close();
    }
  });

  const fallback = "serve() that cannot transplant says so with a serve-fallback event, and serves";
  test(fallback, {}, async () => {
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    const events: { addr: string; code: string }[] = [];
    up.on("serve-fallback", ({ addr, reason }) => events.push({ addr, code: reason.code }));
    const server = await up.serve({
      hostname: "127.0.0.1",
      port: 0,
      knownMasks: {}, // what a runtime whose reactor changed would look like
      fetch: () => new Response("ok"),
    });
    assert.equal(server.mode, "fallback");
    assert.deepEqual(events, [{
      addr: `127.0.0.1:${server.port}`,
      code: "TRANSPLANT_UNSUPPORTED",
    }]);
    const res = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await res.text(), "ok");
    await up.ready();
    up.stop();
    await up.drained;
  });

  test("stop() drains: listeners close, exit resolves with stop, drained resolves", async () => {
    const { up } = await upgrader({});
    const states: string[] = [];
    up.on("state", ({ state }) => states.push(state));
    up.stop();
    assert.equal(await up.exit, "stop");
    await up.drained;
    assert.deepEqual(states, ["draining", "stopped"]);
    const err = await up.upgrade().then(() => null, (e) => e);
    assert.equal(err?.reason, "stopping");
  });
});

describe("up.serve() per request", () => {
  const G = globalThis as unknown as Record<string, Record<string, unknown>>;
  const ns = "Bun" in globalThis ? G.Bun : G.Deno;
  const own = ns.serve as (...a: unknown[]) => unknown;
  const create = () =>
    Upgrader.create({ upgradeSignal: null, stopSignals: [], exitAfterDrain: false });

  test("up.serve() counts the requests of a handler that takes no arguments, and on Deno passes Deno.serve a handler that takes none", async () => {
    // Deno builds no Request for a handler of length 0: a wrapper that took arguments would undo
    // that on every request. Spy on what the runtime's own serve() is given.
    const lengths: number[] = [];
    ns.serve = function (this: unknown, ...a: unknown[]) {
      const o = a[0] as { fetch?: () => unknown };
      lengths.push(typeof a[1] === "function" ? a[1].length : o.fetch!.length);
      return own.apply(this, a);
    };
    const up = await create();
    try {
      const server = await up.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: () => new Response("no arguments\n"),
      });
      ns.serve = own;
      await up.ready();
      // Bun passes (req, server) whatever the length: there the wrapper's length plays no part.
      if (!("Bun" in globalThis)) assert.deepEqual(lengths, [0]);
      for (let i = 0; i < 3; i++) assert.equal(await getBody(server.port!), "no arguments\n");
      const [endpoint] = (await up.metrics()).endpoints;
      assert.equal(endpoint.kind, "serve");
      assert.equal(endpoint.accepted, 3);
    } finally {
      ns.serve = own;
      await up.stop();
    }
  });

  test("up.serve() gives a handler that reads its arguments by a rest parameter what the runtime's own server gives it", async () => {
    // Length 0, yet it reads its arguments: Bun passes the request, Deno.serve nothing.
    const handler = (...a: unknown[]) =>
      new Response(`${a.length > 0 && a[0] instanceof Request ? "a request" : "nothing"}\n`);
    const bare = "Bun" in globalThis
      ? own.call(ns, { hostname: "127.0.0.1", port: 0, fetch: handler }) as {
        port: number;
        stop(): unknown;
      }
      : own.call(ns, { hostname: "127.0.0.1", port: 0, onListen() {} }, handler) as {
        addr: { port: number };
        shutdown(): Promise<void>;
      };
    const barePort = "port" in bare ? bare.port : bare.addr.port;
    const up = await create();
    try {
      const server = await up.serve({ hostname: "127.0.0.1", port: 0, fetch: handler });
      await up.ready();
      const expected = await getBody(barePort);
      assert.equal(expected, "Bun" in globalThis ? "a request\n" : "nothing\n");
      assert.equal(await getBody(server.port!), expected);
    } finally {
      await up.stop();
      await ("stop" in bare ? bare.stop() : bare.shutdown());
    }
  });
});
