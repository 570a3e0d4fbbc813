// Containers without the supervisor: a generation that is PID 1 of its pid
// namespace, or the child of an init that exits with its only child (tini),
// refuses a fork/exec upgrade (an upgrade there would end the container) and
// serves on; a handover through the control socket still works.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { initHazard } from "../src/lifecycle/init_check.ts";
import {
  cleanupAfterTests,
  exchange,
  httpGet,
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
  stopped,
} from "./support/helpers.ts";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import { childrenOf, netGet, noPidNamespaces, startInPidNamespace } from "./support/namespace.ts";
import { portOf, readyGeneration } from "./support/status.ts";

const left = cleanupAfterTests();
const HTTP = join(ROOT, "examples", "http_server.ts");
const noTini = !onPath("tini") && "tini is missing (Debian package tini; .ci/run installs it)";

/**
 * Three SIGHUPs to `pid` under load (keep-alive and one connection per
 * request, clients that never re-send): each is refused with `reason` and a
 * message naming `instar run`; the same generation answers throughout.
 */
async function refusedUnderLoad(server: ServerProcess, pid: number, port: number, reason: string) {
  const ac = new AbortController();
  const common = { port, durationMs: 60_000, pauseMs: TEST_PAUSE_MS, signal: ac.signal };
  const bodies = new Set<string>();
  const onResponse = (b: string) => bodies.add(b.replace(/ \(.*$/, "").trim());
  const keepAlive = runLoad({ ...common, connections: 16, onResponse });
  const short = runLoad({ ...common, connections: 4, keepAlive: false, onResponse });
  try {
    for (let i = 1; i <= 3; i++) {
      await sleep(300);
      const from = server.lines.length;
      process.kill(pid, "SIGHUP");
      const m = await server.waitFor(/upgrade-refused: (\S+): (.*)$/, 15_000, from);
      assert.equal(m[1], reason);
      assert.match(m[2], /instar run/, "the refusal names the supervisor");
    }
    await sleep(500);
  } finally {
    ac.abort();
  }
  for (const [name, r] of [["keep-alive", await keepAlive], ["short", await short]] as const) {
    assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    assert.ok(r.ok > 50, `${name}: only ${r.ok} responses`);
  }
  assert.equal(bodies.size, 1, `one generation answered all along: ${[...bodies].join(" | ")}`);
  assert.ok(!server.lines.some((l) => /upgrade-spawned/.test(l)), "no generation was started");
}

describe(`containers without the supervisor (${RUNTIME})`, () => {
  const pid1 = "PID 1 of a pid namespace: SIGHUP is refused (pid-1) and it serves on under load";
  test(pid1, skipIf(noPidNamespaces(), pid1), async () => {
    const dir = left.tempDir("instar-ctr-");
    const ctl = join(dir, "ctl.sock");
    const ns = await startInPidNamespace(
      runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]),
    );
    try {
      const ready = await readyGeneration(ctl, 1, { pid: 1, log: ns.server.lines });
      assert.equal(initHazard(ns.initPid)?.reason, "pid-1", "seen from outside too");
      await refusedUnderLoad(ns.server, ns.initPid, portOf(ready), "pid-1");
      assert.match(await exchange(portOf(ready), httpGet()), /generation 1 /);
      // `instar upgrade --control` is refused the same way, with the reason on stderr.
      const cli = await runCommand(
        runtimeCmd(RUNTIME, join(ROOT, "src", "cli", "main.ts"), ["upgrade", "--control", ctl]),
      );
      assert.equal(cli.code, 1, showResult(cli));
      assert.match(cli.stderr, /upgrade refused: pid-1: this generation is PID 1 .*instar run/);
      // Nothing else runs in the namespace: no half-started generation was left behind.
      assert.deepEqual(childrenOf(ns.initPid), []);
      process.kill(ns.initPid, "SIGTERM");
      assert.equal(await ns.server.exited, 0, "stopped gracefully");
    } finally {
      ns.kill();
    }
  });

  const tini = "a child of tini: SIGHUP is refused (init-parent) and it serves on under load";
  test(tini, skipIf(noPidNamespaces() || noTini, tini), async () => {
    const dir = left.tempDir("instar-ctr-");
    const ctl = join(dir, "ctl.sock");
    // tini as PID 1 of its namespace, as `docker run --init` runs it.
    const ns = await startInPidNamespace([
      "tini",
      "--",
      ...runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]),
    ]);
    try {
      const ready = await readyGeneration(ctl, 1, { log: ns.server.lines });
      const [app] = childrenOf(ns.initPid);
      assert.ok(app, "tini started the server");
      assert.equal(initHazard(app)?.reason, "init-parent");
      await refusedUnderLoad(ns.server, app, portOf(ready), "init-parent");
      assert.ok(ns.server.lines.some((l) => /pid \d+, is tini/.test(l)), "names tini");
      process.kill(app, "SIGTERM");
      assert.equal(await ns.server.exited, 0, "tini exited with the server's status 0");
    } finally {
      ns.kill();
    }
  });

  const handover =
    "PID 1 of a pid namespace: a handover to a process started outside it works, 0 failed";
  test(handover, skipIf(noPidNamespaces(), handover), async () => {
    const dir = left.tempDir("instar-ctr-");
    const ctl = join(dir, "ctl.sock");
    const ns = await startInPidNamespace(
      runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]),
    );
    try {
      const port = portOf(await readyGeneration(ctl, 1, { pid: 1, log: ns.server.lines }));
      const ac = new AbortController();
      const common = { port, durationMs: 60_000, pauseMs: TEST_PAUSE_MS, signal: ac.signal };
      const pids = new Set<string>();
      const onResponse = (b: string) => pids.add(/pid (\d+)/.exec(b)?.[1] ?? "?");
      const keepAlive = runLoad({ ...common, connections: 16, onResponse });
      const short = runLoad({ ...common, connections: 4, keepAlive: false, onResponse });
      let next: ServerProcess;
      try {
        await sleep(300);
        // Started independently (another container sharing the socket's volume, or the
        // host): it asks the control socket for the listeners, the namespace's PID 1 drains.
        next = startServer(runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]));
        left.servers.push(next);
        await readyGeneration(ctl, 2, { pid: next.pid, log: next.lines });
        await stopped(ns.initPid, 60_000); // PID 1 drained and exited: the namespace is gone
        await sleep(500);
      } finally {
        ac.abort();
      }
      for (const [name, r] of [["keep-alive", await keepAlive], ["short", await short]] as const) {
        assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
        assert.ok(r.ok > 50, `${name}: only ${r.ok} responses`);
      }
      assert.ok(pids.has("1") && pids.has(String(next.pid)), `answers from: ${[...pids]}`);
      assert.match(await exchange(port, httpGet()), new RegExp(`pid ${next.pid} generation 2 `));
      process.kill(next.pid, "SIGTERM");
      assert.equal(await next.exited, 0);
    } finally {
      ns.kill();
    }
  });

  const inside = "PID 1 of a pid namespace: a handover to a process inside the namespace " +
    "(which would die with PID 1) is refused, and the server serves on";
  test(inside, skipIf(noPidNamespaces(), inside), async () => {
    const dir = left.tempDir("instar-ctr-");
    const ctl = join(dir, "ctl.sock");
    const ns = await startInPidNamespace(
      runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]),
    );
    try {
      const port = portOf(await readyGeneration(ctl, 1, { pid: 1, log: ns.server.lines }));
      // As `docker exec` would start it: in the container's pid and mount namespaces. Its log
      // names pids of that namespace: it is not handed to cleanupAfterTests (ns.kill ends it).
      const peer = startServer([
        ...["nsenter", "-t", String(ns.initPid), "-p", "-m", `--wd=${ROOT}`, "--"],
        ...runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]),
      ]);
      const code = await peer.exited;
      const out = peer.lines.join("\n");
      assert.notEqual(code, 0, `the peer did not start: ${out}`);
      assert.match(out, /handover refused: process \d+ runs in this generation's pid namespace/);
      assert.match(out, /instar run/);
      const m = await ns.server.waitFor(/upgrade-refused: (\S+): handover refused/, 15_000);
      assert.equal(m[1], "pid-1");
      assert.match(await exchange(port, httpGet()), /pid 1 generation 1 /, "PID 1 serves on");
    } finally {
      ns.kill();
    }
  });

  const names = "initHazard: a child of tini, docker-init, dumb-init or catatonit is init-parent " +
    "(by command name); a child of sh is not";
  test(names, skipIf(noTini, names), async () => {
    const dir = left.tempDir("instar-ctr-");
    for (const init of ["tini", "docker-init", "dumb-init", "catatonit", "sh"]) {
      // tini under each name (its command name is the name it was started by); sh as itself
      const bin = init === "sh" ? "/bin/sh" : join(dir, init);
      if (init !== "sh") symlinkSync("/usr/bin/tini", bin);
      const args = init === "sh" ? ["-c", "sleep 30; :"] : ["-s", "--", "sleep", "30"];
      const parent = startServer([bin, ...args]);
      left.servers.push(parent);
      let child: number | undefined;
      try {
        const end = Date.now() + 10_000;
        while (!(child = childrenOf(parent.pid)[0]) && Date.now() < end) await sleep(10);
        assert.ok(child, `${init} started sleep`);
        const hazard = initHazard(child);
        if (init === "sh") assert.equal(hazard, null);
        else {
          assert.equal(hazard?.reason, "init-parent", init);
          assert.match(hazard!.message, new RegExp(`is ${init}, an init`));
          assert.match(hazard!.message, /instar run/);
        }
      } finally {
        if (child) parent.pids.add(child);
        parent.killAll();
      }
    }
  });

  test("initHazard: none for a process that is neither PID 1 nor the child of such an init", () => {
    // This test process: started by a shell or a test runner, not by tini.
    assert.equal(initHazard(), null);
    assert.equal(initHazard(process.pid), null);
  });
});

