// Spreading reconnections (closeSpread): spread() itself, the option, and a
// herd of WebSockets on examples/ws_chat.ts that reconnect when told
// `draining` while fresh HTTP requests are timed in a process of their own.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { InstarError } from "../src/errors.ts";
import { DEFAULT_CLOSE_SPREAD_MS, resolveOptions } from "../src/lifecycle/options.ts";
import { spread } from "../src/timeout.ts";
import { close as closeFd } from "../src/ffi/mod.ts";
import { openSocket } from "../src/net/listener.ts";
import { cleanupAfterTests, onPath, RUNTIME, skipIf } from "./support/helpers.ts";
import { herdThroughUpgrades } from "./support/ws_herd.ts";

const left = cleanupAfterTests();

describe("spread()", () => {
  test("calls every item once, in batches from the start to the end of the window, skipping one deleted before its turn", async () => {
    const items = new Set(Array.from({ length: 200 }, (_, i) => i));
    const at = new Map<number, number>();
    const start = performance.now();
    const called = await spread(items, (i) => {
      at.set(i, performance.now() - start);
      if (i === 0) items.delete(199);
    }, 400);
    assert.equal(called, 199);
    assert.equal(at.has(199), false, "the deleted item was skipped");
    assert.ok(at.get(0)! < 50, `the first batch went at once (${at.get(0)} ms)`);
    assert.ok(at.get(198)! >= 350, `the last batch went near the window's end (${at.get(198)} ms)`);
    assert.ok(at.get(100)! >= 150, `the middle went mid-window (${at.get(100)} ms)`);
    const batches = new Set([...at.values()].map((t) => Math.round(t / 5)));
    assert.ok(batches.size >= 20, `in many batches, not a few bursts (${batches.size})`);
  });

  test("with a window of 0 calls every item before it returns", () => {
    let calls = 0;
    void spread([1, 2, 3], () => calls++, 0);
    assert.equal(calls, 3);
  });

  test("an exception does not stop the other calls: it rejects with the first once all had their turn", async () => {
    const seen: number[] = [];
    await assert.rejects(
      spread([1, 2, 3, 4], (i) => {
        seen.push(i);
        if (i % 2 === 0) throw new Error(`item ${i}`);
      }, 30),
      /item 2/,
    );
    assert.deepEqual(seen, [1, 2, 3, 4]);
  });

  test("with onError every exception goes to it and it resolves with how many calls succeeded", async () => {
    const errors: string[] = [];
    const called = await spread(
      [1, 2, 3, 4],
      (i) => {
        if (i % 2 === 0) throw new Error(`item ${i}`);
      },
      30,
      (e) => errors.push((e as Error).message),
    );
    assert.equal(called, 2);
    assert.deepEqual(errors, ["item 2", "item 4"]);
  });
});

describe("the closeSpread option", () => {
  test(`defaults to ${DEFAULT_CLOSE_SPREAD_MS} ms and is at most half the drain timeout`, () => {
    assert.equal(resolveOptions({}).closeSpread, DEFAULT_CLOSE_SPREAD_MS);
    assert.equal(resolveOptions({ drainTimeout: 1000, closeSpread: 5000 }).closeSpread, 500);
    assert.equal(resolveOptions({ closeSpread: 0 }).closeSpread, 0);
  });

  test("a negative, fractional or non-number closeSpread is refused with INVALID_ARGUMENT naming it", () => {
    for (const bad of [-1, 1.5, NaN, "1000"]) {
      assert.throws(
        () => resolveOptions({ closeSpread: bad as number }),
        (e: unknown) =>
          e instanceof InstarError && e.code === "INVALID_ARGUMENT" &&
          e.message.includes("closeSpread"),
      );
    }
  });
});

describe("the listen backlog", () => {
  // ss shows a listening socket's accept queue length (sk_max_ack_backlog) as its Send-Q.
  const queueOf = (port: number): number => {
    const out = spawnSync("ss", ["-Hltn", `sport = :${port}`], { encoding: "utf8" }).stdout;
    return Number(out.trim().split(/\s+/)[2]);
  };

  test(
    "a socket opened without a backlog gets SOMAXCONN's queue (as net.core.somaxconn allows), one with a backlog that",
    skipIf(!onPath("ss") && "ss (iproute2) not installed", "ss"),
    async () => {
      const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"));
      for (const [backlog, expected] of [[undefined, Math.min(4096, somaxconn)], [100, 100]]) {
        const { fd, addr } = await openSocket({ hostname: "127.0.0.1", port: 0, backlog });
        try {
          assert.equal(queueOf((addr as { port: number }).port), expected, `backlog ${backlog}`);
        } finally {
          closeFd(fd);
        }
      }
    },
  );
});

describe(`a WebSocket herd across an upgrade (${RUNTIME})`, () => {
  test("600 WebSockets told to reconnect over a 3 s window move with no failed handshake, fresh requests meanwhile wait for no SYN retry, and WebSockets left open get 1012 spread over the drain's last 3 s", async () => {
    const windowMs = 3000, drainMs = 6000;
    const out = await herdThroughUpgrades(left, {
      clients: 600,
      stay: 30,
      upgrades: 1,
      drainTimeoutMs: drainMs,
      closeSpreadMs: windowMs,
    });
    assert.equal(out.failedHandshakes, 0);
    const notices = out.notices[0];
    // Every client was told at least once. A few more notices than clients are not an error: the
    // first notices go out in the same turn as the old generation stops accepting, and a client
    // whose new connection that generation still took (3 of 600 once under npm test on Bun) is
    // welcomed and told again, then moves; every client ends on the new generation either way
    // (herdThroughUpgrades waits for all 600 to be welcomed there).
    assert.ok(notices.length >= 600, `${notices.length} notices for 600 clients`);
    // All at once, the clients would get them within a few hundred ms (their own reading time).
    assert.ok(notices.at(-1)! >= windowMs * 0.7, `notices span ${notices.at(-1)} ms`);
    assert.ok(notices[300] >= windowMs * 0.3, `the median notice came at ${notices[300]} ms`);

    const p = out.probes;
    assert.deepEqual(p.failed, []);
    assert.ok(p.ms.length > 20, `${p.ms.length} fresh requests`);
    const max = Math.max(...p.ms);
    assert.ok(
      max < 1000,
      `the slowest fresh request took ${max} ms (connect ${Math.max(...p.connectMs)} ms)`,
    );

    // The 1012s go out over the drain's last 3 s, the other half of the 6 s drain timeout.
    const closes = out.closes;
    assert.equal(closes.length, 30);
    assert.ok(closes.every((c) => c.code === 1012), JSON.stringify(closes.map((c) => c.code)));
    const first = closes[0].at, last = closes.at(-1)!.at;
    assert.ok(first >= drainMs / 2 - 500, `the first 1012 came ${first} ms after the notice`);
    assert.ok(last - first >= windowMs / 2, `the 1012s spanned ${last - first} ms`);
    assert.ok(last <= drainMs + 1500, `the last 1012 came ${last} ms after the notice`);
  });
});
