// src/ffi/files.ts: Bun's synchronous /proc reads through libc (src/host.ts) give what node:fs
// gives, in both runtimes (Deno's host reads with Deno.* but the functions work there too).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readDirNames, readFileBytes, readLinkText } from "../src/ffi/files.ts";
import { SystemError } from "../src/errors.ts";

describe("ffi files", () => {
  test("a /proc file (size 0) and a file larger than one read", () => {
    assert.deepEqual(
      readFileBytes("/proc/self/cmdline"),
      new Uint8Array(readFileSync("/proc/self/cmdline")),
    );
    const dir = mkdtempSync(join(tmpdir(), "instar-files-"));
    try {
      const big = new Uint8Array(200_000).map((_, i) => i % 251);
      writeFileSync(join(dir, "big"), big);
      assert.deepEqual(readFileBytes(join(dir, "big")), big);
      assert.deepEqual(readFileBytes(join(dir, "big")).length, 200_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a symbolic link, and a directory with more entries than one getdents64 call returns", () => {
    assert.equal(readLinkText("/proc/self/exe"), readlinkSync("/proc/self/exe"));
    const dir = mkdtempSync(join(tmpdir(), "instar-files-"));
    try {
      const names = Array.from({ length: 1500 }, (_, i) => `file-with-a-long-name-${i}`);
      for (const n of names) writeFileSync(join(dir, n), "");
      assert.deepEqual(readDirNames(dir).sort(), readdirSync(dir).sort());
      assert.equal(readDirNames(dir).length, 1500);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("errors are SystemErrors with the errno's name", () => {
    assert.throws(
      () => readFileBytes("/nonexistent/x"),
      (e) => e instanceof SystemError && e.code === "ENOENT",
    );
    assert.throws(
      () => readLinkText("/proc/self/status"),
      (e) => e instanceof SystemError && e.code === "EINVAL",
    );
    assert.throws(
      () => readDirNames("/proc/self/status"),
      (e) => e instanceof SystemError && e.code === "ENOTDIR",
    );
  });
});
