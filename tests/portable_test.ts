// Portable mode (src/runtime/platform.ts), black box: the examples run with INSTAR_PORTABLE=1
// (the test aid that forces the mode on Linux) and serve, listen, read datagrams, chat over
// WebSockets and drain on a stop as in the full mode, while every upgrade trigger is refused
// with `unsupported-platform` and the server serves on. Deno started with --allow-net alone
// (no FFI, no /proc, no environment) runs the HTTP example the same way.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { runLoad } from "./support/load_client.ts";
import { InstarError, Upgrader, UpgradeRefusedError } from "../mod.ts";
import { decideMode, type PlatformProbe } from "../src/runtime/platform.ts";
import {
  cleanupAfterTests,
  denoBin,
  exchange,
  freePort,
  httpGet,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  sleep,
  startedTogether,
  startServer,
  within,
} from "./support/helpers.ts";

const left = cleanupAfterTests();
const CLI = join(ROOT, "src", "cli", "main.ts");
const PORTABLE = { INSTAR_PORTABLE: "1" };
const WARNING = /instar: warning: portable mode \((.*?)\): serving and stopping work/;

/** Starts `cmd`; resolves with it and the port its `ready on` line names. */
async function started(
  cmd: string[],
  env: Record<string, string> = PORTABLE,
): Promise<{ server: ServerProcess; port: number }> {
  const server = startServer(cmd, env);
  left.servers.push(server);
  const m = await server.waitFor(/\] ready on \S+:(\d+)/, 30_000);
  return { server, port: Number(m[1]) };
}

function example(name: string, args: string[] = []): string[] {
  return runtimeCmd(RUNTIME, join(ROOT, "examples", name), ["--port", "0", ...args]);
}

/** GET `path` on a fresh connection: status and body. */
async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const raw = await exchange(port, httpGet(path));
  const end = raw.indexOf("\r\n\r\n");
  return { status: Number(raw.slice(9, 12)), body: raw.slice(end + 4) };
}

/** Sends SIGHUP and waits for the refusal it caused (counted from log line `from`). */
async function refusedHup(server: ServerProcess, from: number): Promise<void> {
  process.kill(server.pid, "SIGHUP");
  await server.waitFor(/upgrade-refused: unsupported-platform: portable mode/, 10_000, from);
}

describe("the mode, decided once (src/runtime/platform.ts)", () => {
  test("forced first, then off Linux, then Deno's missing permissions, then whether libc loads", () => {
    const linux = { forced: false, os: "linux", arch: "x64", denoMissing: "", openFfi() {} };
    assert.deepEqual(decideMode(linux), { mode: "linux" });
    const cases: [Partial<PlatformProbe>, string, RegExp][] = [
      [{ forced: true, os: "darwin" }, "forced", /\(INSTAR_PORTABLE=1\).*unset INSTAR_PORTABLE/],
      [{ os: "darwin", arch: "arm64" }, "platform", /\(darwin-arm64\).*upgrades need Linux/],
      [{ os: "windows", denoMissing: "--allow-ffi" }, "platform", /\(windows-x64\)/],
      [
        { denoMissing: "--allow-ffi --allow-read" },
        "permission",
        /Deno without --allow-ffi --allow-read\).*-A/,
      ],
      [
        {
          arch: "riscv64",
          openFfi: () => {
            throw new InstarError("UNSUPPORTED_PLATFORM", "no layouts");
          },
        },
        "platform",
        /\(linux-riscv64\).*x86_64 or aarch64/,
      ],
      [
        {
          openFfi: () => {
            throw new InstarError("FFI_UNAVAILABLE", "no libc here");
          },
        },
        "ffi-unavailable",
        /\(no libc here\)/,
      ],
    ];
    for (const [probe, reason, message] of cases) {
      const m = decideMode({ ...linux, ...probe });
      assert.equal(m.mode, "portable", JSON.stringify(probe));
      if (m.mode !== "portable") continue;
      assert.equal(m.reason, reason, JSON.stringify(probe));
      assert.match(m.message, message);
      assert.match(
        m.message,
        /^portable mode \(.*\): serving and stopping work, upgrades are refused; /,
      );
    }
  });
});

