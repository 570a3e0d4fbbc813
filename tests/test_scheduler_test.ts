// How scripts/test.mjs picks the next test file (scripts/test_schedule.mjs): longest first,
// within a budget of cores, never more than the job limit, and never stuck with nothing running.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { expectation, pickNext } from "../scripts/test_schedule.mjs";

interface Job {
  file: string;
  load: number;
}
const job = (file: string, load: number): Job => ({ file, load });
const limits = { budget: 2, maxJobs: 4 };

describe("the test scheduler", () => {
  test("expectation() reads a file's wall time and its load, the cores it uses on average", () => {
    const durations = { deno: { "a_test.ts": { wall: 40, cpu: 10 } } };
    assert.deepEqual(expectation(durations, "deno", "a_test.ts"), { wall: 40, load: 0.25 });
  });

  test("expectation() takes a file never measured as long and a whole core", () => {
    assert.deepEqual(expectation({ deno: {} }, "deno", "new_test.ts"), { wall: 60, load: 1 });
    assert.deepEqual(expectation({}, "bun", "new_test.ts"), { wall: 60, load: 1 });
    const wallOnly = { bun: { "b_test.ts": { wall: 12 } } };
    assert.deepEqual(expectation(wallOnly, "bun", "b_test.ts"), { wall: 12, load: 1 });
  });

  test("pickNext() starts the head of the queue while it fits", () => {
    assert.equal(pickNext([job("a", 0.9), job("b", 0.1)], [job("r", 1)], limits), 0);
  });

  test("pickNext() skips a job that would exceed the budget for a later one that fits", () => {
    const running = [job("r1", 0.9), job("r2", 0.8)];
    assert.equal(pickNext([job("heavy", 0.6), job("light", 0.2)], running, limits), 1);
  });

  test("pickNext() waits when no queued job fits, or when the job limit is reached", () => {
    assert.equal(pickNext([job("heavy", 0.6)], [job("r1", 0.9), job("r2", 0.8)], limits), -1);
    const four = [job("r1", 0.1), job("r2", 0.1), job("r3", 0.1), job("r4", 0.1)];
    assert.equal(pickNext([job("light", 0.1)], four, limits), -1);
    assert.equal(pickNext([], [], limits), -1);
  });

  test("pickNext() starts a job alone whatever its load, so the run never stalls", () => {
    assert.equal(pickNext([job("huge", 5)], [], limits), 0);
  });
});
