// The protocol between generations: a child given bad metadata stops with a
// clear error, tells its parent, and never adopts an fd it was not told about.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { decode, encodeInet } from "../src/ffi/sockaddr.ts";
import { CONTROL_FD_ENV, PROTOCOL_VERSION } from "../src/protocol/messages.ts";
import { validateHello } from "../src/protocol/validate.ts";
import { Channel } from "../src/protocol/channel.ts";
import { spawn } from "../src/process/spawn.ts";
import { cleanupAfterTests, ROOT, RUNTIME, runtimeCmd, sleep } from "./support/helpers.ts";

const dir = cleanupAfterTests().tempDir("instar-proto-");

// The child: starts an Upgrader and reports what happened in a file.
const CHILD = join(dir, "child.ts");
writeFileSync(
  CHILD,
  `import { writeFileSync } from "node:fs";
import process from "node:process";
import { Upgrader } from ${JSON.stringify(join(ROOT, "mod.ts"))};
const out = process.argv[2];
const warnings = [];
console.warn = (m) => warnings.push(String(m)); // a warning with nobody subscribed goes here
try {
  const up = await Upgrader.create({ upgradeSignal: null, stopSignals: [] });
  const succeeded = (await up.metrics()).upgrades.succeeded;
  writeFileSync(out, JSON.stringify({ ok: true, generation: up.generation, env: process.env.${CONTROL_FD_ENV} ?? null, ...(warnings.length ? { warnings, succeeded } : {}) }));
} catch (e) {
  writeFileSync(out, JSON.stringify({ ok: false, code: e.code, message: e.message }));
  process.exit(3);
}
`,
);

function listeningSocket(): number {
  const fd = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.bind(fd, encodeInet("127.0.0.1", 0)!);
  sys.listenFd(fd, 16);
  return fd;
}

/** Runs the child with `hello` (raw text) waiting on its control channel; returns its report. */
async function runChild(hello: string, passFds: number[] = []) {
  const [mine, theirs] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
  const channel = new Channel(mine);
  sys.write(mine, new TextEncoder().encode(hello));
  const out = join(dir, `out-${Math.random()}.json`);
  const [path, ...rest] = runtimeCmd(RUNTIME, CHILD, [out]);
  const env = Object.entries(process.env).map(([k, v]) => `${k}=${v}`)
    .filter((e) => !e.startsWith(`${CONTROL_FD_ENV}=`));
  env.push(`${CONTROL_FD_ENV}=${theirs}`);
  const pid = spawn({ path, argv: [path, ...rest], env, fds: [...passFds, theirs] });
  sys.close(theirs);
  let status: sys.WaitStatus | null = null;
  for (let i = 0; i < 600 && !status; i++) {
    await sleep(50);
    status = sys.waitpidNoHang(pid);
  }
  const replies = channel.receive().map((r) => r.msg as Record<string, unknown>);
  channel.close();
  assert.ok(status, "child finished");
  return { status, report: JSON.parse(readFileSync(out, "utf8")), replies };
}

const addrOf = (fd: number) => decode(sys.getsockname(fd));

function hello(listeners: unknown[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    type: "hello",
    v: PROTOCOL_VERSION,
    generation: 2,
    pid: process.pid,
    transfer: "inherit",
    listeners,
    ...extra,
  }) + "\n";
}