describe(`portable mode, in this process (${RUNTIME})`, () => {
  test("an upgrade is refused with unsupported-platform before and after ready(), and sockets hold no fd", async () => {
    // This process's mode is decided on the first Upgrader.create(): forced here, once.
    process.env.INSTAR_PORTABLE = "1";
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    const refused: string[] = [];
    up.on("upgrade-refused", ({ error }) => refused.push(error.reason));
    const isRefusal = (e: unknown) =>
      e instanceof UpgradeRefusedError && e.reason === "unsupported-platform";
    await assert.rejects(up.upgrade(), isRefusal, "before ready(): not not-ready");
    const server = await up.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => new Response("ok"),
    });
    const listener = await up.listen({ hostname: "127.0.0.2", port: 0 }); // another key than serve's
    const sock = await up.listenDatagram({ hostname: "127.0.0.1", port: 0 });
    assert.equal(server.mode, "direct");
    assert.deepEqual([listener.fd, sock.fd], [-1, -1]);
    assert.equal(listener.kind, "node:net");
    await assert.rejects(up.listenDatagram({ path: "/tmp/instar-portable.sock" }), {
      code: "UNSUPPORTED_PLATFORM",
    });
    await assert.rejects(up.listen({ name: "web" }), { code: "INVALID_ARGUMENT" });
    await assert.rejects(
      up.listen({ hostname: "127.0.0.2", port: (listener.addr as { port: number }).port }),
      {
        code: "EADDRINUSE",
      },
    );
    // A port another server holds: the full mode's SystemError, naming the address.
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(0, "127.0.0.3", r));
    const taken = (other.address() as net.AddressInfo).port;
    await assert.rejects(
      up.serve({ hostname: "127.0.0.3", port: taken, fetch: () => new Response("") }),
      (e: unknown) =>
        e instanceof InstarError && e.code === "EADDRINUSE" &&
        e.message.includes(`cannot listen on 127.0.0.3:${taken}`),
    );
    other.close();
    await up.ready();
    await assert.rejects(up.upgrade(), isRefusal, "after ready()");
    assert.deepEqual(refused, ["unsupported-platform", "unsupported-platform"]);
    const m = await up.metrics();
    assert.equal(m.upgrades.refused["unsupported-platform"], 2);
    assert.deepEqual(m.endpoints.map((e) => e.kind).sort(), ["listen", "serve"]);
    assert.equal((await get(server.port, "/")).body, "ok");
    up.stop();
    await within(up.drained, 10_000, "drained");
    sock.close();
  });
});

/** The other APIs: listen, listenDatagram, a WebSocket. */
const OTHER_APIS: Record<string, () => Promise<void>> = {
  "listen echoes over TCP, and listenDatagram over UDP": async () => {
    const tcp = await started(example("echo_server.ts"));
    const udp = await started(example("udp_echo.ts"));
    const echoed = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port: tcp.port }, () => s.write("over tcp\n"));
      s.on("data", (d) => (resolve(d.toString()), s.destroy()));
      s.on("error", reject);
    });
    assert.equal(echoed, "over tcp\n");
    const sock = dgram.createSocket("udp4");
    left.sockets.push({ close: () => sock.close() });
    const answer = new Promise<string>((r) => sock.once("message", (m) => r(m.toString())));
    sock.send("over udp", udp.port, "127.0.0.1");
    assert.equal(await within(answer, 5_000, "udp echo"), "over udp");
    for (const s of [tcp.server, udp.server]) process.kill(s.pid, "SIGTERM");
    assert.deepEqual(await Promise.all([tcp.server.exited, udp.server.exited]), [0, 0]);
  },

  "a WebSocket chats, hears the draining notice, and is closed with 1012 at the drain timeout":
    async () => {
      const { server, port } = await started(example("ws_chat.ts", ["--drain-timeout", "700"]));
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
      const heard: string[] = [];
      const closed = new Promise<number>((r) => ws.addEventListener("close", (e) => r(e.code)));
      const next = (re: RegExp) =>
        new Promise<void>((resolve) => {
          const check = () => heard.some((m) => re.test(m)) && resolve();
          ws.addEventListener("message", (e) => (heard.push(String(e.data)), check()));
          check();
        });
      await within(next(/^welcome pid/), 5_000, "welcome");
      ws.send("hi");
      await within(next(new RegExp(`^pid ${server.pid}: hi$`)), 5_000, "broadcast");
      process.kill(server.pid, "SIGTERM");
      await within(next(/^draining pid/), 5_000, "draining notice");
      assert.equal(await within(closed, 5_000, "close"), 1012);
      assert.equal(await within(server.exited, 10_000, "exit"), 0);
    },
};

