// What another process says about itself is not believed: a handover peer's
// pid comes from SO_PEERCRED, not from its message; an fd systemd passes that
// is not a listening stream socket is closed with a warning, not served.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import dgram from "node:dgram";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { validateHello } from "../src/protocol/validate.ts";
import { connectControl } from "../src/protocol/client.ts";
import {
  cleanupAfterTests,
  fdTable,
  ROOT,
  RUNTIME,
  runtimeCmd,
  skipIf,
  startServer,
} from "./support/helpers.ts";
import { startGenerations } from "./support/generations.ts";

const left = cleanupAfterTests();

/** The inode of the UDP socket bound to `port` on 127.0.0.1, from /proc/net/udp. */
function udpInode(port: number): string | undefined {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const line of readFileSync("/proc/net/udp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(hex)) return f[9];
  }
  return undefined;
}
const ECHO = join(ROOT, "examples", "echo_server.ts");
const SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"; // Debian package: systemd

describe(`peers (${RUNTIME})`, () => {
  test("a handover peer that claims another pid is known by the pid SO_PEERCRED gives", async () => {
    const g = await startGenerations(left, ECHO);
    const ch = connectControl(g.ctl);
    try {
      // A lie: pid 1 in the message. The server must report this process instead.
      ch.send({ type: "handover", v: 1, pid: 1 } as never);
      const { msg, fds } = ch.receiveSync(10_000);
      const hello = validateHello(msg);
      const region = hello.counterRegion ? 1 : 0; // the shared counters (observe/counter_region.ts)
      assert.equal(fds.length, hello.listeners.length + (hello.control ? 1 : 0) + region);
      for (const fd of fds) sys.close(fd);
      ch.send({ type: "ready", v: 1, pid: 1 } as never);
      const ok = await g.server.waitFor(/upgrade-succeeded: pid (\d+)/, 10_000);
      g.server.pids.delete(process.pid); // named in its log: not a generation to kill afterwards
      assert.equal(Number(ok[1]), process.pid);
      const spawned = g.server.lines.find((l) => /upgrade-spawned: pid/.test(l)) ?? "";
      assert.match(spawned, new RegExp(`pid ${process.pid}\\b`));
      assert.equal(await g.server.exited, 0, "the old generation drained and exited");
    } finally {
      ch.close();
    }
  });

  const dgramName =
    "an fd systemd passes that is not a listening stream socket is closed with a warning";
  test(
    dgramName,
    skipIf(
      !existsSync(SOCKET_ACTIVATE) &&
        `${SOCKET_ACTIVATE} is missing (Debian package systemd; .ci/run installs it)`,
      dgramName,
    ),
    async () => {
      const probe = net.createServer();
      await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
      const port = (probe.address() as net.AddressInfo).port;
      await new Promise((r) => probe.close(r));
      const cmd = runtimeCmd(RUNTIME, ECHO, ["--port", "0"]);
      const server = startServer([
        SOCKET_ACTIVATE,
        "--datagram",
        "-l",
        `127.0.0.1:${port}`,
        ...cmd,
      ]);
      left.servers.push(server);
      await server.waitFor(/Listening on/, 10_000); // systemd-socket-activate's own line
      const inode = udpInode(port);
      assert.ok(inode !== undefined, "systemd-socket-activate holds a UDP socket on the port");
      // A datagram wakes systemd-socket-activate, which execs the program in its place.
      const udp = dgram.createSocket("udp4");
      udp.send("wake", port, "127.0.0.1", () => udp.close());
      // Said during Upgrader.create(), before any subscriber: it goes to stderr.
      await server.waitFor(
        /warning: socket-activated fd 3 \(.*\) is not a listening stream socket; closing it/,
        30_000,
      );
      await server.waitFor(/gen=1\] ready on/, 30_000);
      // The UDP socket is held by no fd of the server (fd 3 may be reused by a fresh socket);
      // the program replaced systemd-socket-activate, so it is gone altogether.
      assert.equal(udpInode(port), undefined, "the datagram socket was closed");
      const held = [...fdTable(server.pid).values()].includes(`socket:[${inode}]`);
      assert.equal(held, false, "the datagram socket was closed, not held");
      process.kill(server.pid, "SIGTERM");
      assert.equal(await server.exited, 0);
    },
  );
});
