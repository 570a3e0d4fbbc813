// TLS with the HTTP example (--cert/--key) in this runtime: 20 upgrades under
// HTTPS load (HTTP/1.1 from a client that never re-sends, and h2 through
// h2load where the runtime offers it: Deno) fail no handshake and no request;
// a new certificate on disk plus an upgrade is served by the new generation;
// a broken pair stops the new generation before ready with the reason, and
// the old one serves on with its certificate. Certificates are made here with
// openssl.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import tls from "node:tls";
import { InstarError, readTlsFiles } from "../mod.ts";
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
  stopped,
} from "./support/helpers.ts";
import { startGenerations, upgradeAndDrain, upgradeByHup } from "./support/generations.ts";

const left = cleanupAfterTests();
const EXAMPLE = join(ROOT, "examples", "http_server.ts");
const NO_OPENSSL = !onPath("openssl") && "openssl is not installed (Debian package openssl)";

/**
 * h2load in rounds of 3 s until `stop()` says so: each round runs 12 connections of 8 streams
 * paced at 40 requests a second each (as the tests' HTTP/1.1 loads: TEST_PAUSE_MS), beside 1
 * unpaced one that keeps 8 streams in flight, so that every GOAWAY and drain meets streams
 * under way (drain_test runs an unpaced h2load too). Rounds rather than one long run, because
 * h2load stopped by a signal prints nothing, and one run long enough for the slowest upgrades
 * went on long after the usual ones had finished. Resolves with every run's output.
 */
async function h2loadUntil(url: string, stop: () => boolean): Promise<string[]> {
  const h2load = async (args: string[]) => {
    const r = await runCommand(["h2load", ...args, "-D", "3", url], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, showResult(r, 2000));
    return r.stdout + r.stderr;
  };
  const outs: string[] = [];
  do {
    outs.push(
      ...await Promise.all([
        h2load(["-c", "12", "-m", "8", "--rps", "40"]),
        h2load(["-c", "1", "-m", "8"]),
      ]),
    );
  } while (!stop());
  return outs;
}

/** The requests one h2load run succeeded; asserts it spoke h2 and failed, errored or timed out none. */
function h2Succeeded(out: string): number {
  assert.match(out, /Application protocol: h2/, out);
  assert.doesNotMatch(out, /could not connect|No protocol negotiated/, out);
  const m =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/
      .exec(out);
  assert.ok(m, out);
  const [ok, failed, errored, timeout] = [m[4], m[5], m[6], m[7]].map(Number);
  assert.equal(failed + errored + timeout, 0, out);
  // A connection refused as a run starts is not counted as a failed request by h2load.
  assert.ok(ok > 50, `only ${ok} requests in a run: ${out}`);
  return ok;
}

/** A self-signed certificate for 127.0.0.1 and its key, as files `<name>.crt` / `<name>.key` in `dir`. */
function makeCert(dir: string, name: string, keyType: "rsa" | "ec" = "rsa") {
  const cert = join(dir, `${name}.crt`), key = join(dir, `${name}.key`);
  const newkey = keyType === "rsa"
    ? ["-newkey", "rsa:2048"]
    : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
  const r = spawnSync("openssl", [
    "req",
    "-x509",
    ...newkey,
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-addext",
    "subjectAltName=IP:127.0.0.1",
  ]);
  assert.equal(r.status, 0, String(r.stderr));
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** The SHA-256 fingerprint of the certificate the server on `port` presents. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.destroy();
      resolve(fp);
    });
    s.once("error", reject);
    setTimeout(() => reject(new Error("no TLS handshake within 10 s")), 10_000).unref?.();
  });
}

/** Starts the example on the live pair `dir/live.crt` + `dir/live.key` (copied from `pair`). */
async function startTls(dir: string, pair: { cert: string; key: string }) {
  const cert = join(dir, "live.crt"), key = join(dir, "live.key");
  copyFileSync(pair.cert, cert);
  copyFileSync(pair.key, key);
  const g = await startGenerations(left, EXAMPLE, ["--cert", cert, "--key", key]);
  return { g, cert, key };
}

