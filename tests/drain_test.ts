// What a draining generation does with what it still serves: slow requests
// finish, a stream that never ends is cut at the drain timeout, a storm of
// upgrade signals changes nothing, a stop refuses new connections at once,
// and h2 clients are moved on with GOAWAY. Both serve paths, this runtime.
import { describe, test } from "node:test";
import { DRAIN_DELAY_MS } from "../src/net/drain.ts";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";
import {
  alive,
  cleanupAfterTests,
  onPath,
  ROOT,
  runCommand,
  RUNTIME,
  showResult,
  skipIf,
  sleep,
  startedTogether,
  stopped,
  within,
} from "./support/helpers.ts";
import { nextPidInPidFile } from "./support/status.ts";
import { type Generations, startGenerations, upgradeByHup } from "./support/generations.ts";

const left = cleanupAfterTests();
const { tempDir } = left;
const EXAMPLE = join(ROOT, "examples", "http_server.ts");

function start(mode: string, extra: string[] = []): Promise<Generations> {
  return startGenerations(left, EXAMPLE, ["--serve-mode", mode, ...extra]);
}

/** One GET on its own connection; resolves with status and body, or the error's code. */
function get(port: number, path: string): Promise<{ status: number; body: string } | string> {
  return fetch(`http://127.0.0.1:${port}${path}`).then(
    async (r) => ({ status: r.status, body: await r.text() }),
    (e: Error & { cause?: { code?: string } }) => e.cause?.code ?? e.message,
  );
}

/** Resolves with the time connect(2) to `port` is first refused. */
async function refusedAt(port: number, limitMs: number): Promise<number> {
  const deadline = performance.now() + limitMs;
  while (performance.now() < deadline) {
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => (s.destroy(), resolve(false)));
      s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED"));
    });
    if (refused) return performance.now();
    await sleep(5);
  }
  throw new Error(`port ${port} still accepted connections after ${limitMs} ms`);
}

// These scenarios wait for slow requests and drains, each on a server of its own, and bound no
// time: both modes' are started at once (before the tests that bound a drain, a refusal or a
// forced exit, or need the old generation still draining when their signals come, and before
// any load), and each test asserts on its own scenario (its assertions run inside it; a failure
// rejects it).
const SIDE_BY_SIDE: Record<string, (mode: string) => Promise<void>> = {
  "slow requests in flight at an upgrade finish on the old generation": async (mode) => {
    const s = await start(mode);
    const slow = Array.from({ length: 8 }, () => get(s.port, "/slow?ms=1500"));
    await sleep(200);
    const next = await upgradeByHup(s, s.server.pid);
    for (const r of await Promise.all(slow)) {
      assert.equal(typeof r, "object", `a slow request failed: ${r}`);
      const { status, body } = r as { status: number; body: string };
      assert.equal(status, 200);
      assert.match(body, new RegExp(`pid ${s.server.pid} generation 1`));
    }
    assert.equal(await within(s.server.exited, 10_000, "old generation exit"), 0);
    process.kill(next, "SIGTERM");
    await stopped(next);
  },
  "connections queued in the kernel when SIGTERM arrives are answered, not reset": async (mode) => {
    const s = await start(mode);
    const busy = get(s.port, "/busy?ms=800"); // the event loop is blocked from now on
    await sleep(200);
    const queued = Array.from({ length: 5 }, () => get(s.port, "/"));
    await sleep(200);
    process.kill(s.server.pid, "SIGTERM"); // handled once the loop is free again
    for (const r of [await busy, ...(await Promise.all(queued))]) {
      assert.equal(typeof r, "object", `a request failed: ${r}`);
      assert.equal((r as { status: number }).status, 200);
    }
    assert.equal(await within(s.server.exited, 10_000, "exit"), 0);
  },
};
const MODES = ["transplant", "fallback"] as const;
const scenario = startedTogether(
  Object.fromEntries(
    MODES.flatMap((mode) =>
      Object.entries(SIDE_BY_SIDE).map(([name, run]) => [`${mode}: ${name}`, () => run(mode)])
    ),
  ),
);

