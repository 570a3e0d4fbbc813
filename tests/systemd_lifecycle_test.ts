// systemd and the lifecycle, black-box: the exact sd_notify sequence a real
// server sends for start, upgrade, failed upgrade and stop, and a
// socket-activated server that passes its activated socket on.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import {
  cleanupAfterTests,
  datagramReceiver,
  drainDatagrams,
  fdTable,
  freePort,
  ROOT,
  RUNTIME,
  runtimeCmd,
  skipIf,
  sleep,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { nextPidInPidFile, readyGeneration } from "./support/status.ts";

const { servers, tempDir } = cleanupAfterTests();
const dir = tempDir("instar-sdlife-");

const ECHO = join(ROOT, "examples", "echo_server.ts");
const SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"; // Debian package: systemd

/**
 * The echo example under systemd-socket-activate on 127.0.0.1:`port`, its socket named "web".
 * systemd-socket-activate binds, and starts the program on the first connection, which waits
 * in the activated socket's queue until the program serves it.
 */
async function activate(port: number, echoArgs: string[], ctl: string, pidFile: string) {
  const cmd = runtimeCmd(RUNTIME, ECHO, [...echoArgs, "--control", ctl, "--pid-file", pidFile]);
  const server = startServer([SOCKET_ACTIVATE, "-l", `127.0.0.1:${port}`, "--fdname=web", ...cmd]);
  servers.push(server);
  await server.waitFor(/Listening on/, 10_000); // systemd-socket-activate's own line
  return server;
}

/** Datagrams arriving on a NOTIFY_SOCKET bound at `path`. */
function notifySocket(path: string) {
  const fd = datagramReceiver(path);
  const got: string[] = [];
  return {
    got,
    /** Reads what arrived; waits until `n` datagrams arrived in total. */
    async until(n: number, timeoutMs = 30_000): Promise<string[]> {
      const end = Date.now() + timeoutMs;
      for (;;) {
        got.push(...drainDatagrams(fd));
        if (got.length >= n) return got;
        if (Date.now() > end) {
          throw new Error(`only ${got.length} of ${n} datagrams: ${JSON.stringify(got)}`);
        }
        await sleep(20);
      }
    },
    close: () => sys.close(fd),
  };
}

function deploy(source: string): string {
  const script = join(dir, "server.ts");
  writeFileSync(script, source);
  return script;
}

function echo(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => s.write("ping\n"));
    s.once("data", (d) => {
      s.destroy();
      resolve(d.toString());
    });
    s.once("error", reject);
  });
}

describe(`systemd and the lifecycle (${RUNTIME})`, () => {
  test("sd_notify: READY at start, RELOADING then MAINPID+READY on upgrade, READY+STATUS on failure, STOPPING on stop", async () => {
    const notify = notifySocket(join(dir, "notify.sock"));
    try {
      const script = deploy(`import ${JSON.stringify(ECHO)};\n`);
      const ctl = join(dir, "ctl-notify.sock"), pidFile = join(dir, "notify.pid");
      const server = startServer(
        runtimeCmd(RUNTIME, script, [
          ...["--port", "0", "--ready-timeout", "5000", "--control", ctl, "--pid-file", pidFile],
        ]),
        {
          NOTIFY_SOCKET: join(dir, "notify.sock"),
        },
      );
      servers.push(server);
      const log = server.lines;
      await readyGeneration(ctl, 1, { pid: server.pid, log });
      assert.deepEqual(await notify.until(1), ["READY=1\n"]);

      process.kill(server.pid, "SIGHUP");
      const child = await nextPidInPidFile(pidFile, server.pid, { log });
      server.pids.add(child); // killed by after() even if it has not logged yet
      const afterUpgrade = await notify.until(3);
      assert.match(afterUpgrade[1], /^RELOADING=1\nMONOTONIC_USEC=\d+\n$/);
      assert.equal(afterUpgrade[2], `MAINPID=${child}\nREADY=1\n`);
      await server.exited; // the first generation drained and exited

      deploy(`throw new Error("broken deploy");\n`);
      process.kill(child, "SIGHUP");
      // The failure and its reason are what the two datagrams below say.
      const afterFailure = await notify.until(5);
      assert.match(afterFailure[3], /^RELOADING=1\nMONOTONIC_USEC=\d+\n$/);
      assert.equal(afterFailure[4], "READY=1\nSTATUS=upgrade failed: exited\n");

      process.kill(child, "SIGTERM");
      const all = await notify.until(6);
      assert.equal(all[5], "STOPPING=1\n");
      await sleep(300);
      assert.equal((await notify.until(6)).length, 6, "nothing else was sent");
      await stopped(child); // drained and gone before the runner ends (else a leftover)
    } finally {
      notify.close();
    }
  });

  const byName =
    "a server claims the socket systemd passed by its name, and passes it on under that name";
  test(
    byName,
    skipIf(
      !existsSync(SOCKET_ACTIVATE) &&
        `${SOCKET_ACTIVATE} is missing (Debian package systemd; .ci/run installs it)`,
      byName,
    ),
    async () => {
      const port = await freePort();
      const ctl = join(dir, "ctl-named.sock"), pidFile = join(dir, "named.pid");
      // --port 0: claimed by address, this would be a fresh socket on some other port.
      const server = await activate(port, ["--port", "0", "--socket-name", "web"], ctl, pidFile);
      const first = echo(port);
      const log = server.lines;
      const status = await readyGeneration(ctl, 1, { pid: server.pid, log });
      assert.deepEqual(status.listeners.map((l) => l.addr), [`127.0.0.1:${port}`]);
      assert.equal(await first, "ping\n");
      process.kill(server.pid, "SIGHUP");
      const child = await nextPidInPidFile(pidFile, server.pid, { log });
      server.pids.add(child);
      await server.exited;
      const next = await readyGeneration(ctl, 2, { pid: child, log });
      assert.deepEqual(next.listeners.map((l) => l.addr), [`127.0.0.1:${port}`]);
      assert.equal(await echo(port), "ping\n", "generation 2 inherited it by the name's key");
      process.kill(child, "SIGTERM");
      await stopped(child); // drained and gone before the runner ends (else a leftover)
    },
  );

  const activated =
    "a socket-activated server adopts the socket and passes it on; LISTEN_* never reaches a later generation";
  test(
    activated,
    skipIf(
      !existsSync(SOCKET_ACTIVATE) &&
        `${SOCKET_ACTIVATE} is missing (Debian package systemd; .ci/run installs it)`,
      activated,
    ),
    async () => {
      const port = await freePort();
      const ctl = join(dir, "ctl-activated.sock"), pidFile = join(dir, "activated.pid");
      const server = await activate(port, ["--port", String(port)], ctl, pidFile);
      const first = echo(port);
      const log = server.lines;
      await readyGeneration(ctl, 1, { pid: server.pid, log });
      assert.equal(await first, "ping\n");
      // fd 3 is the activated socket, now served by instar (not a second socket on the port)
      assert.match(fdTable(server.pid).get(3) ?? "", /^socket:/);
      process.kill(server.pid, "SIGHUP");
      const child = await nextPidInPidFile(pidFile, server.pid, { log });
      server.pids.add(child); // killed by after() even if it has not logged yet
      await server.exited;
      assert.equal(await echo(port), "ping\n", "the new generation serves the activated socket");
      const environ = readFileSync(`/proc/${child}/environ`, "utf8").split("\0");
      assert.deepEqual(environ.filter((e) => e.startsWith("LISTEN_")), []);
      process.kill(child, "SIGTERM");
      await stopped(child); // drained and gone before the runner ends (else a leftover)
    },
  );
});
