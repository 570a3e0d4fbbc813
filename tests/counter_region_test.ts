// The shared counter region (src/observe/counter_region.ts) in this process:
// a fresh one is a sealed memfd; two mappings of it count in their own slots
// and read the same sum; a freed slot, or one whose owner died, is continued
// by the next generation without losing a count; and a region passed by a
// hostile or broken peer (a pipe, no seals, wrong size, wrong header or
// layout, a malformed name, a count that is no count) is refused with a
// warning naming the fault, its fd closed, and counting starts in a fresh one.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readlinkSync } from "node:fs";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import {
  CounterRegion,
  NAME_BYTES,
  NAMES,
  openRegion,
  REGION_BYTES,
  SLOTS,
} from "../src/observe/counter_region.ts";
import { Tally } from "../src/observe/tally.ts";
import { RUNTIME } from "./support/helpers.ts";

const HEADER = 64, NAME_ENTRY = 8 + NAME_BYTES, SLOTS_AT = HEADER + NAMES * NAME_ENTRY;
const SLOT_BYTES = 16 + 8 * NAMES;
const NO_SUCH_PID = 4_194_303; // pid_max's last pid: nothing runs there in a test container

/** Another mapping of the region on `fd`, as a peer would write it. */
function peer(fd: number) {
  const buf = sys.arrayBufferAt(sys.mmapShared(fd, REGION_BYTES), REGION_BYTES);
  const i32 = new Int32Array(buf), f64 = new Float64Array(buf), u8 = new Uint8Array(buf);
  return {
    i32,
    u8,
    owner: (slot: number) => i32[(SLOTS_AT + slot * SLOT_BYTES) / 4],
    setOwner: (slot: number, pid: number) => (i32[(SLOTS_AT + slot * SLOT_BYTES) / 4] = pid),
    setCount: (
      slot: number,
      name: number,
      n: number,
    ) => (f64[(SLOTS_AT + slot * SLOT_BYTES + 16) / 8 + name] = n),
    nameAt: (i: number) => HEADER + i * NAME_ENTRY,
  };
}

/** A copy of a well-formed region in a memfd of `bytes` bytes, sealed or not. */
function copyOf(
  bytes: number,
  seal: boolean,
  edit: (p: ReturnType<typeof peer>) => void = () => {},
) {
  const good = CounterRegion.create();
  good.claim(process.pid, 1);
  good.counter("accepted:tcp:127.0.0.1:1")![0] = 7;
  const fd = sys.memfdCreate("test-region", C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
  sys.ftruncate(fd, Math.max(bytes, REGION_BYTES));
  const p = peer(fd);
  p.u8.set(peer(good.fd!).u8);
  edit(p);
  good.release();
  if (bytes !== REGION_BYTES) sys.ftruncate(fd, bytes);
  if (seal) sys.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK | C.F_SEAL_GROW);
  return fd;
}

function target(fd: number): string | null {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

function refusedWith(fd: number, pattern: RegExp): void {
  const passed = target(fd);
  const warnings: string[] = [];
  const { region, adopted } = openRegion(fd, (m) => warnings.push(m));
  assert.equal(adopted, false, "refused");
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], pattern);
  assert.match(warnings[0], /counting starts afresh/);
  assert.notEqual(target(fd), passed, "its fd is closed (the number may be the new region's)");
  assert.ok(region.claim(process.pid, 2));
  region.counter("x")![0]++;
  assert.equal(region.totals().get("x"), 1, "the fresh region counts");
  region.release();
}