describe(`TLS (${RUNTIME})`, () => {
  test(
    "readTlsFiles: a good pair, and typed errors naming the file",
    skipIf(NO_OPENSSL, "readTlsFiles"),
    () => {
      const dir = left.tempDir("instar-tls-");
      const a = makeCert(dir, "a"), b = makeCert(dir, "b", "ec");
      const ok = readTlsFiles({ cert: a.cert, key: a.key });
      assert.equal(ok.fingerprint256, a.fingerprint);
      assert.match(ok.cert, /BEGIN CERTIFICATE/);
      assert.ok(ok.notAfter.getTime() > Date.now());
      const codeOf = (f: () => unknown) => {
        try {
          f();
        } catch (err) {
          assert.ok(err instanceof InstarError);
          return [err.code, err.message];
        }
        return ["no error", ""];
      };
      const missing = join(dir, "missing.key");
      const cases: [() => unknown, string, string][] = [
        [() => readTlsFiles({ cert: a.cert, key: missing }), "TLS_UNREADABLE", missing],
        [() => readTlsFiles({ cert: a.cert, key: b.key }), "TLS_KEY_MISMATCH", b.key],
        [() => readTlsFiles({ cert: a.key, key: a.key }), "TLS_BAD_CERT", a.key],
        [() => readTlsFiles({ cert: a.cert, key: a.cert }), "TLS_BAD_KEY", a.cert],
        [
          () =>
            readTlsFiles({ cert: a.cert, key: a.key, now: new Date(Date.now() + 10 * 86400_000) }),
          "TLS_EXPIRED",
          a.cert,
        ],
        [() => readTlsFiles({ cert: "", key: a.key }), "INVALID_ARGUMENT", "certificate"],
      ];
      for (const [f, code, named] of cases) {
        const [got, message] = codeOf(f);
        assert.equal(got, code, message);
        assert.ok(message.includes(named), `${code}: ${message} names ${named}`);
      }
      assert.equal(
        readTlsFiles({ cert: a.cert, key: a.key, allowExpired: true, now: new Date(0) })
          .fingerprint256,
        a.fingerprint,
      );
    },
  );

  test(
    "20 upgrades under HTTPS load (HTTP/1.1 keep-alive and short connections): 0 failed",
    skipIf(NO_OPENSSL, "HTTPS upgrades"),
    async () => {
      const dir = left.tempDir("instar-tls-");
      const { g } = await startTls(dir, makeCert(dir, "a"));
      const ac = new AbortController();
      const pids = new Set<string>();
      const common = {
        port: g.port,
        tls: true,
        durationMs: 120_000,
        pauseMs: TEST_PAUSE_MS,
        signal: ac.signal,
        onResponse: (body: string) => pids.add(/pid (\d+)/.exec(body)?.[1] ?? "?"),
      };
      const keepAlive = runLoad({ ...common, connections: 16 });
      const short = runLoad({ ...common, connections: 4, keepAlive: false });
      let current = g.server.pid;
      try {
        for (let i = 0; i < 20; i++) {
          await sleep(100);
          current = await upgradeByHup(g, current);
        }
        await sleep(300);
      } finally {
        ac.abort();
      }
      for (const [name, r] of [["keep-alive", await keepAlive], ["short", await short]] as const) {
        console.log(`HTTPS ${name}: ${r.ok} answered, ${r.failed} failed`);
        assert.equal(r.failed, 0, `${name}: ${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
        assert.ok(r.ok > 100, `${name}: only ${r.ok} responses`);
      }
      assert.ok(pids.size >= 10, `responses came from ${pids.size} generations`);
      process.kill(current, "SIGTERM");
    },
  );

  const h2skip = NO_OPENSSL ||
    (RUNTIME === "bun" &&
      "Bun.serve 1.4 negotiates no ALPN over TLS (measured with openssl s_client -alpn h2): no h2") ||
    (!onPath("h2load") && "h2load is not installed (Debian package nghttp2-client)");
  test(
    "20 upgrades under h2load (h2 over TLS): 0 failed or errored streams",
    skipIf(h2skip, "h2 upgrades"),
    async () => {
      const dir = left.tempDir("instar-tls-");
      const { g } = await startTls(dir, makeCert(dir, "a"));
      const url = `https://127.0.0.1:${g.port}/`;
      let current = g.server.pid;
      let stop = false;
      const upgrades = (async () => {
        await sleep(500);
        const t0 = Date.now();
        for (let i = 0; i < 20 && !stop; i++) {
          current = await upgradeByHup(g, current);
          await sleep(100);
        }
        return Date.now() - t0;
      })();
      // Either side ending (or failing) ends the other: no SIGHUP or load outlives the test.
      const settled = await Promise.allSettled([
        upgrades.finally(() => (stop = true)),
        h2loadUntil(url, () => stop).finally(() => (stop = true)),
      ]);
      const [upgradesMs, runs] = settled.map((s) => {
        if (s.status === "rejected") throw s.reason;
        return s.value;
      }) as [number, string[]];
      const succeeded = runs.map(h2Succeeded).reduce((a, b) => a + b, 0);
      console.log(
        `h2load across 20 upgrades in ${upgradesMs} ms: ${runs.length} runs, ` +
          `${succeeded} succeeded, 0 failed`,
      );
      assert.ok(succeeded > 1000, `only ${succeeded} requests succeeded`);
      process.kill(current, "SIGTERM");
    },
  );

  test(
    "rotation: a new pair plus an upgrade is served; a broken pair fails before ready and the old certificate serves on",
    skipIf(NO_OPENSSL, "rotation"),
    async () => {
      const dir = left.tempDir("instar-tls-");
      const a = makeCert(dir, "a"), b = makeCert(dir, "b", "ec"), c = makeCert(dir, "c");
      const { g, cert, key } = await startTls(dir, a);
      assert.equal(await servedFingerprint(g.port), a.fingerprint);
      // Load through everything below: no failure, whichever certificate.
      const seen = new Set<string>();
      const ac = new AbortController();
      const load = runLoad({
        port: g.port,
        tls: true,
        connections: 8,
        keepAlive: false,
        durationMs: 120_000,
        pauseMs: TEST_PAUSE_MS,
        signal: ac.signal,
        onCertificate: (fp) => seen.add(fp),
      });
      let current = g.server.pid;
      try {
        // Rotation: the new pair on disk, then an upgrade.
        copyFileSync(b.cert, cert);
        copyFileSync(b.key, key);
        // Once the old generation has ended, a new connection reaches the new one. (Its
        // `draining` line comes a moment before it stops accepting, and a connection its
        // runtime took just before that is answered, with the old certificate: seen once.)
        let old = current;
        current = await upgradeAndDrain(g, current);
        await stopped(old, 30_000);
        assert.equal(await servedFingerprint(g.port), b.fingerprint);

        // Broken pairs: each upgrade fails before ready, naming the file; b serves on.
        const broken: [string, () => void, RegExp][] = [
          ["mismatched key", () => copyFileSync(c.key, key), /TLS_KEY_MISMATCH|does not belong/],
          ["unreadable key", () => renameSync(key, key + ".gone"), /TLS_UNREADABLE|cannot read/],
          ["not a certificate", () => {
            renameSync(key + ".gone", key);
            copyFileSync(b.key, key);
            writeFileSync(cert, "garbage\n");
          }, /TLS_BAD_CERT|not a PEM certificate/],
        ];
        for (const [what, breakIt, reason] of broken) {
          breakIt();
          const from = g.server.lines.length;
          process.kill(current, "SIGHUP");
          await g.server.waitFor(/upgrade-failed/, 60_000, from);
          const said = g.server.lines.slice(from).join("\n");
          assert.match(said, reason, `${what}: the reason is in the log`);
          assert.ok(
            said.includes(what === "not a certificate" ? cert : key),
            `${what}: names the file\n${said}`,
          );
          assert.equal(
            readFileSync(g.pidFile, "utf8").trim(),
            String(current),
            `${what}: still serving`,
          );
          assert.equal(
            await servedFingerprint(g.port),
            b.fingerprint,
            `${what}: the old certificate`,
          );
        }
        // Repaired, the next upgrade takes c (once b's generation drained, as above).
        copyFileSync(c.cert, cert);
        copyFileSync(c.key, key);
        old = current;
        current = await upgradeAndDrain(g, current);
        await stopped(old, 30_000);
        assert.equal(await servedFingerprint(g.port), c.fingerprint);
        await sleep(300);
      } finally {
        ac.abort();
      }
      const r = await load;
      assert.equal(r.failed, 0, `${JSON.stringify(r.failures)} ${r.samples.join("; ")}`);
      assert.ok(r.ok > 50, `only ${r.ok} responses`);
      assert.ok(seen.has(a.fingerprint) && seen.has(b.fingerprint) && seen.has(c.fingerprint));
      assert.equal(alive(current), true);
      process.kill(current, "SIGTERM");
      await stopped(current); // drained and gone before the runner ends (else a leftover)
    },
  );
});
