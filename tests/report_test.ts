// Observability inside the test process: healthResponse and metrics through a
// generation's life (starting, ready, draining), JSON lifecycle logs, the
// Prometheus text's escaping (read back by a real parser), and the hostile
// input the observability adds to the protocol: counters in the hello, upgrade
// reports, and triggers and reports on the control socket.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  healthResponse,
  InstarError,
  logLifecycle,
  type Metrics,
  metricsResponse,
  Upgrader,
} from "../mod.ts";
import { prometheusText } from "../unstable.ts";
import {
  type CarriedCounters,
  MAX_COUNTER_KEYS,
  validateCounters,
  zeroCounters,
} from "../src/observe/counters.ts";
import { validateReport } from "../src/observe/report.ts";
import { establishedByPort } from "../src/net/sock_diag.ts";
import { Observer } from "../src/lifecycle/observer.ts";
import { Emitter } from "../src/lifecycle/events.ts";
import type { UpgradeReport } from "../mod.ts";
import { socketInodesAsync, tcpConnectionInodes } from "../src/proc.ts";
import net from "node:net";
import process from "node:process";
import { PROTOCOL_VERSION } from "../src/protocol/messages.ts";
import { messageOf, validateHello } from "../src/protocol/validate.ts";
import { connectControl } from "../src/protocol/client.ts";
import { exchange, httpGet, runCommand, showResult, skipIf, sleep } from "./support/helpers.ts";

const PYTHON = "/usr/bin/python3";

function upgrader(extra: Record<string, unknown> = {}) {
  return Upgrader.create({ upgradeSignal: null, stopSignals: [], exitAfterDrain: false, ...extra });
}

const hello = {
  type: "hello",
  v: PROTOCOL_VERSION,
  generation: 2,
  pid: 1234,
  transfer: "inherit",
  listeners: [],
  control: null,
};
const counters = (): CarriedCounters => ({
  upgrades: { succeeded: 3, failed: { exited: 1 }, refused: {}, rolledBack: 0 },
  accepted: { "tcp:127.0.0.1:8080": 42 },
});
const report = () => ({
  trigger: "cli",
  outcome: "succeeded",
  reason: null,
  startedAt: new Date().toISOString(),
  old: { pid: 100, generation: 1 },
  new: { pid: 101, generation: 2 },
  spawnMs: 3,
  readyMs: 80,
  drain: { ms: 260, atHandover: 4, drained: 3, forced: 1 },
});

describe("counters and reports from other processes are checked", () => {
  test("a hello's counters are taken when well-formed, refused naming the fault otherwise", () => {
    assert.deepEqual(validateHello({ ...hello, counters: counters() }).counters, counters());
    assert.equal(validateHello({ ...hello }).counters, undefined, "older senders send none");
    const bad: [string, (c: ReturnType<typeof counters>) => unknown][] = [
      ["negative", (c) => ((c.upgrades.succeeded = -1), c)],
      ["fraction", (c) => ((c.accepted["tcp:127.0.0.1:8080"] = 1.5), c)],
      ["beyond 2^53", (c) => ((c.upgrades.rolledBack = 2 ** 60), c)],
      ["string count", (c) => ({ ...c, upgrades: { ...c.upgrades, succeeded: "3" } })],
      ["reason with spaces", (c) => ((c.upgrades.failed = { "no way": 1 }), c)],
      ["array", () => []],
      ["missing upgrades", (c) => ({ accepted: c.accepted })],
      ["too many keys", (c) => {
        for (let i = 0; i <= MAX_COUNTER_KEYS; i++) c.accepted[`tcp:127.0.0.1:${i}`] = 1;
        return c;
      }],
      ["huge key", (c) => ((c.accepted["x".repeat(10_000)] = 1), c)],
    ];
    for (const [what, mutate] of bad) {
      assert.throws(
        () => validateHello({ ...hello, counters: mutate(counters()) }),
        (e: unknown) =>
          e instanceof InstarError && e.code === "PROTOCOL_ERROR" && /counters/.test(e.message),
        what,
      );
    }
    assert.deepEqual(validateCounters(counters()), counters());
  });

  test("a report is taken when well-formed, refused naming the fault otherwise", () => {
    const good = report();
    assert.deepEqual(validateReport(good), good);
    const bad: [string, (r: Record<string, unknown>) => void][] = [
      ["outcome", (r) => (r.outcome = "maybe")],
      ["trigger", (r) => (r.trigger = "A Trigger With Spaces")],
      ["pid", (r) => (r.old = { pid: 0, generation: 1 })],
      ["spawnMs", (r) => (r.spawnMs = -5)],
      ["readyMs", (r) => (r.readyMs = Infinity)],
      ["drain", (r) => (r.drain = { ms: 1, atHandover: 1, drained: 1, forced: null })],
      ["startedAt", (r) => (r.startedAt = "yesterday")],
      ["reason", (r) => (r.reason = "x".repeat(1000))],
    ];
    for (const [what, mutate] of bad) {
      const r = report() as Record<string, unknown>;
      mutate(r);
      assert.throws(
        () => validateReport(r),
        (e: unknown) => e instanceof InstarError && e.code === "PROTOCOL_ERROR",
        what,
      );
    }
  });
});

