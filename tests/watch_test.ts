// watchPaths (src/supervisor/watch.ts), the file watch behind `instar run --watch`:
// in-place writes, editors that save by rename or by unlink + create, directories
// (recursive, editor droppings ignored), a watched directory removed and made again,
// debounce and its upper bound, close(), bad arguments.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { InstarError } from "../src/errors.ts";
import { watchPaths } from "../src/supervisor/watch.ts";
import {
  cleanupAfterTests,
  exchange,
  httpGet,
  rawListen,
  ROOT,
  RUNTIME,
  runtimeCmd,
  sideBySide,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";

const left = cleanupAfterTests();

/** A watch whose onChange calls are recorded; `waitCalls(n)` waits for the n-th. */
function recorded(paths: string[], debounceMs: number) {
  const calls: string[][] = [];
  const w = watchPaths(paths, { debounceMs }, (changed) => calls.push(changed.sort()));
  return {
    calls,
    close: () => w.close(),
    async waitCalls(n: number, timeoutMs = 10_000): Promise<string[][]> {
      const end = Date.now() + timeoutMs;
      while (calls.length < n) {
        if (Date.now() > end) {
          throw new Error(`${calls.length} of ${n} calls: ${JSON.stringify(calls)}`);
        }
        await sleep(10);
      }
      return calls;
    },
  };
}

// inotify watches are in place once watchPaths returns; a short pause lets the runtime's
// watcher thread (Deno) start reading before the first write.
const settle = () => sleep(150);

describe(`watchPaths (${RUNTIME})`, () => {
  // Each on a directory and a watch of its own, these mostly wait out debounces and quiet
  // times: their bodies run side by side (sideBySide()). The test that bounds how late a call
  // comes runs alone after them.
  const testSideBySide = sideBySide();
  testSideBySide("writes in place: a burst of writes is one call naming the file", async () => {
    const dir = left.tempDir("instar-watch-");
    const file = join(dir, "app.ts");
    writeFileSync(file, "1");
    const r = recorded([file], 200);
    try {
      await settle();
      for (let i = 0; i < 5; i++) writeFileSync(file, `v${i}`);
      assert.deepEqual(await r.waitCalls(1), [[file]]);
      await sleep(600);
      assert.equal(r.calls.length, 1, "debounced into one call");
      writeFileSync(file, "again");
      assert.deepEqual((await r.waitCalls(2))[1], [file]);
    } finally {
      r.close();
    }
  });

  testSideBySide(
    "editors that save by rename over the file, or unlink + create: every save is seen",
    async () => {
      const dir = left.tempDir("instar-watch-");
      const file = join(dir, "app.ts");
      writeFileSync(file, "1");
      const r = recorded([file], 100);
      try {
        await settle();
        for (let i = 1; i <= 3; i++) {
          const tmp = join(dir, `.app.ts.${i}.tmp`);
          writeFileSync(tmp, `saved ${i}`);
          renameSync(tmp, file); // the file is a new inode each time
          assert.deepEqual((await r.waitCalls(i))[i - 1], [file], `rename save ${i}`);
          await sleep(300);
        }
        unlinkSync(file);
        writeFileSync(file, "re-created");
        assert.deepEqual((await r.waitCalls(4))[3], [file], "unlink + create");
        await sleep(300);
        writeFileSync(file, "in place after all that");
        assert.deepEqual((await r.waitCalls(5))[4], [file], "still watched afterwards");
      } finally {
        r.close();
      }
    },
  );

  testSideBySide("other files in the same directory do not count", async () => {
    const dir = left.tempDir("instar-watch-");
    const file = join(dir, "app.ts");
    writeFileSync(file, "1");
    const r = recorded([file], 50);
    try {
      await settle();
      writeFileSync(join(dir, "other.ts"), "x");
      writeFileSync(join(dir, ".app.ts.swp"), "x");
      await sleep(600);
      assert.deepEqual(r.calls, []);
      writeFileSync(file, "2"); // and the watch still works
      assert.deepEqual(await r.waitCalls(1), [[file]]);
    } finally {
      r.close();
    }
  });

  testSideBySide(
    "a directory: changes below it are reported with their paths; editor droppings and .git are not",
    async () => {
      const dir = left.tempDir("instar-watch-");
      mkdirSync(join(dir, "lib"));
      mkdirSync(join(dir, ".git"));
      writeFileSync(join(dir, "lib", "a.ts"), "1");
      const r = recorded([dir], 150);
      try {
        await settle();
        writeFileSync(join(dir, ".git", "index"), "x");
        writeFileSync(join(dir, "lib", ".a.ts.swp"), "x");
        writeFileSync(join(dir, "lib", "a.ts~"), "x");
        await sleep(600);
        assert.deepEqual(r.calls, [], "nothing but droppings changed");
        writeFileSync(join(dir, "lib", "a.ts"), "2");
        assert.deepEqual(await r.waitCalls(1), [[join(dir, "lib", "a.ts")]]);
      } finally {
        r.close();
      }
    },
  );

  testSideBySide("a watched directory removed and made again is watched again", async () => {
    const base = left.tempDir("instar-watch-");
    const dir = join(base, "src");
    mkdirSync(dir);
    const r = recorded([dir], 100);
    try {
      await settle();
      rmSync(dir, { recursive: true });
      await sleep(400);
      mkdirSync(dir);
      await r.waitCalls(1); // it is back: reported, its contents may be new
      const before = r.calls.length;
      await sleep(300);
      writeFileSync(join(dir, "new.ts"), "x");
      const calls = await r.waitCalls(before + 1);
      assert.ok(calls.slice(before).flat().includes(join(dir, "new.ts")), JSON.stringify(calls));
    } finally {
      r.close();
    }
  });

  testSideBySide("close(): no call after it, even for a change already pending", async () => {
    const dir = left.tempDir("instar-watch-");
    const file = join(dir, "app.ts");
    writeFileSync(file, "1");
    const r = recorded([file], 300);
    await settle();
    writeFileSync(file, "2");
    await sleep(50);
    r.close();
    writeFileSync(file, "3");
    await sleep(700);
    assert.deepEqual(r.calls, []);
  });

  test("a file written without pause is reported at the latest 10 debounce periods (at least 1 s) after the first event", async () => {
    const dir = left.tempDir("instar-watch-");
    const file = join(dir, "log.ts");
    writeFileSync(file, "");
    const r = recorded([file], 100);
    try {
      await settle();
      const start = Date.now();
      while (Date.now() - start < 2_500 && r.calls.length === 0) {
        writeFileSync(file, String(Date.now()));
        await sleep(20); // always less than the debounce
      }
      assert.equal(r.calls.length, 1, "called while the writes went on");
      assert.ok(Date.now() - start < 2_400, `called after ${Date.now() - start} ms`);
    } finally {
      r.close();
    }
  });

  test("bad arguments: INVALID_ARGUMENT naming what was wrong", () => {
    const dir = left.tempDir("instar-watch-");
    const bad = (paths: string[], debounceMs: number, re: RegExp) =>
      assert.throws(
        () => watchPaths(paths, { debounceMs }, () => {}),
        (e: unknown) =>
          e instanceof InstarError && e.code === "INVALID_ARGUMENT" && re.test(e.message),
      );
    bad([], 100, /1 to 64 paths/);
    bad([join(dir, "missing.ts")], 100, /missing\.ts" does not exist/);
    bad([dir], -1, /debounce must be 0 to 60000 ms, got -1/);
    bad([dir], Number.NaN, /got NaN/);
    bad(Array(65).fill(dir), 100, /got 65/);
  });
});

/** A handler module answering `<version>` (`broken` leaves a syntax error in it). */
function handlerSource(version: string, broken = false): string {
  return `export default () => new Response("${version}\\n"${broken ? "" : ")"};\n`;
}

/** Writes `text` to `path` in place or, like many editors, as a new file renamed over it. */
function save(path: string, text: string, byRename: boolean): void {
  if (!byRename) return writeFileSync(path, text);
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

/** Waits until a fresh GET / answers `version`. */
async function answers(port: number, version: string, log: string[]): Promise<void> {
  const end = Date.now() + 60_000;
  let last = "";
  while (Date.now() < end) {
    last = await exchange(port, httpGet()).catch((e) => String(e));
    if (last.endsWith(`\r\n\r\n${version}\n`)) return;
    await sleep(50);
  }
  throw new Error(`never answered ${version}; last: ${last}\nlog:\n${log.slice(-30).join("\n")}`);
}

describe(`instar run --watch (${RUNTIME})`, () => {
  test("an edit made while the upgrade of the previous one runs is served too (not merged into it)", async () => {
    const dir = left.tempDir("instar-watch-run-");
    const handler = join(dir, "handler.ts");
    writeFileSync(handler, handlerSource("v1"));
    const { fd, port } = await rawListen();
    sys.close(fd);
    const app = runtimeCmd(RUNTIME, join(ROOT, "examples", "watch_app.ts"), [
      ...["--handler", handler, "--port", String(port)],
    ]);
    const server = startServer(
      runtimeCmd(RUNTIME, join(ROOT, "src", "cli", "main.ts"), [
        ...["run", "--watch", handler, "--watch-debounce", "100", "--", ...app],
      ]),
    );
    left.servers.push(server);
    await answers(port, "v1", server.lines);
    // v2 takes 3 s to load after it was read: the next generation has read v2 when v3 is saved.
    const from = server.lines.length;
    writeFileSync(
      handler,
      "await new Promise((r) => setTimeout(r, 3000));\n" + handlerSource("v2"),
    );
    await server.waitFor(/upgrade \(watch/, 30_000, from);
    await sleep(500);
    writeFileSync(handler, handlerSource("v3"));
    await answers(port, "v3", server.lines);
    process.kill(server.pid, "SIGTERM");
    assert.equal(await server.exited, 0, "the supervisor stopped gracefully");
  });

  test("5 edits of the served file under load: 0 failed, each edit served; a syntax error keeps the old version and is printed", async () => {
    const dir = left.tempDir("instar-watch-run-");
    const handler = join(dir, "handler.ts");
    writeFileSync(handler, handlerSource("v1"));
    const { fd, port } = await rawListen();
    sys.close(fd); // a port that was free a moment ago
    const app = runtimeCmd(RUNTIME, join(ROOT, "examples", "watch_app.ts"), [
      ...["--handler", handler, "--port", String(port)],
    ]);
    const server = startServer(
      runtimeCmd(RUNTIME, join(ROOT, "src", "cli", "main.ts"), [
        ...["run", "--watch", handler, "--watch-debounce", "200", "--", ...app],
      ]),
    );
    left.servers.push(server);
    await answers(port, "v1", server.lines);
    const ac = new AbortController();
    const seen = new Set<string>();
    // When each answer came, and from which version (a few tens of thousands at most).
    const times: number[] = [], versions: string[] = [];
    const onResponse = (b: string) => {
      seen.add(b.trim());
      times.push(performance.now());
      versions.push(b.trim());
    };
    const common = {
      port,
      durationMs: 180_000,
      pauseMs: TEST_PAUSE_MS,
      signal: ac.signal,
      onResponse,
    };
    let v6At = Infinity;
    const keepAlive = runLoad({ ...common, connections: 16 });
    const short = runLoad({ ...common, connections: 4, keepAlive: false });
    try {
      await sleep(300);
      for (let v = 2; v <= 6; v++) {
        save(handler, handlerSource(`v${v}`), v % 2 === 0);
        await answers(port, `v${v}`, server.lines);
        await sleep(300);
      }
      v6At = performance.now();
      const from = server.lines.length;
      save(handler, handlerSource("v7", true), false);
      await server.waitFor(/upgrade-failed/, 60_000, from);
      const after = server.lines.slice(from).join("\n");
      // The runtime's own report of the broken file, forwarded untouched by the supervisor.
      assert.match(after, /handler\.ts:1:\d+/, after);
      assert.match(after, /error/i, after);
      await sleep(500);
      await answers(port, "v6", server.lines);
      // Long enough after v6 took over for every keep-alive connection of v5 to have moved.
      await sleep(Math.max(0, v6At + 4_000 - performance.now()));
    } finally {
      ac.abort();
    }
    for (const [name, r] of [["keep-alive", await keepAlive], ["short", await short]] as const) {
      assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > 100, `${name}: only ${r.ok} responses`);
    }
    assert.deepEqual(
      [...seen].sort(),
      ["v2", "v3", "v4", "v5", "v6"].concat(seen.has("v1") ? ["v1"] : []).sort(),
    );
    // Once the old generations have drained, every answer is the new version's (and the broken
    // edit never answered).
    const late = versions.filter((_, i) => times[i] > v6At + 2_500);
    assert.ok(late.length > 50, `only ${late.length} answers late in the run`);
    assert.deepEqual([...new Set(late)], ["v6"]);
    process.kill(server.pid, "SIGTERM");
    assert.equal(await server.exited, 0, "the supervisor stopped gracefully");
  });
});
