// Metrics, /healthz and upgrade reports against a real examples/http_server.ts
// of this runtime: the Prometheus text is read with a real parser (Debian's
// python3-prometheus-client), and its counters must match what the test did
// across 3 upgrades and 1 failed deploy; the JSON lifecycle log parses line
// by line and its reports' timings are consistent; /healthz answers 200 while
// ready and 503 from a generation held into its drain.
import { describe } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  alive,
  cleanupAfterTests,
  exchange,
  httpGet,
  ROOT,
  runCommand,
  RUNTIME,
  runtimeCmd,
  showResult,
  sideBySide,
  skipIf,
  startServer,
  stopped,
} from "./support/helpers.ts";
import { portOf, readyGeneration, serverStatus } from "./support/status.ts";
import { noParser, parsePrometheus, value } from "./support/prometheus.ts";
import type { UpgradeReport } from "../mod.ts";

const CLI = join(ROOT, "src", "cli", "main.ts");
const HTTP = join(ROOT, "examples", "http_server.ts");
const DRAIN_TIMEOUT = 5_000;
const { servers, tempDir } = cleanupAfterTests();

/** A GET on a fresh connection (Connection: close): status, headers, body. */
async function get(port: number, path: string) {
  const raw = await exchange(port, httpGet(path), { timeoutMs: 30_000 });
  const head = raw.slice(0, raw.indexOf("\r\n\r\n"));
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
  const type = /^content-type:\s*(.*)$/im.exec(head)?.[1]?.trim() ?? "";
  return { status, type, body: raw.slice(raw.indexOf("\r\n\r\n") + 4) };
}

function instar(args: string[]) {
  return runCommand(runtimeCmd(RUNTIME, CLI, args), { timeoutMs: 90_000 });
}