/** The instructions of a Dockerfile that say how the container runs (no line continuations used). */
function dockerfile(path: string) {
  const lines = readFileSync(path, "utf8").split("\n").filter((l) => !/^\s*(#|$)/.test(l));
  const arg = (op: string) => lines.find((l) => l.startsWith(`${op} `))?.slice(op.length + 1);
  const execForm = (op: string) => JSON.parse(arg(op) ?? "null") as string[];
  return {
    entrypoint: execForm("ENTRYPOINT"),
    cmd: execForm("CMD"),
    expose: arg("EXPOSE"),
    stopSignal: arg("STOPSIGNAL"),
    npmInstall: lines.find((l) => /^RUN npm install /.test(l)) ?? "",
  };
}

describe(`examples/container (${RUNTIME})`, () => {
  const file = join(ROOT, "examples", "container", `Dockerfile.${RUNTIME}`);
  const name = `Dockerfile.${RUNTIME}: its ENTRYPOINT + CMD runs as PID 1 of new pid and net ` +
    "namespaces (as docker run would), upgrades in place on SIGHUP and stops with STOPSIGNAL, status 0";
  test(name, skipIf(noPidNamespaces(), name), async () => {
    const d = dockerfile(file);
    // What the image is built from and how it is stopped agree with the command line.
    const pinned = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).devDependencies;
    assert.ok(d.npmInstall.includes(`${RUNTIME}@${pinned[RUNTIME]}`), d.npmInstall);
    assert.equal(d.stopSignal, "SIGTERM");
    assert.equal(d.expose, "8080");
    assert.ok(d.entrypoint.includes("run") && d.entrypoint.at(-1) === "--", `${d.entrypoint}`);
    assert.ok(d.entrypoint.includes("tcp://0.0.0.0:8080"), "the supervisor holds the exposed port");
    assert.deepEqual(d.cmd.slice(-2), ["--port", "8080"]);
    // The image's /app mirrors this repository (node_modules/.bin/<runtime>, src/, examples/).
    const argv = [...d.entrypoint, ...d.cmd].map((a) => a.replace(/^\/app\//, ROOT));
    const ns = await startInPidNamespace(
      ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", ...argv],
      {},
      ["--net"],
    );
    try {
      const answer = async (generation: number) => {
        const end = Date.now() + 60_000;
        let last: unknown;
        while (Date.now() < end) {
          const r = await netGet(ns.initPid, 8080, "/");
          if (r.body?.includes(`generation ${generation} `)) return r;
          last = r;
          await sleep(200);
        }
        throw new Error(
          `no answer from generation ${generation}: ${JSON.stringify(last)}\n` +
            ns.server.lines.slice(-30).join("\n"),
        );
      };
      await answer(1);
      const cmdline = readFileSync(`/proc/${ns.initPid}/cmdline`, "utf8").split("\0");
      assert.ok(
        cmdline.some((a) => a.endsWith("src/cli/main.ts")),
        `PID 1 is instar run: ${cmdline}`,
      );
      process.kill(ns.initPid, "SIGHUP"); // docker kill -s HUP
      await answer(2);
      process.kill(ns.initPid, "SIGTERM"); // docker stop
      assert.equal(await ns.server.exited, 0, ns.server.lines.slice(-20).join("\n"));
    } finally {
      ns.kill();
    }
  });
});
