// How scripts/test.mjs picks the next test file (scripts/test_schedule.mjs): longest first,
// within a budget of cores, never more than the job limit, a heavy head not passed over for
// ever, and never stuck with nothing running.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  cgroupQuota,
  expectation,
  PASS_LIMIT,
  takeNext,
  usableCores,
} from "../scripts/test_schedule.mjs";

interface Job {
  file: string;
  load: number;
  passedOver?: number;
}
const job = (file: string, load: number): Job => ({ file, load });
const limits = { budget: 2, maxJobs: 4 };
/** The file taken from `queue` beside `running`, or undefined; `queue` loses it. */
const next = (queue: Job[], running: Job[]) => takeNext(queue, running, limits)?.file;

describe("the test scheduler", () => {
  test("expectation() reads a file's wall time and its load, the cores it uses on average", () => {
    const durations = { deno: { "a_test.ts": { wall: 40, cpu: 10 } } };
    assert.deepEqual(expectation(durations, "deno", "a_test.ts"), { wall: 40, load: 0.25 });
  });

  test("expectation() takes a file never measured, or measured without CPU, as long and a whole core", () => {
    assert.deepEqual(expectation({ deno: {} }, "deno", "new_test.ts"), { wall: 60, load: 1 });
    assert.deepEqual(expectation({}, "bun", "new_test.ts"), { wall: 60, load: 1 });
    const wallOnly = { bun: { "b_test.ts": { wall: 12 } } };
    assert.deepEqual(expectation(wallOnly, "bun", "b_test.ts"), { wall: 12, load: 1 });
    const oldFormat = { bun: { "c_test.ts": 30 } };
    assert.deepEqual(expectation(oldFormat, "bun", "c_test.ts"), { wall: 60, load: 1 });
  });

  test("expectation() caps a load at 2 cores and a wall time below 1 s at 1 s", () => {
    const d = { deno: { "x_test.ts": { wall: 10, cpu: 50 }, "y_test.ts": { wall: 0, cpu: 0.5 } } };
    assert.deepEqual(expectation(d, "deno", "x_test.ts"), { wall: 10, load: 2 });
    assert.deepEqual(expectation(d, "deno", "y_test.ts"), { wall: 1, load: 0.5 });
  });

  test("expectation() counts a quiet file as at least a whole core", () => {
    const d = { bun: { "q_test.ts": { wall: 20, cpu: 6, quiet: true } } };
    assert.deepEqual(expectation(d, "bun", "q_test.ts"), { wall: 20, load: 1 });
  });

  test("takeNext() takes the head of the queue while it fits", () => {
    const queue = [job("a", 0.9), job("b", 0.1)];
    assert.equal(next(queue, [job("r", 1)]), "a");
    assert.deepEqual(queue.map((j) => j.file), ["b"]);
  });

  test("takeNext() passes over a head that does not fit for a later job that does", () => {
    const queue = [job("heavy", 0.6), job("light", 0.2)];
    assert.equal(next(queue, [job("r1", 0.9), job("r2", 0.8)]), "light");
    assert.equal(queue[0].passedOver, 1);
  });

  test(`takeNext() passes over the head at most ${PASS_LIMIT} times, then waits for it`, () => {
    const queue = [job("heavy", 0.6), ...Array.from({ length: 9 }, (_, i) => job(`l${i}`, 0.05))];
    const running = [job("r1", 0.9), job("r2", 0.8)];
    const taken = [];
    for (let i = 0; i < 9; i++) {
      const j = takeNext(queue, running, { budget: 2, maxJobs: 20 });
      if (j) taken.push(j.file);
    }
    assert.deepEqual(taken, Array.from({ length: PASS_LIMIT }, (_, i) => `l${i}`));
    assert.equal(next(queue, [job("r1", 0.9)]), "heavy", "the head starts once it fits");
  });

  test("takeNext() waits when no queued job fits, or when the job limit is reached", () => {
    assert.equal(next([job("heavy", 0.6)], [job("r1", 0.9), job("r2", 0.8)]), undefined);
    const four = [job("r1", 0.1), job("r2", 0.1), job("r3", 0.1), job("r4", 0.1)];
    assert.equal(next([job("light", 0.1)], four), undefined);
    assert.equal(next([], []), undefined);
  });

  test("takeNext() starts a job alone whatever its load, so the run never stalls", () => {
    assert.equal(next([job("huge", 5)], []), "huge");
  });

  test("takeNext() counts passes per head: a new head starts with none", () => {
    const queue = [job("h1", 0.5), job("h2", 0.6), job("l1", 0.05), job("l2", 0.05)];
    const running = [job("r1", 0.9), job("r2", 0.7)];
    assert.equal(next(queue, running), "l1");
    assert.equal(next(queue, [job("r1", 0.9)]), "h1");
    assert.equal(queue[0].file, "h2");
    assert.equal(queue[0].passedOver, undefined);
  });

  test("cgroupQuota() takes the smallest CPU quota of the process's cgroup and those above it", () => {
    const files = (map: Record<string, string>) => (path: string) => map[path];
    const v2 = "0::/system.slice/app.service\n";
    assert.equal(cgroupQuota(v2, files({})), undefined);
    assert.equal(
      cgroupQuota(v2, files({ "/sys/fs/cgroup/system.slice/app.service/cpu.max": "max 100000\n" })),
      undefined,
    );
    assert.equal(
      cgroupQuota(
        v2,
        files({
          "/sys/fs/cgroup/system.slice/app.service/cpu.max": "300000 100000\n",
          "/sys/fs/cgroup/system.slice/cpu.max": "150000 100000\n",
        }),
      ),
      1.5,
    );
    const v1 = "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n";
    assert.equal(
      cgroupQuota(v1, files({ "/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us": "-1" })),
      undefined,
    );
    assert.equal(
      cgroupQuota(
        v1,
        files({
          "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000",
          "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
        }),
      ),
      2,
      "a container's own cgroup, mounted at the root, is read too",
    );
  });

  test("usableCores() is the number of cores this process may use, at least 1", () => {
    const n = usableCores();
    assert.ok(n >= 1 && n <= 4096, String(n));
  });
});