// Each test mostly waits (CLI upgrades, a held request, a drain timeout, a promotion window) on a
// server of its own, and none puts load on it: their bodies run side by side (sideBySide()).
describe(`metrics across generations (${RUNTIME})`, () => {
  const testSideBySide = sideBySide();
  testSideBySide(
    "after 3 upgrades and 1 failed deploy /metrics parses and counts succeeded 3, failed 1, every request",
    skipIf(noParser(), "prometheus"),
    async () => {
      const dir = tempDir("instar-metrics-");
      const ctl = join(dir, "ctl");
      const fail = join(dir, "broken-deploy");
      const srv = startServer(runtimeCmd(RUNTIME, HTTP, [
        "--port=0",
        `--control=${ctl}`,
        `--fail-if-exists=${fail}`,
        "--log-format=json",
        `--drain-timeout=${DRAIN_TIMEOUT}`,
      ]));
      servers.push(srv);
      const port = portOf(await readyGeneration(ctl, 1, { log: srv.lines }));
      let sent = 0;
      const hit = async (path: string) => {
        sent++;
        const r = await get(port, path);
        assert.equal(r.status, 200, `${path}: ${JSON.stringify(r)}`);
        return r;
      };
      for (let i = 0; i < 5; i++) await hit("/");

      const reports: UpgradeReport[] = [];
      const upgrade = async (extra: string[] = []) => {
        const r = await instar(["upgrade", `--control=${ctl}`, "--json", "--wait-drain", ...extra]);
        assert.equal(r.code, 0, showResult(r));
        const out = JSON.parse(r.stdout);
        assert.equal(typeof out.pid, "number", r.stdout);
        reports.push(out.report);
        return out;
      };
      await upgrade();
      await hit("/");
      writeFileSync(fail, "");
      const broken = await instar(["upgrade", `--control=${ctl}`, "--json"]);
      assert.equal(broken.code, 1, showResult(broken));
      const failed = JSON.parse(broken.stdout);
      assert.equal(failed.pid, null);
      assert.match(failed.error.message, /exited/, broken.stdout);
      rmSync(fail);
      await hit("/");
      await upgrade();
      await hit("/");
      const last = await upgrade(["--trigger=watch"]);

      // --wait-drain printed the reports with their drain part: the previous generation is gone.
      await stopped(last.report.old.pid, 30_000);
      for (let i = 0; i < 3; i++) await hit("/");
      const m = await hit("/metrics");
      assert.match(m.type, /^text\/plain; version=0\.0\.4/);
      const samples = await parsePrometheus(m.body);
      const upgrades = (labels: Record<string, string>) =>
        value(samples, "instar_upgrades_total", labels);
      assert.equal(upgrades({ outcome: "succeeded" }), 3);
      assert.equal(upgrades({ outcome: "failed", reason: "exited" }), 1);
      assert.equal(upgrades({ outcome: "rolled-back" }), 0);
      assert.equal(value(samples, "instar_generation"), 4);
      assert.equal(value(samples, "instar_state", { state: "ready" }), 1);
      assert.equal(value(samples, "instar_state", { state: "draining" }), 0);
      assert.equal(value(samples, "instar_ready"), 1);
      // Every request the test sent, whichever generation answered it, this /metrics included.
      assert.equal(value(samples, "instar_requests_total"), sent);
      assert.equal(
        value(samples, "instar_last_upgrade_ready_seconds", { trigger: "watch" }) > 0,
        true,
      );
      const own = samples.filter((s) => s.name === "instar_open_connections");
      assert.ok(own.some((s) => s.labels.generation === "4" && s.value >= 1), JSON.stringify(own));

      // The reports: one per upgrade, consistent timings, the drain within its timeout.
      assert.deepEqual(reports.map((r) => r.trigger), ["cli", "cli", "watch"]);
      assert.deepEqual(reports.map((r) => r.new.generation), [2, 3, 4]);
      for (const r of reports) {
        assert.equal(r.outcome, "succeeded", JSON.stringify(r));
        assert.ok(r.spawnMs! >= 0 && r.readyMs! >= r.spawnMs!, JSON.stringify(r));
        assert.ok(r.drain && r.drain.ms <= DRAIN_TIMEOUT + 1_000, JSON.stringify(r));
        assert.equal(r.drain.forced, 0);
      }
      // instar status shows the last one, as sent by the generation that drained.
      const status = await serverStatus(ctl);
      assert.equal(status?.lastUpgrade?.trigger, "watch", JSON.stringify(status));
      assert.equal(status?.lastUpgrade?.new.pid, status?.pid);
      assert.ok(status?.lastUpgrade?.drain, JSON.stringify(status));

      // The JSON log (stderr): every line of every generation parses. Not log lines: the broken
      // deploy's own words, and Deno.serve's "Listening on" banner on stdout (lines mixes both).
      const notLog = /exists; exiting before ready|^Listening on /;
      const logLines = srv.lines.filter((l) => l.trim() && !notLog.test(l));
      const entries = logLines.map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          assert.fail(`a log line is not JSON: ${l}`);
        }
      });
      for (const e of entries) {
        assert.ok(!isNaN(Date.parse(e.time)) && e.time.endsWith("Z"), JSON.stringify(e));
        assert.equal(typeof e.pid, "number");
        assert.equal(typeof e.generation, "number");
        assert.equal(typeof e.event, "string");
        assert.equal(typeof e.fields, "object");
      }
      const logged = entries.filter((e) => e.event === "upgrade-report").map((e) => e.fields);
      assert.deepEqual(logged.map((r) => r.outcome), [
        "succeeded",
        "failed",
        "succeeded",
        "succeeded",
      ]);
      assert.equal(logged[1].reason, "exited");
      assert.equal(logged[1].drain, null);
      for (const r of logged.filter((x) => x.outcome === "succeeded")) {
        assert.ok(r.readyMs >= r.spawnMs && r.drain.ms <= DRAIN_TIMEOUT + 1_000, JSON.stringify(r));
        assert.ok(Date.parse(r.startedAt) <= Date.now());
      }
      // Each succeeded report is logged (by the old generation) after the new one said ready.
      for (const r of reports) {
        const ready = entries.find((e) =>
          e.pid === r.new.pid && e.event === "state" && e.fields.state === "ready"
        );
        const report = entries.find((e) =>
          e.pid === r.old.pid && e.event === "upgrade-report" && e.fields.new.pid === r.new.pid
        );
        assert.ok(ready && report, `ready and report of ${r.new.pid} logged`);
        assert.ok(Date.parse(ready.time) <= Date.parse(report.time), "report after ready");
      }
      srv.killAll();
    },
  );

  testSideBySide(
    "/healthz answers 200 while ready and 503 from a generation held into its drain",
    async () => {
      const dir = tempDir("instar-healthz-");
      const ctl = join(dir, "ctl");
      const srv = startServer(runtimeCmd(RUNTIME, HTTP, [
        "--port=0",
        `--control=${ctl}`,
        // The held request (below) must end within the drain.
        "--drain-timeout=30000",
      ]));
      servers.push(srv);
      const first = await readyGeneration(ctl, 1, { log: srv.lines });
      const port = portOf(first);
      const ready = await get(port, "/healthz");
      assert.equal(ready.status, 200);
      assert.equal(ready.body, "ready\n");
      // Asked of generation 1 now, answered 10 s later: by then it drains (an upgrade on a loaded
      // 2-core machine can take seconds; the answer must come after it).
      const sent = Date.now();
      const held = get(port, "/healthz?ms=10000");
      await new Promise((r) => setTimeout(r, 300));
      const up = await instar(["upgrade", `--control=${ctl}`]);
      assert.equal(up.code, 0, showResult(up));
      if (Date.now() - sent > 9_000) {
        // Too slow to say anything about the held answer: it may have been read before the drain.
        srv.killAll();
        return assert.fail(`the upgrade took ${Date.now() - sent} ms: the machine is too loaded`);
      }
      const late = await held;
      assert.equal(late.status, 503, JSON.stringify(late));
      assert.equal(late.body, "draining\n");
      // The new generation is ready.
      const now = await get(port, "/healthz");
      assert.equal(now.status, 200);
      await stopped(first.pid, 30_000);
      assert.equal(alive(first.pid), false);
      srv.killAll();
    },
  );

  testSideBySide(
    "the report counts the connections at the handover: finished by themselves vs cut at the drain timeout",
    async () => {
      const dir = tempDir("instar-drain-report-");
      const ctl = join(dir, "ctl");
      const drainTimeout = 3_000;
      const srv = startServer(runtimeCmd(RUNTIME, HTTP, [
        "--port=0",
        `--control=${ctl}`,
        `--drain-timeout=${drainTimeout}`,
      ]));
      servers.push(srv);
      const port = portOf(await readyGeneration(ctl, 1, { log: srv.lines }));
      // 2 requests that end by themselves within the drain timeout, 3 that outlive it.
      const sentAt = Date.now();
      const finishing = [1, 2].map(() => get(port, "/slow?ms=2000"));
      const cut = [1, 2, 3].map(() =>
        get(port, "/slow?ms=60000").then(
          (x) => (x.status === 200 ? "answered" : "cut"),
          () => "cut",
        )
      );
      await new Promise((r) => setTimeout(r, 300));
      // Without --wait-drain: the report as it is when the new generation is ready, no drain part yet.
      const quick = await instar(["upgrade", `--control=${ctl}`, "--json"]);
      assert.equal(quick.code, 0, showResult(quick));
      const early = JSON.parse(quick.stdout) as { pid: number; report: UpgradeReport };
      assert.equal(early.report.drain, null, quick.stdout);
      assert.equal(early.report.new.pid, early.pid);
      // Meanwhile the new generation's metrics count the draining one's connections (the 3 held at least).
      const m = await get(port, "/metrics");
      const open = (generation: number) =>
        Number(
          new RegExp(`instar_open_connections\\{[^}]*generation="${generation}"[^}]*\\} (\\d+)`)
            .exec(m.body)?.[1] ?? NaN,
        );
      assert.ok(open(1) >= 3, m.body);
      assert.ok(open(2) >= 1, m.body);
      assert.match(m.body, /instar_state\{state="ready"\} 1/);
      // Once generation 1 drained, the report with its drain part is in generation 2's status.
      await stopped(early.report.old.pid, 30_000);
      let report: UpgradeReport | null | undefined;
      for (let i = 0; i < 50 && !report?.drain; i++) {
        report = (await serverStatus(ctl))?.lastUpgrade;
        if (!report?.drain) await new Promise((r) => setTimeout(r, 100));
      }
      const r = { stdout: JSON.stringify(report) };
      assert.ok(report?.drain, r.stdout);
      assert.equal(report.new.pid, early.pid);
      const d = report.drain;
      assert.equal(d.forced, 3, r.stdout);
      assert.deepEqual(await Promise.all(cut), ["cut", "cut", "cut"]);
      for (const f of await Promise.all(finishing)) assert.equal(f.status, 200);
      assert.ok(d.atHandover !== null && d.atHandover >= 3 && d.atHandover <= 5, r.stdout);
      assert.equal(d.drained, d.atHandover! - d.forced, r.stdout);
      // The finishing ones (2 s each) were still open at the handover unless it came more than
      // 1.7 s after they were sent (the CLI's start-up counts too: seconds on a loaded machine).
      const handoverAfter = Date.parse(report.startedAt) + report.readyMs! - sentAt;
      if (handoverAfter < 1_700) assert.equal(d.drained, 2, `${r.stdout} (${handoverAfter} ms)`);
      // The drain: the 250 ms pause, the timeout, then cutting (which waits for the runtime to close).
      assert.ok(d.ms >= drainTimeout && d.ms <= drainTimeout + 4_000, r.stdout);
      srv.killAll();
    },
  );

  testSideBySide(
    "with a promotion window the new generation counts the upgrade succeeded once the window has passed",
    skipIf(noParser(), "prometheus"),
    async () => {
      const dir = tempDir("instar-window-metrics-");
      const ctl = join(dir, "ctl");
      const srv = startServer(runtimeCmd(RUNTIME, HTTP, [
        "--port=0",
        `--control=${ctl}`,
        "--promotion-window=6000",
      ]));
      servers.push(srv);
      const port = portOf(await readyGeneration(ctl, 1, { log: srv.lines }));
      const cli = instar(["upgrade", `--control=${ctl}`, "--json"]);
      const succeeded = async () => {
        const samples = await parsePrometheus((await get(port, "/metrics")).body);
        return [
          value(samples, "instar_generation"),
          value(samples, "instar_upgrades_total", { outcome: "succeeded" }),
        ];
      };
      // Generation 2 answers once it is ready (generation 1 holds back for the window); the
      // Prometheus parse (a python process) only once it does, well within the window.
      for (let i = 0; i < 300; i++) {
        if ((await get(port, "/")).body.includes("generation 2")) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      let seen = await succeeded();
      assert.deepEqual(seen, [2, 0], "in the window: generation 2 answers, nothing succeeded yet");
      const r = await cli;
      assert.equal(r.code, 0, showResult(r));
      // Generation 2 learns that the window passed when generation 1 closes their link.
      for (let i = 0; i < 200 && seen[1] !== 1; i++) {
        seen = await succeeded();
        if (seen[1] !== 1) await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(seen, [2, 1], "after the window: counted once");
      srv.killAll();
    },
  );

  testSideBySide(
    "a rollback within the promotion window is counted and reported by the generation that serves on",
    skipIf(noParser(), "prometheus"),
    async () => {
      const dir = tempDir("instar-rollback-metrics-");
      const ctl = join(dir, "ctl");
      const srv = startServer(runtimeCmd(RUNTIME, HTTP, [
        "--port=0",
        `--control=${ctl}`,
        "--promotion-window=8000",
        "--log-format=json",
      ]));
      servers.push(srv);
      const first = await readyGeneration(ctl, 1, { log: srv.lines });
      const port = portOf(first);
      const cli = instar(["upgrade", `--control=${ctl}`, "--json", "--trigger=deploy-bot"]);
      // Generation 2 answers once it is ready (generation 1 holds back for the window).
      for (let i = 0; i < 300; i++) {
        if ((await get(port, "/")).body.includes("generation 2")) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      // Within the window the upgrade has not succeeded yet: generation 2 must not count it,
      // or the counter would fall back from 1 to 0 once generation 1 serves on (a counter reset).
      const during = await parsePrometheus((await get(port, "/metrics")).body);
      assert.equal(value(during, "instar_generation"), 2, "generation 2 answers in the window");
      assert.equal(value(during, "instar_upgrades_total", { outcome: "succeeded" }), 0);
      const bad = await get(port, "/unhealthy?reason=bad%20config");
      assert.equal(bad.status, 200, JSON.stringify(bad));
      const r = await cli;
      assert.equal(r.code, 3, showResult(r));
      assert.equal(JSON.parse(r.stdout).error.reason, "ROLLED_BACK", r.stdout);
      const m = await get(port, "/metrics");
      const samples = await parsePrometheus(m.body);
      assert.equal(value(samples, "instar_generation"), 1, "generation 1 serves on");
      assert.equal(value(samples, "instar_upgrades_total", { outcome: "rolled-back" }), 1);
      assert.equal(value(samples, "instar_upgrades_total", { outcome: "succeeded" }), 0);
      // A rollback is the upgrade's one outcome: not counted as failed too.
      const failed = samples.filter((s) =>
        s.name === "instar_upgrades_total" && s.labels.outcome === "failed"
      );
      assert.deepEqual(failed, [], "no failed upgrade besides the rollback");
      const status = await serverStatus(ctl);
      assert.equal(status?.pid, first.pid);
      const last = status?.lastUpgrade;
      assert.equal(last?.outcome, "rolled-back", JSON.stringify(status));
      assert.equal(last?.reason, "bad config");
      assert.equal(last?.trigger, "deploy-bot");
      assert.ok(last?.readyMs! >= last?.spawnMs! && last?.drain === null, JSON.stringify(last));
      const logged = srv.lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
        .filter((e) => e.event === "upgrade-report" && e.pid === first.pid);
      assert.equal(logged.length, 1, srv.lines.join("\n"));
      assert.equal(logged[0].fields.outcome, "rolled-back");
      srv.killAll();
    },
  );
});
