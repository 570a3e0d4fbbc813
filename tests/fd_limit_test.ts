// A generation at its fd limit, black box against examples/http_server.ts started under
// prlimit(1): the soft limit is raised to the hard one at start and reported in status;
// idle clients up to the limit never take the generation down (Deno's accept loop ends at
// EMFILE: the server is restarted on the same socket), it answers again once they leave;
// an upgrade at the limit fails as `no-fds` while the old generation serves on, and the next
// one succeeds. Express through serveNode (on Deno node:http's node:net server, deaf after EMFILE
// until the fd watchdog has it listen anew) answers fresh requests once the idle clients leave,
// in `auto` mode and in `fallback` mode (node:http behind the proxy, watched too). A generation
// with up.serve and up.serveNode on Unix sockets (tests/fd_limit_child.ts) answers on both once
// its idle clients leave (on Deno: Deno.serve restarted, node:http's server listened anew).
// The watchdog stops watching an fd whose number was closed and reused (by a pipe that polls
// readable): the server is not listened anew on it.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import process from "node:process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  alive,
  cleanupAfterTests,
  onPath,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  showResult,
  skipIf,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { portOf, readyGeneration } from "./support/status.ts";
import {
  bind,
  C,
  close as closeFd,
  dup3,
  dupCloexec,
  getNofileLimit,
  getsockname,
  listenFd,
  pipe2,
  setNofileLimit,
  socket,
  write,
} from "../src/ffi/mod.ts";
import { decode, encodeInet, type NetAddr } from "../src/ffi/sockaddr.ts";
import { WATCH_EVERY_MS, watchDeafness } from "../src/runtime/fd_watch.ts";
import { pauseSocket } from "../src/runtime/transplant.ts";
import { raiseFdLimit } from "../src/lifecycle/fd_limit.ts";

const left = cleanupAfterTests();
const HTTP = join(ROOT, "examples", "http_server.ts");
const CLI = join(ROOT, "src", "cli", "main.ts");
const ECHO = join(ROOT, "examples", "echo_server.ts");
const EXPRESS = join(ROOT, "examples", "express.ts");
const IDLE_CLIENTS = 400;

/** An example under `prlimit --nofile=<soft>:<hard>` with a control socket; its port once ready. */
async function startLimited(
  soft: number,
  hard: number,
  example = HTTP,
  args: string[] = [],
): Promise<{
  server: ServerProcess;
  port: number;
  ctl: string;
}> {
  const ctl = join(left.tempDir("instar-fdlimit-"), "ctl.sock");
  const cmd = runtimeCmd(RUNTIME, example, ["--port", "0", "--control", ctl, ...args]);
  const server = startServer(["prlimit", `--nofile=${soft}:${hard}`, "--", ...cmd]);
  left.servers.push(server);
  const s = await readyGeneration(ctl, 1, { timeoutMs: 60_000, log: server.lines });
  return { server, port: portOf(s), ctl };
}

/** `n` connections to the port (or Unix socket) that send nothing; resolves once each is connected or failed. */
async function idleClients(to: number | string, n: number): Promise<net.Socket[]> {
  const socks = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<net.Socket>((resolve) => {
        const s = typeof to === "string" ? net.connect(to) : net.connect(to, "127.0.0.1");
        s.on("error", () => {});
        s.once("connect", () => resolve(s));
        s.once("error", () => resolve(s));
      })),
  );
  left.sockets.push({ close: () => socks.forEach((s) => s.destroy()) });
  return socks;
}

/** One line sent on a fresh connection to the echo server: what came back, or the error. */
function echo(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(line));
    let got = "";
    const timer = setTimeout(() => s.destroy(new Error("no echo within 5 s")), 5_000);
    s.on("data", (d) => {
      got += d.toString();
      if (got.length >= line.length) s.end();
    });
    s.on("error", (err) => got = `error: ${err.message}`);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