describe(`draining, every mode's scenarios side by side (${RUNTIME})`, () => {
  for (const mode of MODES) {
    for (const name of Object.keys(SIDE_BY_SIDE)) {
      test(`serve ${mode}: ${name}`, () => scenario(`${mode}: ${name}`));
    }
  }
});

for (const mode of MODES) {
  describe(`draining (${RUNTIME}, serve ${mode})`, () => {
    test("a stream longer than the drain timeout is cut at the timeout; the old process is gone by timeout + 1 s", async () => {
      const drainMs = 1500;
      const s = await start(mode, ["--drain-timeout", String(drainMs)]);
      const res = await fetch(`http://127.0.0.1:${s.port}/stream?ms=60000`);
      const reader = res.body!.getReader();
      await reader.read(); // streaming from generation 1
      const next = await upgradeByHup(s, s.server.pid);
      const t0 = performance.now();
      let ended: number | undefined;
      try {
        for (;;) if ((await reader.read()).done) break;
        ended = performance.now() - t0;
      } catch {
        ended = performance.now() - t0; // cut: the body errors out
      }
      assert.ok(ended >= drainMs - 300, `cut after ${ended} ms, before the drain timeout`);
      assert.equal(await within(s.server.exited, drainMs + 1000, "old generation exit"), 0);
      // The timeout counts from the end of the drain's first pause (DRAIN_DELAY_MS); the 1 s is
      // the bound on closing the native server; the rest is a loaded machine's slack (CI ran
      // three files at once on 2 saturated cores after the zero-code matrix: 3,110 and 3,630 ms
      // seen on Bun, 2,000 ms on a quiet machine). A hung exit would still fail it.
      const gone = performance.now() - t0;
      assert.ok(gone <= DRAIN_DELAY_MS + drainMs + 1000 + 1500, `gone after ${gone} ms`);
      process.kill(next, "SIGTERM");
      await stopped(next);
    });

    test("50 SIGHUPs to a draining generation change nothing: its in-flight requests finish", async () => {
      const s = await start(mode);
      const old = s.server.pid;
      const slow = Array.from({ length: 4 }, () => get(s.port, "/slow?ms=2000"));
      await sleep(200);
      const next = await upgradeByHup(s, old);
      for (let i = 0; i < 50; i++) {
        process.kill(old, "SIGHUP");
        await sleep(10);
      }
      for (const r of await Promise.all(slow)) {
        assert.equal(typeof r, "object", `a slow request failed: ${r}`);
        assert.match((r as { body: string }).body, new RegExp(`pid ${old} generation 1`));
      }
      assert.equal(await within(s.server.exited, 10_000, "old generation exit"), 0);
      const refusals = s.server.lines.filter((l) => /upgrade-refused: stopping/.test(l));
      assert.ok(refusals.length >= 1, "the signals were answered with refusals");
      assert.equal(alive(next), true);
      process.kill(next, "SIGTERM");
      await stopped(next);
    });

    test("a repeated SIGTERM lets in-flight requests finish; a second SIGINT exits at once", async () => {
      const s = await start(mode);
      const slow = get(s.port, "/slow?ms=1500");
      await sleep(200);
      for (let i = 0; i < 3; i++) {
        process.kill(s.server.pid, "SIGTERM");
        await sleep(50);
      }
      const r = await slow;
      assert.equal(typeof r, "object", `the in-flight request was cut: ${r}`);
      assert.equal((r as { status: number }).status, 200);
      assert.equal(await within(s.server.exited, 10_000, "exit"), 0);

      const t = await start(mode);
      const cut = get(t.port, "/slow?ms=5000");
      await sleep(200);
      process.kill(t.server.pid, "SIGINT");
      await sleep(100);
      process.kill(t.server.pid, "SIGINT");
      assert.equal(await within(t.server.exited, 3_000, "forced exit"), 1);
      assert.equal(typeof await cut, "string", "the forced exit cut the 5 s request");
    });

    test("after SIGTERM new connections are refused within 250 ms while in-flight requests finish", async () => {
      const s = await start(mode);
      const slow = get(s.port, "/slow?ms=1500");
      await sleep(200);
      // Timed from the moment the generation logs that it drains (how long a loaded machine
      // takes to deliver the signal is not instar's to bound); the line reaches us after that.
      const draining = s.server.waitFor(/draining: stop/, 5_000, s.server.lines.length)
        .then(() => performance.now());
      process.kill(s.server.pid, "SIGTERM");
      const at = await refusedAt(s.port, 2000);
      const t0 = await draining;
      // 250 ms: one CI run (three files at once on 2 cores) measured 119 ms on Bun's proxy path.
      assert.ok(at - t0 <= 250, `refused only ${(at - t0).toFixed(0)} ms after draining began`);
      const r = await slow;
      assert.equal(typeof r, "object", `the in-flight request failed: ${r}`);
      assert.equal((r as { status: number }).status, 200);
      assert.equal(await within(s.server.exited, 10_000, "exit"), 0);
    });
  });
}

