/**
 * Next.js's standalone server, unmodified, under `instar run --auto` (issue
 * 18): the tiny app of tests/fixtures/next, built with the real `next` from
 * the npm registry and cached (tests/support/next_build.ts), its generated
 * `server.js` run by the runtime this file runs under (`bun server.js`;
 * `deno run -A --unstable-detect-cjs server.js`) with `--ready-url /api/pid`.
 * One supervisor serves every test, in order: it answers; 20 upgrades by
 * SIGHUP to the supervisor under keep-alive GET and 16 KiB POST load from
 * clients that never re-send fail no request; a slow request in flight at
 * SIGTERM is answered although Next.js's own SIGTERM handler calls
 * `process.exit()`.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import {
  alive,
  cleanupAfterTests,
  describeUnless,
  freePort,
  ROOT,
  RUNTIME,
  runtimeCmd,
  type ServerProcess,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { bin } from "./support/procs.ts";
import {
  breakStaleLock,
  builtNext,
  type NextBuild,
  nextMissing,
  tryLock,
} from "./support/next_build.ts";
import { runLoad, TEST_PAUSE_MS } from "./support/load_client.ts";

const left = cleanupAfterTests();
const UPGRADES = 20;

interface NextApp {
  sup: ServerProcess;
  port: number;
  /** Every generation's pid, the current one last. */
  pids: number[];
}

/** A GET to 127.0.0.1: resolves with the body of a 200, rejects on anything else. */
function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => res.statusCode === 200 ? resolve(body) : reject(new Error(body)));
    }).on("error", reject);
  });
}

/** `instar run --auto --ready-url /api/pid -- <runtime> server.js`; resolves once generation 1 is ready. */
async function startNext(build: NextBuild): Promise<NextApp> {
  const port = await freePort();
  const app = RUNTIME === "deno"
    ? [bin("deno"), "run", "-A", "--unstable-detect-cjs", build.serverJs]
    : [bin("bun"), build.serverJs];
  const sup = startServer(
    [
      ...runtimeCmd(RUNTIME, join(ROOT, "src/cli/main.ts")),
      ...["run", "--auto", "--ready-url", "/api/pid", "--", ...app],
    ],
    {
      PORT: String(port),
      HOSTNAME: "127.0.0.1",
      NEXT_TELEMETRY_DISABLED: "1",
      // A generation's start (Next.js's own, then its first 2xx on /api/pid) took up to 13 s
      // with both runtimes' runs of this file and other tests on the 2 cores: 10 s, the
      // default, failed an upgrade there. Below INSTAR_READY_TIMEOUT (60 s).
      INSTAR_AUTO_LISTEN_TIMEOUT: "45000",
    },
  );
  left.servers.push(sup);
  const [, pid] = await sup.waitFor(/generation 1 \(pid (\d+)\) is ready/, 60_000);
  return { sup, port, pids: [Number(pid)] };
}

/** SIGHUP to the supervisor; resolves with the new generation's pid once it serves. */
async function upgrade(app: NextApp): Promise<number> {
  const from = app.sup.lines.length;
  process.kill(app.sup.pid, "SIGHUP");
  const [line, pid] = await app.sup.waitFor(
    /upgraded: pid (\d+) serves|upgrade failed: .*/,
    60_000,
    from,
  );
  assert.ok(pid, `upgrade ${app.pids.length}: ${line}`);
  app.pids.push(Number(pid));
  return Number(pid);
}

/** The old generations' "ready after" of every upgrade (spawn to ready), ms, sorted. */
function readyAfter(lines: string[]): number[] {
  return lines.flatMap((l) => /upgrade-succeeded: .* ready after (\d+) ms/.exec(l)?.[1] ?? [])
    .map(Number).sort((a, b) => a - b);
}

let build: Promise<NextBuild> | undefined;
let started: Promise<NextApp> | undefined;
const built = () => (build ??= builtNext());
const running = () => (started ??= built().then(startNext));

test("the build lock is held by one process at a time, and taken over from a builder that died", () => {
  const lock = join(left.tempDir("instar-next-lock-"), "key.lock");
  mkdirSync(lock);
  writeFileSync(join(lock, "owner"), "2147483646 1"); // no such process
  assert.equal(tryLock(lock), false, "held by its owner file");
  breakStaleLock(lock);
  assert.equal(tryLock(lock), true, "taken over from the dead builder");
  assert.equal(tryLock(lock), false, "held: a second taker waits");
  breakStaleLock(lock);
  assert.equal(existsSync(join(lock, "owner")), true, "a live builder's lock stays");
});

