// Run by tests/systemd_test.ts under systemd-socket-activate: reads the
// activated sockets, prints one JSON line describing what it saw, and in
// "serve" mode answers one TCP connection on the fd named "web" through
// node:net listen({ fd }).
import { execFileSync } from "node:child_process";
import net from "node:net";
import process from "node:process";
import { activatedSockets, findActivated } from "../src/systemd/activation.ts";
import { C, fcntl } from "../src/ffi/mod.ts";

const mode = process.argv[2] ?? "report";

function cloexec(fd: number): boolean | null {
  try {
    return (fcntl(fd, C.F_GETFD) & C.FD_CLOEXEC) !== 0;
  } catch {
    return null;
  }
}

const before = {
  pid: process.pid,
  LISTEN_PID: process.env.LISTEN_PID ?? null,
  LISTEN_FDS: process.env.LISTEN_FDS ?? null,
  LISTEN_FDNAMES: process.env.LISTEN_FDNAMES ?? null,
  cloexec: [cloexec(3), cloexec(4)],
};
const activation = activatedSockets();
const again = activatedSockets(); // remembered: the environment is gone by now
const envAfter = [process.env.LISTEN_PID, process.env.LISTEN_FDS, process.env.LISTEN_FDNAMES];
// What an unrelated child inherits: no LISTEN_* variables, and no activated fds.
const childSees = execFileSync(
  "/bin/sh",
  ["-c", 'echo "${LISTEN_PID-unset} ${LISTEN_FDS-unset} ${LISTEN_FDNAMES-unset}"; ls /proc/$$/fd'],
  { encoding: "utf8" },
).trim().split("\n");
const web = findActivated(activation.sockets, { name: "web" });
const report = {
  before,
  activation,
  sameAgain: JSON.stringify(again) === JSON.stringify(activation),
  envAfter: envAfter.map((v) => v ?? null),
  childEnv: childSees[0],
  childFds: childSees.slice(1).map(Number).sort((a, b) => a - b),
  cloexecAfter: [cloexec(3), cloexec(4)],
  web: web?.fd ?? null,
};
console.log(JSON.stringify(report));

if (mode === "serve" && web) {
  const server = net.createServer((conn) => {
    conn.end(`hello from ${web.name} on fd ${web.fd}\n`);
    server.close();
    // Bound the child's life even if a runtime keeps the handle alive.
    setTimeout(() => process.exit(0), 200).unref?.();
  });
  server.listen({ fd: web.fd });
  setTimeout(() => process.exit(3), 30_000).unref?.();
}