describe(`generation protocol (${RUNTIME})`, () => {
  test("a well-formed hello makes the child generation 2 and removes the variable", async () => {
    const fd = listeningSocket();
    try {
      const { status, report } = await runChild(
        hello([{ key: "tcp:127.0.0.1:0", addr: addrOf(fd), fd }]),
        [fd],
      );
      assert.deepEqual(report, { ok: true, generation: 2, env: null });
      assert.deepEqual(status, { pid: status.pid, exited: true, code: 0 });
    } finally {
      sys.close(fd);
    }
  });

  test("a counter region that is no region is refused with a warning: the child starts and counts afresh", async () => {
    const fd = listeningSocket();
    const [rd, wr] = sys.pipe2(C.O_CLOEXEC);
    try {
      const carried = {
        upgrades: { succeeded: 4, failed: {}, refused: {}, rolledBack: 0 },
        accepted: {},
      };
      const { status, report } = await runChild(
        hello([], { counterRegion: { fd: rd }, counters: carried }),
        [rd],
      );
      assert.equal(report.ok, true, JSON.stringify(report));
      assert.equal(report.generation, 2);
      assert.equal(report.warnings.length, 1, report.warnings.join("\n"));
      assert.match(
        report.warnings[0],
        /counter region: fd \d+ is not a sealed memfd .*; refused: counting starts afresh/,
      );
      assert.equal(report.succeeded, 4, "the hello's counters are the base of the fresh region");
      assert.deepEqual(status, { pid: status.pid, exited: true, code: 0 });
    } finally {
      for (const f of [fd, rd, wr]) sys.close(f);
    }
  });

  const cases: [string, string, RegExp][] = [
    ["malformed JSON", "{not json\n", /malformed message/],
    ["an unknown version", hello([], { v: 99 }), /version 99/],
    [
      "a listener without an fd",
      hello([{ key: "k", addr: { transport: "tcp", hostname: "127.0.0.1", port: 1 } }]),
      /no valid fd/,
    ],
    ["a wrong message type", JSON.stringify({ type: "ready", v: 1 }) + "\n", /expected a hello/],
  ];
  for (const [name, text, re] of cases) {
    test(`${name} stops the child with PROTOCOL_ERROR and tells the parent`, async () => {
      const { status, report, replies } = await runChild(text);
      assert.equal(report.ok, false);
      assert.equal(report.code, "PROTOCOL_ERROR");
      assert.match(report.message, re);
      assert.deepEqual(status, { pid: status.pid, exited: true, code: 3 });
      assert.equal(replies.length, 1);
      assert.equal(replies[0].type, "error");
      assert.match(String(replies[0].message), re);
    });
  }

  test("an fd that is missing in the child is refused, naming the fd", async () => {
    const fd = listeningSocket();
    try {
      // Announced but not passed: in the child that number is not open.
      const { report } = await runChild(hello([{ key: "tcp:x", addr: addrOf(fd), fd: 900 }]));
      assert.equal(report.code, "PROTOCOL_ERROR");
      assert.match(report.message, /fd 900 .* not a usable socket/);
    } finally {
      sys.close(fd);
    }
  });

  test("an fd of the wrong kind (a pipe, a socket not listening) is refused", async () => {
    const [r, w] = sys.pipe2(C.O_CLOEXEC);
    const idle = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    try {
      const addr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
      const pipe = await runChild(hello([{ key: "a", addr, fd: r }]), [r]);
      assert.match(pipe.report.message, new RegExp(`fd ${r} .* not a usable socket`));
      const notListening = await runChild(hello([{ key: "b", addr, fd: idle }]), [idle]);
      assert.match(notListening.report.message, new RegExp(`fd ${idle} .* not listening`));
    } finally {
      [r, w, idle].forEach(sys.close);
    }
  });

  test("a socket bound to another address than announced is refused", async () => {
    const fd = listeningSocket();
    try {
      const wrong = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
      const { report } = await runChild(hello([{ key: "k", addr: wrong, fd }]), [fd]);
      assert.match(report.message, /is bound to 127\.0\.0\.1:\d+, not 127\.0\.0\.1:1/);
    } finally {
      sys.close(fd);
    }
  });

  test("validateHello() names the first fault", () => {
    assert.throws(() => validateHello({ type: "hello", v: 1, generation: 1 }), /generation 1/);
    assert.throws(
      () =>
        validateHello({
          type: "hello",
          v: 1,
          generation: 2,
          pid: 1,
          transfer: "inherit",
          listeners: [{ key: "a", addr: { transport: "unix", path: "/x" }, fd: 3 }, {
            key: "a",
            addr: { transport: "unix", path: "/x" },
            fd: 4,
          }],
        }),
      /listed twice/,
    );
    assert.throws(
      () =>
        validateHello({ type: "hello", v: 1, generation: 2, pid: 1, transfer: "carrier-pigeon" }),
      /unknown transfer/,
    );
    const withRegion = (counterRegion: unknown) => ({
      type: "hello",
      v: 1,
      generation: 2,
      pid: 1,
      transfer: "inherit",
      listeners: [{ key: "a", addr: { transport: "unix", path: "/x" }, fd: 3 }],
      counterRegion,
    });
    assert.equal(validateHello(withRegion({ fd: 4 })).counterRegion?.fd, 4);
    for (const bad of [{ fd: 1 }, { fd: -1 }, { fd: "4" }, { fd: 4, size: 9 }, [4], null]) {
      assert.throws(() => validateHello(withRegion(bad)), /malformed counterRegion entry/);
    }
    assert.throws(() => validateHello(withRegion({ fd: 3 })), /fd 3 is named twice/);
  });
});
