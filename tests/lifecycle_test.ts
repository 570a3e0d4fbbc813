// The lifecycle's contract as a whole process sees it: refusals are not
// failures, no timer outlives the lifecycle or runs while it idles, and user
// clean-up runs before the process exits.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import process from "node:process";
import { Reaper } from "../src/lifecycle/reaper.ts";
import { spawn } from "../src/process/spawn.ts";
import { join } from "node:path";
import { UpgradeError, Upgrader, UpgradeRefusedError } from "../mod.ts";
import * as sys from "../src/ffi/mod.ts";
import {
  cleanupAfterTests,
  datagramReceiver,
  drainDatagrams,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  showResult,
  within,
} from "./support/helpers.ts";

const left = cleanupAfterTests();
const CHILD = join(ROOT, "tests/lifecycle_child.ts");

function lines(stdout: string): Record<string, unknown>[] {
  return stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

describe(`the lifecycle (${RUNTIME})`, () => {
  test("a refused trigger rejects with UpgradeRefusedError and an upgrade-refused event, never upgrade-failed", async () => {
    const up = await Upgrader.create({
      upgradeSignal: null,
      stopSignals: [],
      exitAfterDrain: false,
    });
    const refused: string[] = [], failed: string[] = [];
    up.on("upgrade-refused", ({ error }) => refused.push(error.reason));
    up.on("upgrade-failed", ({ error }) => failed.push(error.reason));
    const early = await up.upgrade().then(() => null, (e) => e);
    assert.ok(early instanceof UpgradeRefusedError, String(early));
    assert.equal(early.code, "UPGRADE_REFUSED");
    assert.equal(early.reason, "not-ready");
    assert.ok(!(early instanceof UpgradeError), "a refusal is not an upgrade failure");
    await up.ready();
    up.stop();
    await up.drained;
    const late = await up.upgrade().then(() => null, (e) => e);
    assert.equal(late?.reason, "stopping");
    assert.deepEqual(refused, ["not-ready", "stopping"]);
    assert.deepEqual(failed, []);
  });

  test("an idle generation runs no timer, and none is left after a stop during an upgrade", async () => {
    const dir = left.tempDir("instar-lc-");
    const notifyPath = join(dir, "notify.sock");
    const notify = datagramReceiver(notifyPath);
    left.sockets.push({ close: () => sys.close(notify) });
    const r = await runCommand(runtimeCmd(RUNTIME, CHILD, ["timers", notifyPath]), {
      timeoutMs: 20_000,
    });
    assert.equal(r.code, 0, `the process exits by itself: ${showResult(r, 2000)}`);
    const [idle, upgrading, end] = lines(r.stdout);
    assert.deepEqual(idle.idle, [], "no timer while idle (control socket and listener on)");
    assert.ok((upgrading.upgrading as number) > 0, "an upgrade in flight has its ready timeout");
    assert.equal(end.reason, "cancelled");
    assert.equal(end.state, "stopped");
    assert.deepEqual(end.after, [], "every timer the lifecycle started was cleared");
    const sent = drainDatagrams(notify);
    assert.ok(sent.some((d) => d.startsWith("RELOADING=1")), sent.join(" | "));
    assert.ok(sent.some((d) => d.startsWith("STOPPING=1")), sent.join(" | "));
  });

  test("onDrained hooks and the code after `await up.drained` run before the process exits", async () => {
    const file = join(left.tempDir("instar-lc-"), "order.txt");
    const r = await runCommand(runtimeCmd(RUNTIME, CHILD, ["drained", file]), {
      timeoutMs: 20_000,
    });
    assert.equal(r.code, 0, showResult(r, 2000));
    assert.equal(readFileSync(file, "utf8"), "hook\nafter\n");
  });

  test("the reaper resolves with null for a pid that is not its child, instead of throwing", async () => {
    const reaper = new Reaper();
    const end = await within(reaper.exited(process.ppid), 5_000, "ECHILD answered");
    assert.equal(end, null);
  });

  test("killing and reaping a child keeps the event loop running", async () => {
    // Started like a generation (the runtime's own child_process would reap it itself).
    const pid = spawn({ path: "/bin/sleep", argv: ["sleep", "30"], env: [], fds: [] });
    const reaper = new Reaper();
    let last = performance.now(), worst = 0;
    const tick = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, 5);
    try {
      const end = await reaper.kill(pid, 2_000);
      assert.ok(end && !end.exited, `killed by a signal: ${JSON.stringify(end)}`);
    } finally {
      clearInterval(tick);
    }
    assert.ok(worst < 200, `the event loop stalled ${worst.toFixed(0)} ms`);
  });
});