/** The zero-code preload. */
const PRELOAD: Record<string, () => Promise<void>> = {
  "an unmodified server under instar/auto serves, refuses SIGHUP with the reason, serves on, and stops with 0":
    async () => {
      const fixture = join(
        ROOT,
        "tests",
        "fixtures",
        "auto",
        RUNTIME === "bun" ? "bun_serve.js" : "deno_serve.ts",
      );
      const preload = join(ROOT, "src", "auto", "preload.ts");
      const cmd = RUNTIME === "bun"
        ? [process.execPath, "--preload", preload, fixture]
        : [denoBin(), "run", "-A", "--no-check", "--preload", preload, fixture];
      const { server, port } = await started(cmd, { ...PORTABLE, PORT: "0" });
      const before = await get(port, "/");
      assert.equal(before.status, 200);
      await refusedHup(server, 0);
      const after = await get(port, "/");
      assert.equal(after.status, 200);
      assert.equal(after.body, before.body, "the same process answers");
      assert.equal(server.lines.filter((l) => WARNING.test(l)).length, 1, "one warning");
      process.kill(server.pid, "SIGTERM");
      assert.equal(await within(server.exited, 10_000, "the stop"), 0);
    },
};

/** Deno with --allow-net only. */
const ALLOW_NET: Record<string, () => Promise<void>> = {
  "the HTTP example serves on a terminal without a permission prompt, warns once naming the missing flags, and refuses SIGHUP":
    async () => {
      // On a terminal (script(1) gives it one) a read or an environment lookup Deno has not
      // granted would prompt and wait: the detection and the start-up must ask for nothing.
      const deno = [denoBin(), "run", "--allow-net", "--no-check"];
      const app = [join(ROOT, "examples", "http_server.ts"), "--port", "0"];
      const { server, port } = await started(
        ["script", "-qec", [...deno, ...app].join(" "), "/dev/null"],
        {},
      );
      const pid = Number((await server.waitFor(/\[http pid=(\d+) gen=1\]/))[1]);
      assert.match((await get(port, "/")).body, new RegExp(`hello from pid ${pid} generation 1`));
      assert.ok(!server.lines.some((l) => /Deno requests/.test(l)), server.lines.join("\n"));
      const warnings = server.lines.filter((l) => WARNING.test(l));
      assert.equal(warnings.length, 1, server.lines.join("\n"));
      assert.match(warnings[0], /Deno without --allow-ffi --allow-read --allow-env/);
      assert.match(warnings[0], /run with -A to upgrade/);
      process.kill(pid, "SIGHUP");
      await server.waitFor(/upgrade-refused: unsupported-platform: portable mode/, 10_000);
      assert.equal((await get(port, "/")).status, 200, "serves on after the refusal");
      process.kill(pid, "SIGTERM");
      assert.equal(await within(server.exited, 10_000, "exit"), 0);
    },
};

