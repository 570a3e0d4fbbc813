/**
 * A stand-in generation for tests/supervisor_test.ts: says READY=1 on the
 * supervisor's NOTIFY_SOCKET and, on SIGTERM, behaves like a generation
 * whose upgrade was finishing at that moment: it starts a successor
 * (`sleep 60`), announces it with MAINPID + READY=1 and exits. The
 * supervisor reads that announcement only after it sent its stop.
 *
 * @module
 */

import process from "node:process";
import { spawn } from "../src/process/spawn.ts";
import { systemdNotifier } from "../src/systemd/notify.ts";

const notify = systemdNotifier();
process.on("SIGTERM", () => {
  const next = spawn({ path: "/bin/sleep", argv: ["sleep", "60"], env: [], fds: [] });
  notify.readyWithMainPid(next);
  process.exit(0);
});
// Ready only once SIGTERM is handled: the test stops the supervisor as soon as it relays READY,
// and a stand-in preempted between the two was killed by SIGTERM's default action (seen once
// under npm test on a loaded machine).
notify.ready();
setInterval(() => {}, 2 ** 30); // stays until told to stop