describe("a generation's health and metrics through its life", () => {
  test("healthz is 503 starting, 200 ready, 503 draining; requests are counted", async () => {
    const up = await upgrader();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const server = await up.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async (req: Request) => {
        const path = new URL(req.url).pathname;
        if (path === "/held") await held;
        if (path === "/held" || path === "/healthz") return healthResponse(up);
        if (path === "/metrics") return metricsResponse(up);
        return new Response("hi");
      },
    });
    const port = (server.addr as { port: number }).port;
    assert.equal(healthResponse(up).status, 503);
    assert.equal(await healthResponse(up).text(), "starting\n");
    await up.ready();
    assert.match(await exchange(port, httpGet("/healthz")), /^HTTP\/1\.1 200[^]*\r\n\r\nready\n$/);
    for (let i = 0; i < 4; i++) await exchange(port, httpGet("/"));
    const m: Metrics = await up.metrics();
    assert.equal(m.state, "ready");
    assert.equal(m.ready, true);
    assert.equal(m.generation, 1);
    assert.equal(m.endpoints.length, 1);
    assert.equal(m.endpoints[0].kind, "serve");
    assert.equal(m.endpoints[0].accepted, 5, "the /healthz and 4 others");
    assert.deepEqual(m.upgrades, { succeeded: 0, failed: {}, refused: {}, rolledBack: 0 });
    assert.equal(m.lastUpgrade, null);
    const metricsAnswer = await exchange(port, httpGet("/metrics"));
    assert.match(metricsAnswer, /content-type: text\/plain; version=0\.0\.4/i);
    assert.match(metricsAnswer, /instar_requests_total\{[^}]*\} 6\n/);

    // A request in flight when the drain starts is answered by a draining generation.
    const late = exchange(port, httpGet("/held"));
    await sleep(200);
    up.stop();
    assert.equal(up.state, "draining");
    assert.equal(healthResponse(up).status, 503);
    release();
    assert.match(await late, /^HTTP\/1\.1 503[^]*\r\n\r\ndraining\n$/);
    await up.drained;
    assert.equal((await up.metrics()).state, "stopped");
  });

  test("listen() counts the connections it accepts and its open ones; a datagram socket is left out", async () => {
    const up = await upgrader();
    const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
    const dgram = await up.listenDatagram({ hostname: "127.0.0.1", port: 0 });
    await up.ready();
    const port = (listener.addr as { port: number }).port;
    const clients = await Promise.all([1, 2, 3].map(() =>
      new Promise<net.Socket>((r) => {
        const c = net.connect(port, "127.0.0.1", () => r(c));
      })
    ));
    const accepted = [];
    for (let i = 0; i < 3; i++) accepted.push(await listener.accept());
    accepted[0].close(); // the listener counts a connection open until this side closes it
    for (let i = 0; i < 100 && listener.connections > 2; i++) await sleep(10);
    const m = await up.metrics();
    assert.equal(m.endpoints.length, 1, JSON.stringify(m.endpoints));
    assert.equal(m.endpoints[0].kind, "listen");
    assert.equal(m.endpoints[0].accepted, 3);
    assert.equal(m.endpoints[0].connections[0].open, 2);
    for (const c of clients) c.destroy();
    for (const c of accepted.slice(1)) c.close();
    dgram.close();
    up.stop();
    await up.drained;
  });

  test("a refused upgrade is counted by reason and reported, and keeps the last report", async () => {
    const up = await upgrader();
    const reports: unknown[] = [];
    up.on("upgrade-report", (r) => reports.push(r));
    await assert.rejects(up.upgrade(), /before ready/);
    const m = await up.metrics();
    assert.deepEqual(m.upgrades.refused, { "not-ready": 1 });
    assert.equal(m.lastUpgrade, null);
    assert.equal(reports.length, 1);
    assert.equal((reports[0] as { outcome: string }).outcome, "refused");
    up.stop();
    await up.drained;
  });
});