/** instar run. */
const RUN: Record<string, () => Promise<void>> = {
  "restarts a crashed command, restarts it on SIGHUP and on a change under --watch, and stops it on SIGTERM":
    async () => {
      const port = await freePort();
      const dir = left.tempDir("instar-portable-watch-");
      const app = runtimeCmd(RUNTIME, join(ROOT, "examples", "http_server.ts"), [
        "--port",
        `${port}`,
      ]);
      const sup = startServer(
        runtimeCmd(RUNTIME, CLI, ["run", "--restart", "on-failure", "--watch", dir, "--", ...app]),
        PORTABLE,
      );
      left.servers.push(sup);
      // Each start logs "ready"; resolves with the pid that answers once the n-th start is ready.
      const readyLines = () => sup.lines.filter((l) => /\] ready on /.test(l));
      const readyPid = async (n: number): Promise<number> => {
        const deadline = Date.now() + 30_000;
        while (readyLines().length < n && Date.now() < deadline) await sleep(50);
        const all = readyLines();
        assert.equal(all.length, n, all.join("\n"));
        const pid = Number(/\[http pid=(\d+)/.exec(all[n - 1])![1]);
        assert.match((await get(port, "/")).body, new RegExp(`hello from pid ${pid} `));
        return pid;
      };
      const first = await readyPid(1);
      assert.ok(sup.lines.some((l) => /instar run\[\d+\]: warning: portable mode/.test(l)));
      process.kill(first, "SIGKILL");
      const second = await readyPid(2);
      process.kill(sup.pid, "SIGHUP");
      const third = await readyPid(3);
      writeFileSync(join(dir, "changed.txt"), "x");
      const fourth = await readyPid(4);
      assert.equal(new Set([first, second, third, fourth]).size, 4, "a new process each time");
      assert.ok(sup.lines.some((l) => new RegExp(`\\[http pid=${third} gen=1\\] drained`).test(l)));
      process.kill(sup.pid, "SIGTERM");
      assert.equal(await within(sup.exited, 10_000, "supervisor exit"), 0, sup.lines.join("\n"));
    },

  "refuses --listen and --control, which need Linux": async () => {
    const r = await runCommand(
      runtimeCmd(RUNTIME, CLI, ["run", "--listen", "tcp://127.0.0.1:0", "--", "true"]),
      { env: PORTABLE },
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /--listen needs Linux: instar run runs in portable mode here/);
  },
};

// Each of the tests below starts a process of its own (or several), puts no load on it and bounds
// no time tightly: they mostly wait for runtimes to start and stop, so they are started all at
// once when the first of them runs, before the load test after them, and each test asserts on its
// own (its assertions run inside it; a failure rejects it).
const scenario = startedTogether<void>({ ...OTHER_APIS, ...PRELOAD, ...ALLOW_NET, ...RUN });
const together = (tests: Record<string, unknown>) => {
  for (const name of Object.keys(tests)) test(name, () => scenario(name));
};

describe(`portable mode, the other APIs (${RUNTIME})`, () => {
  // Alone, before the others start: its slow request must be taken within 100 ms, in flight when
  // the stop comes.
  test("serveNode serves Express, and a stop lets its slow request finish", async () => {
    const { server, port } = await started(example("express.ts"));
    const hello = await get(port, "/");
    assert.equal(hello.status, 200);
    assert.match(hello.body, new RegExp(`hello from pid ${server.pid} generation 1 \\(express`));
    const slow = exchange(port, httpGet("/slow?ms=600"));
    await new Promise((r) => setTimeout(r, 100));
    process.kill(server.pid, "SIGTERM");
    assert.match(await within(slow, 5_000, "slow request"), /^HTTP\/1\.1 200[^]*hello from pid/);
    assert.equal(await within(server.exited, 10_000, "exit"), 0);
  });
  together(OTHER_APIS);
});

describe(`portable mode, the zero-code preload (${RUNTIME})`, () => together(PRELOAD));
describe("portable mode, Deno with --allow-net only", () => together(ALLOW_NET));
describe(`portable mode, instar run (${RUNTIME})`, () => together(RUN));

