// What scripts/test.mjs does about a test file that never ends, and about processes a file
// leaves running: each runner leads a session and process group of its own
// (scripts/test_group.mjs). The fixtures (tests/fixtures/runner/) run under the runtime named
// in each test, whichever runtime runs this file: the runner's handling does not depend on it.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  alive,
  cleanupAfterTests,
  onPath,
  ROOT,
  runCommand,
  showResult,
  skipIf,
  stopped,
} from "./support/helpers.ts";
import { groupMembers, groupOf } from "../scripts/test_group.mjs";

const left = cleanupAfterTests();
const cannot = (!onPath("node") && "node is not on PATH (scripts/test.mjs runs on it)") ||
  (!existsSync("/proc/self/stat") && "no /proc here to find a process group's members") ||
  (!onPath("setsid") && "setsid is missing (Debian package util-linux)");
// An absolute path: bun test runs a file given so whatever its name.
const fixture = (name: string) => join(ROOT, "tests/fixtures/runner", name);

/**
 * `node scripts/test.mjs --runtime <runtime> --file-timeout <s> <file>`, its logs in a directory
 * of this test's: what it printed, its exit code, its wall time (s), and the pid the fixture
 * wrote, if it wrote one.
 */
async function runner(runtime: string, file: string, fileTimeout = 20) {
  const dir = left.tempDir("instar-runner-");
  const pidFile = join(dir, "fixture.pid");
  const t0 = performance.now();
  const r = await runCommand(
    ["node", "scripts/test.mjs", "--runtime", runtime, "--file-timeout", `${fileTimeout}`, file],
    { env: { TMPDIR: dir, INSTAR_FIXTURE_PID_FILE: pidFile }, timeoutMs: 60_000 },
  );
  const seconds = (performance.now() - t0) / 1000;
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) : NaN;
  return { ...r, seconds, pid };
}

describe("the test runner's process groups", () => {
  test(
    "a file still running at --file-timeout fails, its whole process group killed, and the run goes on to its end",
    skipIf(cannot, "the hung file"),
    async () => {
      // 6 s: time for a loaded machine to start deno test and the fixture's child first.
      const r = await runner("deno", fixture("hang.ts"), 6);
      assert.equal(r.code, 1, showResult(r, 3000));
      assert.match(r.stdout, /hang\.ts: no end after 6 s: its process group was killed/);
      assert.match(r.stdout, /^total: 0 passed, 1 failed, 0 skipped$/m);
      assert.ok(r.seconds < 40, `the run took ${r.seconds.toFixed(1)} s`);
      assert.ok(r.pid > 0, "the fixture wrote no pid");
      await stopped(r.pid, 5_000); // the test's own child, not only the runner
    },
  );

  for (const runtime of ["deno", "bun"]) {
    test(
      `a process a file leaves in its group is named and killed once the runner exits (${runtime} test)`,
      skipIf(cannot, `the leftover (${runtime})`),
      async () => {
        const r = await runner(runtime, fixture("leave.ts"));
        const m = /leave\.ts left running \(killed\): (\d+) \(sleep\)$/m.exec(r.stdout);
        assert.ok(m, showResult(r, 3000));
        assert.match(r.stdout, /^total: 1 passed, 0 failed, 0 skipped$/m);
        assert.equal(r.code, 0, showResult(r, 3000));
        await stopped(Number(m[1]), 5_000);
      },
    );
  }

  test(
    "a process that left the runner's session and holds its output does not keep the run waiting",
    skipIf(cannot, "the escaped process"),
    async () => {
      const r = await runner("bun", fixture("escape.ts"));
      try {
        assert.ok(r.pid > 0, showResult(r, 3000));
        // It sleeps 30 s; the output is closed 5 s after the runner exits.
        assert.ok(alive(r.pid), "the escaped process is gone: the test proves nothing");
        assert.ok(r.seconds < 25, `the run took ${r.seconds.toFixed(1)} s`);
        assert.match(r.stdout, /^total: 1 passed, 0 failed, 0 skipped$/m);
        assert.equal(r.code, 0, showResult(r, 3000));
      } finally {
        if (r.pid > 0 && alive(r.pid)) process.kill(r.pid, "SIGKILL");
      }
    },
  );

  test(
    "groupOf() and groupMembers() find a process that leads a group of its own, and nothing in an unused one",
    skipIf(cannot, "groupMembers()"),
    async () => {
      // detached: setsid(2), so its group is its own pid, whatever groupOf() reads.
      const child = spawn("sleep", ["30"], { stdio: "ignore", detached: true });
      try {
        await new Promise((r) => child.once("spawn", r));
        assert.equal(groupOf(child.pid!), child.pid);
        assert.deepEqual(groupMembers(child.pid!), [{ pid: child.pid, name: "sleep" }]);
      } finally {
        child.kill("SIGKILL");
      }
      // Above the largest pid Linux hands out (pid_max is at most 2^22).
      assert.deepEqual(groupMembers(2 ** 22 + 1), []);
      assert.equal(groupOf(2 ** 22 + 1), null);
    },
  );
});