describe(`SIGHUP storms (${RUNTIME})`, () => {
  test("50 SIGHUPs within a second during an upgrade start one upgrade and fail no request", async () => {
    const s = await start("transplant", ["--ready-timeout", "20000"]);
    const ac = new AbortController();
    const load = runLoad({
      port: s.port,
      connections: 16,
      durationMs: 30_000,
      pauseMs: TEST_PAUSE_MS,
      signal: ac.signal,
    });
    const old = s.server.pid;
    let sent = 0;
    for (; sent < 50; sent++) {
      try {
        process.kill(old, "SIGHUP");
      } catch {
        break; // it already handed over, drained and exited (0, asserted below)
      }
      await sleep(5);
    }
    assert.ok(sent >= 10, `only ${sent} signals reached the old generation`);
    const next = await nextPidInPidFile(s.pidFile, old, { timeoutMs: 30_000, log: s.server.lines });
    s.server.pids.add(next);
    assert.equal(await within(s.server.exited, 10_000, "old generation exit"), 0);
    await sleep(300);
    ac.abort();
    const r = await load;
    assert.equal(r.failed, 0, `${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
    const started = s.server.lines.filter((l) => /upgrade-started/.test(l));
    assert.equal(started.length, 1, "one upgrade; the other signals were refused");
    assert.ok(s.server.lines.some((l) => /upgrade-refused: (in-progress|stopping)/.test(l)));
    process.kill(next, "SIGTERM");
    await stopped(next);
  });
});

const noH2 = RUNTIME !== "deno"
  ? "Bun.serve does not offer HTTP/2"
  : !onPath("h2load")
  ? "h2load is missing (Debian package nghttp2-client; .ci/run installs it)"
  : !onPath("openssl")
  ? "openssl is missing (Debian package openssl)"
  : false;
const h2name = "h2 clients see no failed stream across 3 upgrades (GOAWAY, then drain)";

describe(`HTTP/2 (${RUNTIME})`, () => {
  test(h2name, skipIf(noH2, h2name), async () => {
    const dir = tempDir("instar-h2-");
    const cert = join(dir, "cert.pem"), key = join(dir, "key.pem");
    execFileSync("openssl", [
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"],
      ...["-keyout", key, "-out", cert, "-subj", "/CN=localhost"],
    ], { stdio: "ignore" });
    const s = await start("transplant", ["--cert", cert, "--key", key]);
    const load = runCommand(
      ["h2load", "-c", "20", "-m", "10", "-D", "6", `https://127.0.0.1:${s.port}/`],
      { timeoutMs: 30_000 },
    );
    let current = s.server.pid;
    for (let i = 0; i < 3; i++) {
      await sleep(1200);
      current = await upgradeByHup(s, current);
    }
    const r = await load;
    assert.equal(r.code, 0, showResult(r, 2000));
    assert.match(r.stdout, /Application protocol: h2/);
    const m =
      /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/
        .exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[3]) > 1000, `only ${m[3]} requests succeeded`);
    assert.equal(Number(m[4]), 0, "failed");
    assert.equal(Number(m[5]), 0, "errored");
    process.kill(current, "SIGTERM");
    await stopped(current);
  });
});