describe(`portable mode, examples/http_server.ts (${RUNTIME})`, () => {
  test("serves, warns once, refuses SIGHUP and `instar upgrade` under load without a failed request, answers `instar status`, and a stop drains a slow request and a stream", async () => {
    const ctl = join(left.tempDir("instar-portable-"), "ctl.sock");
    const { server, port } = await started(
      example("http_server.ts", ["--drain-timeout", "5000", "--control", ctl]),
    );
    const hello = await get(port, "/");
    assert.equal(hello.status, 200);
    assert.match(hello.body, new RegExp(`hello from pid ${server.pid} generation 1`));
    assert.equal((await get(port, "/healthz")).status, 200);

    // Three upgrade signals under keep-alive and fresh-connection load: each refused with the
    // reason, the same process answers every request, none fails (the client never re-sends).
    const ac = new AbortController();
    const common = { port, durationMs: 30_000, signal: ac.signal };
    const loads = [
      runLoad({ ...common, connections: 4 }),
      runLoad({ ...common, keepAlive: false }),
    ];
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 150));
      await refusedHup(server, server.lines.length);
    }
    // The control socket (node:net, mode 0600): status answered, an upgrade refused with the reason.
    const status = await runCommand(runtimeCmd(RUNTIME, CLI, ["status", "--control", ctl]));
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`pid ${server.pid} +generation 1 +state ready`));
    const upgrade = await runCommand(runtimeCmd(RUNTIME, CLI, ["upgrade", "--control", ctl]));
    assert.equal(upgrade.code, 1, upgrade.stdout);
    assert.match(upgrade.stderr, /upgrade refused: unsupported-platform: portable mode/);
    ac.abort();
    for (const r of await Promise.all(loads)) {
      assert.equal(r.failed, 0, `${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > 50, `only ${r.ok} answers`);
    }
    const metrics = await get(port, "/metrics");
    assert.match(
      metrics.body,
      /instar_upgrades_total\{outcome="refused",reason="unsupported-platform"\} 4/,
    );
    assert.match(metrics.body, new RegExp(`instar_generation\\{pid="${server.pid}"\\} 1`));
    assert.equal(server.lines.filter((l) => WARNING.test(l)).length, 1, "one start-up warning");
    assert.match(server.lines.find((l) => WARNING.test(l))!, /INSTAR_PORTABLE=1/);

    // A stop: the slow request and the stream in flight finish whole; then the process exits 0.
    // Keep-alive clients get their last answers with Connection: close, so a request on its
    // way when a connection closes is rare (see below); once the listening socket is closed,
    // new connections are refused.
    const slow = exchange(port, httpGet("/slow?ms=800"));
    const stream = exchange(port, httpGet("/stream?ms=800"));
    const stopLoad = new AbortController();
    const during = runLoad({ port, connections: 4, durationMs: 15_000, signal: stopLoad.signal });
    await new Promise((r) => setTimeout(r, 150));
    const from = server.lines.length;
    process.kill(server.pid, "SIGTERM");
    await server.waitFor(/\] draining: stop/, 5_000, from);
    const [slowRaw, streamRaw] = await within(Promise.all([slow, stream]), 5_000, "in flight");
    assert.match(slowRaw, /^HTTP\/1\.1 200/);
    assert.match(slowRaw, new RegExp(`hello from pid ${server.pid}`));
    const streamLines = streamRaw.split("\r\n\r\n")[1].split("\n")
      .filter((l) => new RegExp(`^(?:[0-9a-f]+\\r)?${server.pid} \\d+`).test(l.trim()));
    assert.ok(streamLines.length >= 5, `the stream ran to its end: ${JSON.stringify(streamRaw)}`);
    assert.equal(await within(server.exited, 10_000, "exit"), 0);
    stopLoad.abort();
    const r = await during;
    assert.ok(r.ok > 20, `only ${r.ok} answers during the stop`);
    // Closing the listening socket without libc races with clients that reconnect at once
    // (docs/portable.md): a connection the kernel queued, or one Deno accepted but had not
    // read yet, at that instant. Measured 0-5 of them with 4 connections; bounded here at 2
    // per connection.
    const { refused, reset, eof } = r.failures;
    assert.equal(r.failed, refused + reset + eof, `${JSON.stringify(r.failures)} ${r.samples}`);
    assert.ok(reset + eof <= 8, `at most two per connection: ${JSON.stringify(r.failures)}`);
    assert.ok(server.lines.some((l) => /\] drained: 0 connection/.test(l)), "nothing was cut");
  });
});