/** One GET on a fresh connection, never re-sent: the body, or the error's message. */
async function get(port: number, timeoutMs = 5_000): Promise<{ ok: boolean; text: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, {
      headers: { connection: "close" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { ok: res.ok, text: await res.text() };
  } catch (err) {
    return { ok: false, text: (err as Error).message };
  }
}

/** One GET over the Unix socket `path` on a fresh connection, never re-sent: the body, or the error. */
function getUnix(path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(
      path,
      () => s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    let got = "";
    const timer = setTimeout(
      () => s.destroy(new Error(`no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    s.on("data", (d) => got += d.toString());
    s.on("error", (err) => got = `error: ${err.message}`);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got.startsWith("HTTP/1.1 200") ? got.slice(got.indexOf("\r\n\r\n") + 4) : got);
    });
  });
}

/** The soft and hard "Max open files" of `pid` (or `self`), as the kernel reports them. */
function nofile(pid: number | "self"): { soft: number; hard: number } {
  const line = readFileSync(`/proc/${pid}/limits`, "utf8").split("\n")
    .find((l) => l.startsWith("Max open files"))!;
  const [soft, hard] = line.replace("Max open files", "").trim().split(/\s+/).map(Number);
  return { soft, hard };
}

const noPrlimit = !onPath("prlimit") && "needs prlimit (Debian: util-linux)";
// The test's own idle clients need fds too: more than the server's limit.
const tooFewFds = nofile("self").soft < IDLE_CLIENTS + 100 &&
  `the test process may open only ${nofile("self").soft} fds; it needs ${IDLE_CLIENTS + 100}`;

/**
 * A listening TCP socket of instar's (its fd, on a free loopback port) and a
 * node:net server answering "hi" on a duplicate of it: what the watchdog watches.
 */
async function echoOnOwnSocket(): Promise<{ fd: number; port: number; server: net.Server }> {
  const fd = socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
  bind(fd, encodeInet("127.0.0.1", 0)!);
  listenFd(fd, 64);
  const port = (decode(getsockname(fd)) as NetAddr).port;
  const server = net.createServer((c) => c.end("hi"));
  await new Promise<void>((r) => server.listen({ fd: dupCloexec(fd) }, r));
  return { fd, port, server };
}

describe(`at the fd limit (${RUNTIME})`, () => {
  test("a soft fd limit below the hard one is raised to it, without a warning", () => {
    const before = getNofileLimit();
    const warnings: string[] = [];
    try {
      setNofileLimit({ soft: Math.min(256, before.hard), hard: before.hard });
      const hard = Number.isFinite(before.hard) ? before.hard : null;
      assert.deepEqual(raiseFdLimit((m) => warnings.push(m)), { soft: hard, hard });
      assert.deepEqual(getNofileLimit(), { soft: before.hard, hard: before.hard });
      assert.deepEqual(warnings, []);
    } finally {
      setNofileLimit(before);
    }
  });

  test(
    "the soft fd limit is raised to the hard one at start and reported in status",
    skipIf(noPrlimit, "fd limit raised and reported"),
    async () => {
      const { server, ctl } = await startLimited(256, 4096);
      const s = await readyGeneration(ctl, 1, { log: server.lines });
      // (Deno 2.9.6 and Bun 1.4.5 raise it themselves at start; instar would if they did not.)
      assert.deepEqual(s.fdLimit, { soft: 4096, hard: 4096 });
      assert.deepEqual(nofile(server.pid), { soft: 4096, hard: 4096 }, "/proc/<pid>/limits");
      server.killAll();
    },
  );

  test(
    "400 idle clients at a limit of 200 never take the generation down; it answers once they leave",
    skipIf(noPrlimit || tooFewFds, "idle clients at the fd limit"),
    async () => {
      const { server, port, ctl } = await startLimited(200, 200);
      const socks = await idleClients(port, IDLE_CLIENTS);
      await atLimit(server.pid);
      assert.ok(alive(server.pid), `the generation died at the limit:\n${server.lines.join("\n")}`);
      if (RUNTIME === "deno") {
        // Deno's accept loop ended at EMFILE: the server was restarted on the socket, and said so.
        await server.waitFor(/warning: .*Deno\.serve stopped accepting: .*os error 24/, 5_000);
      }
      // An upgrade at the limit fails for lack of fds, naming EMFILE; the generation serves on.
      const from = server.lines.length;
      process.kill(server.pid, "SIGHUP");
      const failed = await server.waitFor(/upgrade-failed: (\S+): (.*)$/, 15_000, from);
      assert.equal(failed[1], "no-fds", failed[0]);
      assert.match(failed[2], /EMFILE/);
      // The control socket at the limit: answered or not, it must answer again afterwards.
      const status = runtimeCmd(RUNTIME, CLI, ["status", "--control", ctl]);
      await runCommand(status, { timeoutMs: 3_000 });
      for (const s of socks) s.destroy();
      await sleep(500);
      // A client that sends after the release: every request answered by this generation.
      const answers = [];
      for (let i = 0; i < 20; i++) answers.push(await get(port));
      const failures = answers.filter((a) => !a.ok);
      assert.equal(failures.length, 0, `failed: ${JSON.stringify(failures.slice(0, 3))}`);
      assert.ok(answers.every((a) => a.text.includes(`pid ${server.pid} `)), answers[0].text);
      // With fds free again the next upgrade succeeds, asked on the control socket (on Deno its
      // node:net server stopped accepting at EMFILE too, and listens anew), and the new one answers.
      const cli = runtimeCmd(RUNTIME, CLI, ["upgrade", "--control", ctl, "--timeout", "20000"]);
      const up = await runCommand(cli, { timeoutMs: 30_000 });
      assert.equal(up.code, 0, showResult(up));
      const after = await get(port);
      assert.ok(after.ok, after.text);
      assert.doesNotMatch(after.text, new RegExp(`pid ${server.pid} `));
      server.killAll();
    },
  );

  test(
    "up.listen keeps accepting after 400 idle clients at a limit of 200 (EMFILE backs off)",
    skipIf(noPrlimit || tooFewFds, "up.listen at the fd limit"),
    async () => {
      const { server, port } = await startLimited(200, 200, ECHO);
      const socks = await idleClients(port, IDLE_CLIENTS);
      await atLimit(server.pid);
      assert.ok(alive(server.pid), `the generation died at the limit:\n${server.lines.join("\n")}`);
      if (RUNTIME === "deno") {
        // Deno.listen's accept() rejected with EMFILE: the acceptor backed off, and said so.
        await server.waitFor(
          /warning: .*accept failed: .*os error 24.*retrying every 100 ms/,
          5_000,
        );
      }
      for (const s of socks) s.destroy();
      await sleep(500);
      const lines = [];
      for (let i = 0; i < 20; i++) lines.push(await echo(port, `line ${i}\n`));
      assert.deepEqual(lines, Array.from({ length: 20 }, (_, i) => `line ${i}\n`));
      server.killAll();
    },
  );

  for (const mode of ["auto", "fallback"]) {
    test(
      `Express through serveNode (mode ${mode}) answers 50 fresh requests after 400 idle clients at a limit of 200 leave`,
      skipIf(noPrlimit || tooFewFds, "serveNode at the fd limit"),
      async () => {
        const { server, port } = await startLimited(200, 200, EXPRESS, ["--serve-mode", mode]);
        const socks = await idleClients(port, IDLE_CLIENTS);
        await atLimit(server.pid);
        assert.ok(
          alive(server.pid),
          `the generation died at the limit:\n${server.lines.join("\n")}`,
        );
        const released = performance.now();
        for (const s of socks) s.destroy();
        // Behind the proxy each client held fds until the proxy saw it leave: on Bun a request
        // that comes sooner is reset when the proxy's connection to node:http fails with EMFILE.
        if (mode === "fallback") await fdsBelow(server.pid, 150);
        // Never re-sent: each request is answered by this generation or counts as failed. (On
        // Deno node:http's node:net server stopped accepting at EMFILE, without an event: the
        // watchdog sees its accept queue grow without accepts and has it listen anew.)
        const answers = [];
        let first = 0;
        for (let i = 0; i < 50; i++) {
          answers.push(await get(port, 3_000));
          if (!first && answers[i].ok) first = performance.now() - released;
        }
        const failures = answers.filter((a) => !a.ok);
        // Left (docs/design.md): behind the proxy a first request may still be reset, when the
        // proxy's connection to node:http fails with EMFILE (Deno: in 2 of 6 runs). None waits
        // for a deaf server (a timeout), which is what the watchdog prevents.
        const allowed = mode === "fallback" ? 1 : 0;
        const shown = JSON.stringify(failures.slice(0, 3));
        assert.ok(failures.length <= allowed, `${failures.length} failed: ${shown}`);
        assert.ok(failures.every((a) => !/timeout|timed out/i.test(a.text)), shown);
        const answered = answers.filter((a) => a.ok);
        assert.ok(answered.every((a) => a.text.includes(`pid ${server.pid} `)), answered[0].text);
        console.log(
          `serveNode (${mode}) at the fd limit: the first answer ${
            Math.round(first)
          } ms, the last ${Math.round(performance.now() - released)} ms after the release`,
        );
        if (RUNTIME === "deno") {
          // Said in a warning (rate-limited: at the limit it may say it cannot listen anew yet).
          await server.waitFor(/warning: .*node:net server (stopped accepting|deaf)/, 1_000);
        }
        server.killAll();
      },
    );
  }

  test(
    "a Unix socket served by serve() and one by serveNode() answer once 400 idle clients at a limit of 200 leave",
    skipIf(noPrlimit || tooFewFds, "Unix sockets at the fd limit"),
    async () => {
      const dir = left.tempDir("instar-fdlimit-unix-");
      const paths = [join(dir, "native.sock"), join(dir, "node.sock")];
      const cmd = runtimeCmd(RUNTIME, join(ROOT, "tests", "fd_limit_child.ts"), paths);
      const server = startServer(["prlimit", "--nofile=200:200", "--", ...cmd]);
      left.servers.push(server);
      await server.waitFor(/ready on /, 60_000);
      // Half to each: both queues still hold connections when the process reaches its limit.
      const socks = (await Promise.all(paths.map((p) => idleClients(p, IDLE_CLIENTS / 2)))).flat();
      await atLimit(server.pid);
      assert.ok(alive(server.pid), `died at the limit:\n${server.lines.join("\n")}`);
      for (const s of socks) s.destroy();
      // Never re-sent: each request is answered by this process or counts as failed.
      const answers: string[] = [];
      for (let i = 0; i < 10; i++) {
        for (const p of paths) answers.push(await getUnix(p, 3_000));
      }
      const expected = Array.from({ length: 10 }, () => [
        `native pid ${server.pid}\n`,
        `node pid ${server.pid}\n`,
      ]).flat();
      assert.deepEqual(answers, expected);
      if (RUNTIME === "deno") {
        // Deno.serve was restarted on the socket, node:http's server listened anew: said so.
        await server.waitFor(/warning: .*Deno\.serve stopped accepting: .*os error 24/, 1_000);
        await server.waitFor(/warning: .*node:net server (stopped accepting|deaf)/, 1_000);
      }
      server.killAll();
    },
  );

  test(
    "on Deno the watchdog has a node:net server whose socket stopped accepting listen anew; on Bun it does nothing",
    async () => {
      const { fd, port, server } = await echoOnOwnSocket();
      const warnings: string[] = [];
      let paused = true;
      watchDeafness(server, fd, { warn: (m) => warnings.push(m), paused: () => paused });
      try {
        // Deaf as at EMFILE: the socket leaves the event loop, unknown to the watchdog. While
        // the drain says it paused the server, it stays so.
        pauseSocket(fd);
        assert.equal(
          await read(port, 4 * WATCH_EVERY_MS),
          "timeout",
          "a paused server listened anew",
        );
        paused = false;
        // Bun: long enough for 3 checks, which would have listened anew.
        const wait = (RUNTIME === "deno" ? 8 : 3) * WATCH_EVERY_MS;
        const got = await Promise.all([read(port, wait), read(port, wait)]);
        if (RUNTIME === "deno") {
          assert.deepEqual(got, ["hi", "hi"]);
          assert.match(
            warnings.join("\n"),
            /node:net server stopped accepting \(\d+ connections waiting\): listening anew/,
          );
        } else {
          assert.deepEqual(got, ["timeout", "timeout"], "Bun: the watchdog does not run");
          assert.deepEqual(warnings, []);
        }
        // Closed: the watch ends with the server (the timer no longer holds it).
        await new Promise((r) => server.close(r));
      } finally {
        closeFd(fd);
      }
    },
  );

  test(
    "on Deno the watchdog stops watching an fd whose number a pipe took over, and leaves the server listening",
    async () => {
      const { fd, port, server } = await echoOnOwnSocket();
      const warnings: string[] = [];
      let relistens = 0;
      watchDeafness(server, fd, {
        warn: (m) => warnings.push(m),
        listen: (o, cb) => void (relistens++, server.listen(o, cb)),
      });
      // instar's fd closed and its number reused by a pipe with a byte waiting: it polls
      // readable, as a queue of connections would, and nobody accepts from it.
      const [r, w] = pipe2(C.O_CLOEXEC);
      try {
        write(w, new Uint8Array([1]));
        dup3(r, fd, C.O_CLOEXEC);
        // Three checks, the second of which would have found the "queue" still waiting.
        await sleep(3 * WATCH_EVERY_MS);
        assert.deepEqual({ warnings, relistens }, { warnings: [], relistens: 0 });
        assert.equal(await read(port, 2_000), "hi", "the server still listens on its socket");
      } finally {
        await new Promise((r) => server.close(r));
        for (const f of [fd, r, w]) closeFd(f);
      }
    },
  );
});

/**
 * Resolves once process `pid` holds (nearly) its 200 fds, and a moment later: its accept
 * paths with connections waiting have hit EMFILE by then.
 */
async function atLimit(pid: number): Promise<void> {
  const until = performance.now() + 10_000;
  let open = 0;
  while ((open = readdirSync(`/proc/${pid}/fd`).length) < 195) {
    if (performance.now() > until) assert.fail(`pid ${pid} holds only ${open} fds after 10 s`);
    await sleep(20);
  }
  await sleep(250);
}

/** Resolves once process `pid` holds fewer than `n` fds (within 5 s, else fails). */
async function fdsBelow(pid: number, n: number): Promise<void> {
  // 15 s: in CI (then three files at once on 2 saturated cores) Deno's proxy once still held 194
  // after 5 s; on a quieter machine it takes under 1 s.
  const until = performance.now() + 15_000;
  let open = Infinity;
  while ((open = readdirSync(`/proc/${pid}/fd`).length) >= n) {
    if (performance.now() > until) assert.fail(`pid ${pid} still holds ${open} fds after 15 s`);
    await sleep(20);
  }
}

/** What the server at `port` says on a fresh connection, or "timeout" after `ms`. */
function read(port: number, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    const timer = setTimeout(() => {
      got = "timeout";
      s.destroy();
    }, ms);
    s.on("data", (d) => got += d.toString());
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}