describe("JSON lifecycle logs", () => {
  test("one JSON object per line per event, with time, pid, generation, event and fields", async () => {
    const up = await upgrader();
    const lines: string[] = [];
    logLifecycle(up, { name: "t", format: "json", write: (l) => lines.push(l) });
    await up.listen({ hostname: "127.0.0.1", port: 0 });
    await up.upgrade().catch(() => {}); // refused: not ready yet
    await up.ready();
    up.stop();
    await up.drained;
    const entries = lines.map((l) => JSON.parse(l));
    assert.deepEqual(
      entries.map((e) => e.event),
      [
        "upgrade-refused",
        "upgrade-report",
        "state",
        "state",
        "draining",
        "state",
        "drained",
      ],
    );
    for (const e of entries) {
      assert.equal(e.pid, up.pid);
      assert.equal(e.generation, 1);
      assert.equal(e.name, "t");
      assert.ok(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(e.time), e.time);
    }
    assert.equal(entries[0].fields.error.reason, "not-ready", "an error keeps its fields");
    assert.equal(entries[0].level, "warn");
    assert.match(entries[0].fields.error.message, /before ready/);
    assert.equal(entries[2].fields.state, "ready");
    assert.equal(entries[2].fields.addrs.length, 1);
    assert.throws(
      () => logLifecycle(up, { format: "yaml" as "json" }),
      (e: unknown) => e instanceof InstarError && e.code === "INVALID_ARGUMENT",
    );
  });
});