describe(`the counter region (${RUNTIME})`, () => {
  test("a fresh region is a memfd sealed against resizing, of the layout's size", () => {
    const r = CounterRegion.create();
    const seals = sys.fcntl(r.fd!, C.F_GET_SEALS);
    assert.equal(seals & (C.F_SEAL_SHRINK | C.F_SEAL_GROW | C.F_SEAL_SEAL), 7);
    assert.equal(sys.fileSize(r.fd!), REGION_BYTES);
    assert.equal(sys.fcntl(r.fd!, C.F_GETFD) & C.FD_CLOEXEC, C.FD_CLOEXEC, "close-on-exec");
    r.release();
    assert.equal(r.fd, null);
  });

  test("two generations count in their own slots and both read the sum", () => {
    const old = CounterRegion.create();
    assert.ok(old.claim(process.pid, 1));
    const mine = old.counter("accepted:a")!;
    mine[0] += 3;
    const next = CounterRegion.adopt(sys.dupCloexec(old.fd!));
    assert.ok(next.claim(NO_SUCH_PID - 1, 2));
    next.counter("accepted:a")![0] += 4;
    next.counter("upgrades:succeeded")![0]++;
    mine[0]++; // the old generation still counts while it drains
    for (const r of [old, next]) {
      assert.deepEqual([...r.totals()], [["accepted:a", 8], ["upgrades:succeeded", 1]]);
    }
    old.release();
    next.release();
  });

  test("a freed slot, and one whose owner died, is continued: the sum never falls", () => {
    const r = CounterRegion.create();
    const p = peer(r.fd!);
    // Every slot held by a running process (pid 1) but two: one free, one of a dead process.
    for (let s = 0; s < SLOTS; s++) p.setOwner(s, 1);
    p.setOwner(5, 0);
    p.setOwner(9, NO_SUCH_PID);
    const first = CounterRegion.adopt(sys.dupCloexec(r.fd!));
    assert.ok(first.claim(process.pid, 2));
    assert.equal(p.owner(5), process.pid, "the free slot first");
    first.counter("n")![0] += 10;
    first.release();
    assert.equal(p.owner(5), 0, "freed at the end; its count stays");
    const second = CounterRegion.adopt(sys.dupCloexec(r.fd!));
    assert.ok(second.claim(process.pid, 3));
    second.counter("n")![0]++;
    assert.equal(second.totals().get("n"), 11, "counts on from the freed slot's 10");
    const third = CounterRegion.adopt(sys.dupCloexec(r.fd!));
    assert.ok(third.claim(process.ppid, 4), "the dead process's slot");
    assert.equal(p.owner(9), process.ppid);
    const full = CounterRegion.adopt(sys.dupCloexec(r.fd!));
    assert.equal(full.claim(NO_SUCH_PID - 3, 5), false, "every slot held by a running process");
    full.counter("n")![0]++;
    assert.equal(full.totals().get("n"), 12, "counted privately, read with the rest");
    for (const x of [second, third, full, r]) x.release();
  });

  test("a count a peer scribbles over later adds nothing, and nothing throws", () => {
    const r = CounterRegion.create();
    r.claim(process.pid, 1);
    r.counter("n")![0] = 5;
    const p = peer(r.fd!);
    p.setCount(1, 0, NaN);
    p.setCount(2, 0, -3);
    p.setCount(3, 0, 0.5);
    assert.equal(r.totals().get("n"), 5);
    r.release();
  });

  test("a region passed by a hostile or broken peer is refused, naming the fault", () => {
    const [rd, wr] = sys.pipe2(C.O_CLOEXEC);
    sys.close(wr);
    refusedWith(rd, /fd \d+ is not a sealed memfd/);
    refusedWith(copyOf(REGION_BYTES, false), /may still change size/);
    refusedWith(copyOf(REGION_BYTES - 8, true), new RegExp(`has ${REGION_BYTES - 8} bytes`));
    refusedWith(copyOf(REGION_BYTES, true, (p) => (p.i32[0] = 0x1234)), /not a counter region/);
    refusedWith(copyOf(REGION_BYTES, true, (p) => (p.i32[3] = 9)), /layout 1\/64\/9\/320/);
    refusedWith(
      copyOf(REGION_BYTES, true, (p) => (p.i32[p.nameAt(3) / 4] = NAME_BYTES + 1)),
      /name 3 has length 321/,
    );
    refusedWith(
      copyOf(REGION_BYTES, true, (p) => {
        p.i32[p.nameAt(4) / 4] = 2;
        p.u8.set([0xc3, 0x28], p.nameAt(4) + 8);
      }),
      /name 4 is not UTF-8/,
    );
    refusedWith(copyOf(REGION_BYTES, true, (p) => p.setCount(7, 0, -1)), /slot 7 count 0 is -1/);
    refusedWith(copyOf(REGION_BYTES, true, (p) => p.setCount(8, 2, 1.5)), /slot 8 count 2 is 1.5/);
    refusedWith(copyOf(REGION_BYTES, true, (p) => p.setOwner(2, -5)), /slot 2 has owner -5/);
  });

  test("a well-formed copy is adopted with its counts", () => {
    const { region, adopted } = openRegion(copyOf(REGION_BYTES, true), assert.fail);
    assert.equal(adopted, true);
    assert.equal(region.totals().get("accepted:tcp:127.0.0.1:1"), 7);
    region.release();
  });

  test("a full names table costs a counter, with one warning, never an error", () => {
    const warnings: string[] = [];
    const tally = new Tally({
      regionFd: null,
      carried: null,
      pid: process.pid,
      generation: 1,
      warn: (m) => warnings.push(m),
    });
    for (let i = 0; i < NAMES; i++) tally.requests(`k${i}`)[0]++;
    tally.requests("one-too-many")[0]++;
    tally.requests("two-too-many")[0]++;
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /names table is full: accepted:one-too-many is not counted/);
    const read = tally.read(["k0", `k${NAMES - 1}`, "one-too-many"]);
    assert.deepEqual(read.accepted, { k0: 1, [`k${NAMES - 1}`]: 1, "one-too-many": 0 });
    tally.release();
  });
});