describeUnless(nextMissing(), `Next.js standalone under instar run --auto (${RUNTIME})`, () => {
  test("next build makes a standalone server.js once, then finds it in the cache", async () => {
    const b = await built();
    console.log(
      `next ${b.next}: ${b.builtNow ? "built" : "from the cache"} (build took ${b.buildSeconds} s)`,
    );
    assert.ok(existsSync(b.serverJs), b.serverJs);
    const again = await builtNext();
    assert.equal(again.builtNow, false, "a second call builds nothing");
    assert.equal(again.serverJs, b.serverJs);
  });

  test("its server.js, unmodified, answers GET and a 16 KiB POST through instar run --auto --ready-url", async () => {
    const app = await running();
    const pid = app.pids[0];
    assert.equal(await get(app.port, "/api/pid"), `pid ${pid} read 0\n`);
    const bodies: string[] = [];
    const posted = await runLoad({
      port: app.port,
      path: "/api/pid",
      connections: 1,
      maxRequests: 1,
      durationMs: 10_000,
      postBytes: 16 * 1024,
      onResponse: (b) => bodies.push(b),
    });
    assert.equal(posted.ok, 1, posted.samples.join("; "));
    assert.deepEqual(bodies, [`pid ${pid} read 16384\n`]);
  });

  test(`${UPGRADES} upgrades by SIGHUP to the supervisor under keep-alive GET and 16 KiB POST load fail no request, every POST read in full, every generation answering`, async () => {
    const app = await running();
    const answered = new Set<string>(), partial: string[] = [];
    let fullPosts = 0;
    const stop = new AbortController();
    const load = {
      port: app.port,
      path: "/api/pid",
      durationMs: 180_000,
      pauseMs: TEST_PAUSE_MS,
      signal: stop.signal,
    };
    const gets = runLoad({
      ...load,
      connections: 8,
      onResponse: (b) => answered.add(b.split(" ")[1]),
    });
    const posts = runLoad({
      ...load,
      connections: 4,
      postBytes: 16 * 1024,
      onResponse: (b) => / read 16384\n$/.test(b) ? fullPosts++ : partial.push(b),
    });
    // Every generation answers the load before the next upgrade (or within 10 s: the assertion
    // below names the silent ones), so that none is replaced before the load has reached it.
    const answeredBy = async (pid: number) => {
      const until = performance.now() + 10_000;
      while (!answered.has(String(pid)) && performance.now() < until) await sleep(20);
    };
    await answeredBy(app.pids[0]);
    for (let i = 0; i < UPGRADES; i++) await answeredBy(await upgrade(app));
    stop.abort();
    const [g, p] = [await gets, await posts];
    for (const [name, r] of Object.entries({ GET: g, POST: p })) {
      assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > UPGRADES, `${name}: only ${r.ok} answers`);
    }
    assert.deepEqual(partial, [], "POSTs answered without their whole body read");
    assert.equal(fullPosts, p.ok);
    assert.equal(new Set(app.pids).size, UPGRADES + 1, `generations: ${app.pids.join(" ")}`);
    assert.deepEqual([...answered].sort(), app.pids.map(String).sort(), "GET answers by pid");
    const ms = readyAfter(app.sup.lines);
    console.log(
      `${UPGRADES} upgrades: GET ${g.ok} answered, POST ${p.ok} answered, 0 failed; new ` +
        `generation ready after ${ms[ms.length >> 1]} ms (median), ${ms.at(-1)} ms (max)`,
    );
  });

  test("a slow request in flight at SIGTERM to the supervisor is answered before Next.js's own SIGTERM handler ends the process with its status, and every generation has exited", async () => {
    const app = await running();
    const pid = app.pids.at(-1)!, from = app.sup.lines.length;
    const slow = get(app.port, "/api/slow");
    await app.sup.waitFor(new RegExp(`^slow-start ${pid}$`), 10_000, from);
    process.kill(app.sup.pid, "SIGTERM");
    assert.equal(await slow, `slow pid ${pid}\n`);
    // Next.js 16 exits with 143 (128 + SIGTERM) from its handler, 15 with 0: the supervisor
    // passes the generation's status on; "exited" (not "was killed by") says the app chose it.
    const [, status] = await app.sup.waitFor(
      new RegExp(`generation \\d+ \\(pid ${pid}\\) exited with status (\\d+)`),
      10_000,
      from,
    );
    const major = Number((await built()).next.split(".")[0]);
    assert.equal(Number(status), major >= 16 ? 143 : 0, `next ${major}`);
    assert.equal(await app.sup.exited, Number(status));
    assert.deepEqual(app.pids.filter((p) => alive(p)), [], "generations still running");
  });
});