describe("the control socket's observability requests are hostile input", () => {
  test("a malformed trigger is refused; a report from a process that is not the parent is not believed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "instar-report-"));
    const ctl = join(dir, "ctl");
    const up = await upgrader({ controlSocket: ctl });
    const warnings: string[] = [];
    up.on("warning", ({ message }) => warnings.push(message));
    await up.listen({ hostname: "127.0.0.1", port: 0 });
    await up.ready();
    try {
      const ask = async (msg: Record<string, unknown>) => {
        const ch = connectControl(ctl);
        try {
          ch.send({ v: PROTOCOL_VERSION, ...msg } as never);
          for (let i = 0; i < 200; i++) {
            const [got] = ch.receive();
            if (got) return messageOf(got.msg);
            if (ch.eof) return null;
            await sleep(10);
          }
          return null;
        } finally {
          ch.close();
        }
      };
      const refused = await ask({ type: "upgrade", trigger: "Not A Word; rm -rf" });
      assert.equal(refused?.type, "failed", JSON.stringify(refused));
      assert.match(JSON.stringify(refused), /trigger/);
      assert.equal(up.state, "ready", "nothing was started");
      // This test process is not the generation that started `up` (it has none).
      assert.equal(await ask({ type: "report", report: report(), counters: counters() }), null);
      for (let i = 0; i < 100 && !warnings.length; i++) await sleep(10);
      assert.match(warnings.join("\n"), /refused an upgrade report: process \d+ did not start/);
      const m = await up.metrics();
      assert.equal(m.upgrades.succeeded, 0, "its counters were not taken");
      assert.equal(m.lastUpgrade, null);
    } finally {
      up.stop();
      await up.drained;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the Prometheus text", () => {
  test(
    "label values with quotes, backslashes and newlines read back unchanged by prometheus_client",
    skipIf(!existsSync(PYTHON) && `${PYTHON} is missing (Debian package python3)`, "prometheus"),
    async () => {
      const key = 'unix:/run/a "b"\\c\nd.sock';
      const m: Metrics = {
        pid: 7,
        generation: 3,
        state: "draining",
        ready: false,
        endpoints: [{
          key,
          addr: "/run/x",
          kind: "listen",
          accepted: 9,
          connections: [{ pid: 7, generation: 3, open: 2 }, { pid: 6, generation: 2, open: null }],
        }],
        upgrades: { succeeded: 2, failed: { "ready-timeout": 1 }, refused: {}, rolledBack: 1 },
        lastUpgrade: report() as Metrics["lastUpgrade"],
      };
      const dir = mkdtempSync(join(tmpdir(), "instar-prom-"));
      const file = join(dir, "m.txt");
      writeFileSync(file, prometheusText(m));
      const script = "import sys, json\nfrom prometheus_client.parser import " +
        "text_string_to_metric_families as p\n" +
        "print(json.dumps([[s.name, s.labels, s.value] for f in p(open(sys.argv[1]).read()) " +
        "for s in f.samples]))";
      const r = await runCommand([PYTHON, "-c", script, file], { timeoutMs: 30_000 });
      rmSync(dir, { recursive: true, force: true });
      assert.equal(r.code, 0, showResult(r));
      const samples: [string, Record<string, string>, number][] = JSON.parse(r.stdout);
      const find = (name: string, l: Record<string, string> = {}) =>
        samples.filter(([n, labels]) =>
          n === name && Object.entries(l).every(([k, v]) => labels[k] === v)
        ).map(([, , v]) => v);
      assert.deepEqual(find("instar_accepted_connections_total", { endpoint: key }), [9]);
      assert.deepEqual(find("instar_open_connections", { endpoint: key }), [2], "unknown left out");
      assert.deepEqual(find("instar_state", { state: "draining" }), [1]);
      assert.deepEqual(find("instar_ready"), [0]);
      assert.deepEqual(find("instar_upgrades_total", { reason: "ready-timeout" }), [1]);
      assert.deepEqual(find("instar_upgrades_total", { outcome: "rolled-back" }), [1]);
      assert.deepEqual(find("instar_last_upgrade_connections", { at: "forced" }), [1]);
      assert.deepEqual(find("instar_last_upgrade_drain_seconds"), [0.26]);
    },
  );
});

describe("counting open connections through sock_diag", () => {
  test("the kernel's established sockets by port match /proc/net/tcp{,6}, IPv4 and IPv6", async () => {
    const servers: net.Server[] = [];
    const clients: net.Socket[] = [];
    try {
      const ports: number[] = [];
      for (const [host, n] of [["127.0.0.1", 5], ["::1", 3]] as const) {
        const server = net.createServer(() => {});
        servers.push(server);
        await new Promise<void>((r) => server.listen(0, host, r));
        const port = (server.address() as net.AddressInfo).port;
        ports.push(port);
        for (let i = 0; i < n; i++) clients.push(net.connect(port, host));
      }
      await Promise.all(clients.map((c) => new Promise((r) => c.once("connect", r))));
      await sleep(100);
      const by = await establishedByPort([...ports, 1]);
      assert.ok(by, "sock_diag answers");
      const mine = await socketInodesAsync("self");
      const counts = ports.map((p) => [...by.get(p)!].filter((i) => mine.has(i)).length);
      assert.deepEqual(counts, [5, 3], "the server side of each connection");
      for (const p of ports) {
        assert.deepEqual([...by.get(p)!].sort(), [...tcpConnectionInodes(p)].sort(), `port ${p}`);
      }
      assert.equal(by.get(1)!.size, 0, "nothing on a port nobody uses");
    } finally {
      for (const c of clients) c.destroy();
      for (const s of servers) s.close();
    }
  });
});

describe("a rollback (the promotion window's rolled-back event)", () => {
  test("is counted and ends the upgrade's report with its reason and time to ready", async () => {
    const events = new Emitter();
    const observer = new Observer({
      generation: 1,
      parentPid: null,
      promotionWindow: 0,
      carried: null,
      state: () => "ready",
      endpoints: () => [],
      events,
      onDrained: () => {},
      controlPath: null,
    });
    const reports: UpgradeReport[] = [];
    events.on("upgrade-report", (r) => reports.push(structuredClone(r)));
    observer.trigger("watch");
    events.emit("upgrade-started", { generation: 2 });
    events.emit("upgrade-spawned", { pid: 4242 });
    events.emit("promotion-window", { pid: 4242, generation: 2, ms: 3000 });
    events.emit("rolled-back", { pid: 4242, generation: 2, reason: "unhealthy: db down" });
    await sleep(0);
    const m = await observer.metrics();
    assert.equal(m.upgrades.succeeded, 0, "one outcome per upgrade");
    assert.equal(m.upgrades.rolledBack, 1);
    assert.equal(reports.length, 1);
    assert.equal(reports[0].outcome, "rolled-back");
    assert.equal(reports[0].reason, "unhealthy: db down");
    assert.equal(reports[0].trigger, "watch");
    assert.deepEqual(reports[0].new, { pid: 4242, generation: 2 });
    assert.ok(reports[0].readyMs! >= reports[0].spawnMs!);
    assert.equal(reports[0].drain, null, "the old generation never drained");
    assert.equal(m.lastUpgrade?.outcome, "rolled-back");
    assert.equal(observer.carry().upgrades.rolledBack, 1, "passed on to the next generation");
  });

  test("a new generation in a promotion window counts its upgrade once promoted, not at ready", () => {
    const observe = (promotionWindow: number) => {
      const events = new Emitter();
      const carried = zeroCounters();
      carried.upgrades.succeeded = 2;
      const observer = new Observer({
        generation: 3,
        parentPid: process.ppid,
        promotionWindow,
        carried,
        state: () => "ready",
        endpoints: () => [],
        events,
        onDrained: () => {},
        controlPath: null,
      });
      events.emit("state", { state: "ready" });
      return observer;
    };
    assert.equal(observe(0).carry().upgrades.succeeded, 3, "without a window: ready is success");
    const windowed = observe(3000);
    assert.equal(windowed.carry().upgrades.succeeded, 2, "within the window: not yet");
    windowed.promoted();
    assert.equal(windowed.carry().upgrades.succeeded, 3, "the window passed");
  });
});
