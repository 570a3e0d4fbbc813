// Protocol fuzzing: random and mutated messages (truncated frames, wrong
// types and versions, huge lengths and numbers, random fds attached) fed to
// the control socket of a serving examples/http_server.ts, and to the hello a
// new generation reads at start-up. Every bad message must get a clear
// refusal or a close within a bound, HTTP must keep answering, no fd may be
// left behind, and a generation must never start on a bad hello.
//
// The cases come from a seeded generator; a failure names the seed, and
// INSTAR_FUZZ_SEED=<seed> replays it.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import * as sys from "../src/ffi/mod.ts";
import { C } from "../src/ffi/mod.ts";
import { type Addr, decode, encodeInet, encodeUnix } from "../src/ffi/sockaddr.ts";
import { ACCEPT_RATE, MAX_REQUEST_BYTES } from "../src/lifecycle/control.ts";
import { readHello } from "../src/lifecycle/child.ts";
import { CONTROL_FD_ENV, PROTOCOL_VERSION } from "../src/protocol/messages.ts";
import { spawn } from "../src/process/spawn.ts";
import {
  cleanupAfterTests,
  exchange,
  httpGet,
  ROOT,
  RUNTIME,
  runtimeCmd,
  sleep,
  startServer,
} from "./support/helpers.ts";
import { portOf, readyGeneration, serverStatus } from "./support/status.ts";
import { fdCount, rawRead, rawWrite, steadyFds } from "./support/raw.ts";

const left = cleanupAfterTests();
const HTTP = join(ROOT, "examples", "http_server.ts");
const SEED = Number(process.env.INSTAR_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CONTROL_CASES = 2_000;
const HELLO_CASES = 3_000;
const CHILD_CASES = 16;

/** mulberry32: a small seeded generator, so that a failing run can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)],
    chance: (p: number) => next() < p,
    bytes(n: number): Uint8Array {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
  };
}
type Rng = ReturnType<typeof rng>;

const enc = (s: string) => new TextEncoder().encode(s);

/** Values of every JSON type and the edges of numbers: what a mutation puts in a field. */
const ODD_VALUES: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  -0,
  2 ** 31,
  2 ** 32 + 3,
  2 ** 53,
  1e308,
  "",
  "1",
  "hello",
  "x".repeat(300),
  [],
  [1, 2],
  {},
  { a: { b: { c: [] } } },
];

/** A random change to a JSON value (deep): delete, retype, swap or add a field. */
function mutateValue(r: Rng, v: unknown, depth = 0): unknown {
  if (depth > 4 || r.chance(0.2)) return r.pick(ODD_VALUES);
  if (Array.isArray(v)) {
    const out = [...v];
    const k = r.int(4);
    if (k === 0 && out.length) out.splice(r.int(out.length), 1);
    else if (k === 1) out.push(r.pick(ODD_VALUES));
    else if (k === 2 && out.length) out.push(out[r.int(out.length)]); // a duplicate entry
    else if (out.length) {
      const i = r.int(out.length);
      out[i] = mutateValue(r, out[i], depth + 1);
    }
    return out;
  }
  if (v && typeof v === "object") {
    const o = { ...(v as Record<string, unknown>) };
    const keys = Object.keys(o);
    const k = r.int(4);
    if (k === 0 && keys.length) delete o[r.pick(keys)];
    else if (k === 1) o[r.pick(["extra", "type", "v", "fd", "constructor"])] = r.pick(ODD_VALUES);
    else if (keys.length) {
      const key = r.pick(keys);
      o[key] = mutateValue(r, o[key], depth + 1);
    }
    return o;
  }
  return r.pick(ODD_VALUES);
}

/** A random change to the bytes of a frame: cut, flip, insert or duplicate. */
function mutateText(r: Rng, text: string): Uint8Array {
  const b = Array.from(enc(text));
  for (let n = 1 + r.int(3); n > 0 && b.length; n--) {
    const i = r.int(b.length);
    const k = r.int(5);
    if (k === 0) b.length = i; // truncated frame
    else if (k === 1) b[i] = r.int(256);
    else if (k === 2) b.splice(i, 0, r.pick([0x0a, 0x00, 0x22, 0x7b, 0x7d, 0x5c, 0xff, 0xc3]));
    else if (k === 3) b.splice(i, 1);
    else b.splice(i, 0, ...b.slice(i, i + 1 + r.int(20)));
  }
  return new Uint8Array(b);
}

// ---------------------------------------------------------------- raw sockets

async function fdsSettle(pid: number, n: number, timeoutMs = 5_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let now = fdCount(pid);
  while (now > n && Date.now() < deadline) {
    await sleep(50);
    now = fdCount(pid);
  }
  return now;
}

/** Whether every copy of the pipe write end whose read end is `r` was closed (EOF). */
async function pipeClosed(r: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = sys.read(r, new Uint8Array(1));
    if (n === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

// ---------------------------------------------------------------- control socket cases

/**
 * The messages a control socket may see, valid and not. Never `upgrade` or
 * `handover`: those would start a new generation or hand the sockets to the
 * fuzzer, which tests/cli_test.ts covers; here the server must stay generation 1.
 */
const TEMPLATES: Record<string, unknown>[] = [
  { type: "status", v: PROTOCOL_VERSION },
  { type: "ready", v: PROTOCOL_VERSION, pid: 1 },
  { type: "error", v: PROTOCOL_VERSION, pid: 1, message: "x" },
  { type: "progress", v: PROTOCOL_VERSION, event: "spawned", pid: 2 },
  { type: "status-reply", v: PROTOCOL_VERSION, status: {} },
  { type: "hello", v: PROTOCOL_VERSION, generation: 2, pid: 1, transfer: "inherit", listeners: [] },
];

interface ControlCase {
  kind: string;
  bytes: Uint8Array;
  /** How many fds to attach. */
  fds: number;
}

function controlCase(r: Rng): ControlCase {
  const fds = r.chance(0.25) ? 1 + r.int(8) : 0;
  const line = (m: unknown) => JSON.stringify(m) + "\n";
  switch (r.int(9)) {
    case 0:
      return { kind: "random bytes", bytes: r.bytes(1 + r.int(300)), fds };
    case 1: {
      const b = r.bytes(1 + r.int(300));
      return { kind: "random bytes, one line", bytes: new Uint8Array([...b, 0x0a]), fds };
    }
    case 2:
      return { kind: "mutated message", bytes: enc(line(mutateValue(r, r.pick(TEMPLATES)))), fds };
    case 3:
      return { kind: "mutated bytes", bytes: mutateText(r, line(r.pick(TEMPLATES))), fds };
    case 4: {
      const text = line(r.pick(TEMPLATES));
      return { kind: "truncated frame", bytes: enc(text.slice(0, r.int(text.length - 1))), fds };
    }
    case 5: {
      const v = r.pick([0, 2, 99, -1, "1", null, 1.0000001, [1], 2 ** 53, undefined]);
      return { kind: "wrong version", bytes: enc(line({ type: "status", v })), fds };
    }
    case 6: {
      const type = r.pick([5, null, [], {}, "", "STATUS", "status ", "upgraded", "failed", true]);
      const whole = r.pick([[], 1, "status", null, true, [{ type: "status", v: 1 }]]);
      const m = r.chance(0.5) ? { type, v: PROTOCOL_VERSION } : whole;
      return { kind: "wrong type", bytes: enc(line(m)), fds };
    }
    case 7: {
      const n = MAX_REQUEST_BYTES + 1 + r.int(200_000);
      const text = r.chance(0.5)
        ? `{"type":"status","v":1,"pad":"${"p".repeat(n)}"}\n`
        : r.chance(0.5)
        ? "[".repeat(n)
        : "9".repeat(n) + "\n";
      return { kind: "huge length", bytes: enc(text), fds };
    }
    default: {
      const odd = r.pick([
        "\n",
        "\r\n",
        "{}\n",
        '{"type":"status","v":1}\r\n',
        '{"type":"status","v":1}\n{"type":"status","v":1}\n',
        '{"type":"status","v":1}\ngarbage\n',
        "\u0000\n",
        '{"type":"status","v":1e400}\n',
        '{"type":"status","v":1,"v":2}\n',
        '{"__proto__":{"type":"status","v":1}}\n',
        '{"type":"__proto__","v":1}\n',
        `${"[".repeat(2000)}${"]".repeat(2000)}\n`,
      ]);
      return { kind: "odd frame", bytes: enc(odd), fds };
    }
  }
}

/** What one exchange came to. */
interface Outcome {
  replies: Record<string, unknown>[];
  closed: boolean;
  ms: number;
}

/**
 * Connects, sends the case (fds attached to its first bytes), half-closes if
 * the frame is incomplete (a peer that then waits is not the server's fault),
 * and waits at most `boundMs` for replies and the close.
 */
async function runControlCase(
  ctl: string,
  c: ControlCase,
  pipeW: number,
  boundMs: number,
): Promise<Outcome> {
  const t0 = Date.now();
  const fd = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  try {
    sys.connect(fd, encodeUnix(ctl));
  } catch (e) {
    sys.close(fd);
    // A full accept queue while the server paces accepting: a refusal by the kernel.
    if ((e as { code?: string }).code === "EAGAIN") return { replies: [], closed: true, ms: 0 };
    throw e;
  }
  let off = 0;
  let text = "";
  let closed = false;
  try {
    const fds = Array.from({ length: c.fds }, () => pipeW);
    while (off < c.bytes.length && Date.now() - t0 < boundMs) {
      const n = rawWrite(fd, c.bytes.subarray(off), off === 0 ? fds : []);
      if (n < 0) break; // closed by the server
      off += n;
      if (n === 0) {
        const got = rawRead(fd); // a refusal may be waiting
        text += got.text;
        if (got.eof) break;
        await sleep(2);
      }
    }
    const last = c.bytes[c.bytes.length - 1];
    if (last !== 0x0a) {
      try {
        sys.shutdown(fd, C.SHUT_WR);
      } catch { /* closed already */ }
    }
    while (Date.now() - t0 < boundMs) {
      const got = rawRead(fd);
      text += got.text;
      for (const f of got.fds) sys.close(f);
      if (got.eof) {
        closed = true;
        break;
      }
      // One answer is all a peer gets before it must ask again; a status reply leaves it open.
      if (text.includes('"type":"status-reply"') && text.endsWith("\n")) break;
      await sleep(2);
    }
  } finally {
    sys.close(fd);
  }
  const replies = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  return { replies, closed, ms: Date.now() - t0 };
}

// ---------------------------------------------------------------- hello cases

/** Listening sockets in this process that a valid hello may name. */
function helloFixtures(dir: string) {
  const tcp = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.bind(tcp, encodeInet("127.0.0.1", 0)!);
  sys.listenFd(tcp, 16);
  const path = join(dir, "fuzz.sock");
  const unix = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.bind(unix, encodeUnix(path));
  sys.listenFd(unix, 16);
  const ctlPath = join(dir, "fuzz-ctl.sock");
  const ctl = sys.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
  sys.bind(ctl, encodeUnix(ctlPath));
  sys.listenFd(ctl, 16);
  const hello = {
    type: "hello",
    v: PROTOCOL_VERSION,
    generation: 2,
    pid: process.pid,
    transfer: "inherit",
    listeners: [
      { key: "tcp:127.0.0.1:0", addr: decode(sys.getsockname(tcp)), fd: tcp },
      { key: `unix:${path}`, addr: { transport: "unix", path }, fd: unix },
    ],
    control: { path: ctlPath, fd: ctl },
  };
  return { hello, fds: [tcp, unix, ctl], close: () => [tcp, unix, ctl].forEach(sys.close) };
}

interface HelloCase {
  kind: string;
  bytes: Uint8Array;
  /** How many fds to attach. */
  fds: number;
}

/** A hello case: a mutated object or mutated bytes, maybe with fds attached. */
function helloCase(r: Rng, valid: Record<string, unknown>, extraFds: number[]): HelloCase {
  const line = (m: unknown) => JSON.stringify(m) + "\n";
  const fds = r.chance(0.2) ? 1 + r.int(5) : 0;
  const k = r.int(10);
  if (k < 5) return { kind: "mutated hello", bytes: enc(line(mutateValue(r, valid))), fds };
  if (k < 7) return { kind: "mutated bytes", bytes: mutateText(r, line(valid)), fds };
  if (k === 7) {
    // A well-formed hello naming fds that are not what it says.
    const h = structuredClone(valid) as { listeners: { fd: number }[]; control: { fd: number } };
    const l = h.listeners[r.int(h.listeners.length)];
    l.fd = r.pick([...extraFds, 0, 1, 2, 999, 2 ** 32 + l.fd, -0, h.control.fd]);
    return { kind: "wrong fd", bytes: enc(line(h)), fds };
  }
  if (k === 8) return { kind: "random bytes", bytes: r.bytes(1 + r.int(200)), fds };
  return { kind: "empty", bytes: new Uint8Array(0), fds };
}

/** Checks, independently of instar, that every fd an accepted hello names is what it says. */
function reallyListening(h: { listeners: { fd: number; addr: Addr }[] }): string | null {
  const seen = new Set<number>();
  for (const l of h.listeners) {
    if (seen.has(l.fd)) return `fd ${l.fd} twice`;
    seen.add(l.fd);
    try {
      if (sys.getsockoptInt(l.fd, C.SOL_SOCKET, C.SO_ACCEPTCONN) !== 1) return `fd ${l.fd} idle`;
      const a = decode(sys.getsockname(l.fd)) as unknown as Record<string, unknown>;
      const b = l.addr as unknown as Record<string, unknown>;
      // Extra fields in the announced address are ignored; these must match.
      if (["transport", "hostname", "port", "path"].some((k) => a[k] !== b[k])) {
        return `fd ${l.fd} is ${JSON.stringify(a)}, not ${JSON.stringify(b)}`;
      }
    } catch (e) {
      return `fd ${l.fd}: ${(e as Error).message}`;
    }
  }
  return null;
}

/**
 * Runs readHello() in this process on a socketpair holding `c` (its fds, dups
 * of `attach`, attached), as a new generation would at start-up; what it
 * returned or threw, and what came back on the other end.
 */
function helloInProcess(c: HelloCase, attach: number) {
  const [mine, theirs] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
  sys.setNonBlocking(mine, true);
  if (c.bytes.length) {
    const fds = Array.from({ length: c.fds }, () => attach);
    assert.equal(sys.sendFds(mine, c.bytes, fds), c.bytes.length);
  }
  sys.shutdown(mine, C.SHUT_WR); // the hello is all there is
  process.env[CONTROL_FD_ENV] = String(theirs);
  let link: ReturnType<typeof readHello> = null;
  let error: (Error & { code?: string }) | null = null;
  try {
    link = readHello();
  } catch (e) {
    error = e as Error & { code?: string };
  }
  const unset = process.env[CONTROL_FD_ENV] === undefined;
  delete process.env[CONTROL_FD_ENV];
  assert.ok(unset, "readHello() removes the variable");
  const back = rawRead(mine);
  sys.close(mine);
  return { link, error, back };
}

// ---------------------------------------------------------------- tests

describe(`protocol fuzzing (${RUNTIME}, seed ${SEED})`, () => {
  test(`${CONTROL_CASES} random and mutated messages on the control socket: each refused or closed in time, HTTP unhurt, no fd left`, async () => {
    const ctl = join(left.tempDir("instar-fuzz-"), "ctl.sock");
    const server = startServer(runtimeCmd(RUNTIME, HTTP, ["--port", "0", "--control", ctl]));
    left.servers.push(server);
    const s = await readyGeneration(ctl, 1, {
      pid: server.pid,
      timeoutMs: 60_000,
      log: server.lines,
    });
    const port = portOf(s);
    const base = await steadyFds(server.pid);
    const [pipeR, pipeW] = sys.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
    const r = rng(SEED);
    const cases = Array.from({ length: CONTROL_CASES }, () => controlCase(r));

    // HTTP alongside, sequential requests on new connections.
    let fuzzing = true;
    const http = (async () => {
      const lat: number[] = [];
      const failures: string[] = [];
      while (fuzzing) {
        const t = performance.now();
        try {
          const res = await exchange(port, httpGet(), { timeoutMs: 5_000 });
          if (res.startsWith("HTTP/1.1 200")) lat.push(performance.now() - t);
          else failures.push(res.slice(0, 40));
        } catch (e) {
          failures.push((e as Error).message);
        }
        await sleep(10);
      }
      return { lat: lat.sort((a, b) => a - b), failures };
    })();

    // Paced under the accept rate, so that the cases reach the parser instead of the limiter.
    // A status reply waits for /proc/net/tcp (up to seconds on a machine full of
    // TIME_WAIT sockets); a refusal or a close must come at once.
    const BOUND_MS = 15_000;
    const REFUSAL_MS = 3_000;
    const outcomes: { c: ControlCase; o: Outcome }[] = [];
    const perWorker = Math.ceil(cases.length / 4);
    const interval = (4 * 1000) / (ACCEPT_RATE.perSecond * 0.8);
    await Promise.all([0, 1, 2, 3].map(async (w) => {
      for (const c of cases.slice(w * perWorker, (w + 1) * perWorker)) {
        const t = Date.now();
        outcomes.push({ c, o: await runControlCase(ctl, c, pipeW, BOUND_MS) });
        const wait = interval - (Date.now() - t);
        if (wait > 0) await sleep(wait);
      }
    }));
    fuzzing = false;
    const { lat, failures } = await http;
    sys.close(pipeW);

    const why = (x: { c: ControlCase; o: Outcome }) =>
      `seed ${SEED}: ${x.c.kind} ${
        JSON.stringify(new TextDecoder().decode(x.c.bytes.slice(0, 80)))
      }` +
      ` → ${JSON.stringify(x.o)}`;
    let refused = 0, answered = 0, closedOnly = 0;
    for (const x of outcomes) {
      const { replies, closed, ms } = x.o;
      assert.ok(ms <= BOUND_MS + 500, `took ${ms} ms: ${why(x)}`);
      for (const m of replies) {
        assert.match(String(m.type), /^(status-reply|failed)$/, why(x));
        if (m.type === "failed") {
          assert.match(
            String(m.reason),
            /^(protocol-error|rate-limited|busy|not-reading)$/,
            why(x),
          );
          assert.equal(typeof m.message, "string", why(x));
          assert.ok(String(m.message).length < 400, `a refusal echoes at most a little: ${why(x)}`);
        } else assert.equal((m.status as { pid: number }).pid, server.pid, why(x));
      }
      const last = replies.at(-1);
      if (last?.type === "failed") {
        refused++;
        assert.ok(closed, `closed after a refusal: ${why(x)}`);
      } else if (last?.type === "status-reply") answered++;
      else {
        closedOnly++;
        assert.ok(closed, `neither an answer nor a close within ${BOUND_MS} ms: ${why(x)}`);
      }
      if (last?.type !== "status-reply" && !replies.some((m) => m.type === "status-reply")) {
        assert.ok(ms <= REFUSAL_MS, `a refusal or close took ${ms} ms: ${why(x)}`);
      }
    }
    // A close without a word is for frames that never ended (half-closed by us) and for
    // connections the server could not take at the moment (pacing, the runtime's cap).
    const complete = outcomes.filter((x) => x.c.bytes.at(-1) === 0x0a);
    const silent = complete.filter((x) => x.o.replies.length === 0).length;
    assert.ok(
      silent <= complete.length * 0.02,
      `seed ${SEED}: ${silent} of ${complete.length} complete frames got no word before the close`,
    );
    assert.ok(refused > CONTROL_CASES / 2, `only ${refused} refusals`);
    console.log(
      `fuzz (${RUNTIME}, seed ${SEED}): ${refused} refused, ${answered} answered, ${closedOnly} closed`,
    );
    assert.deepEqual(failures, [], "every HTTP request during the fuzzing was answered");
    assert.ok(lat.length >= 20, `only ${lat.length} HTTP requests`);
    const p99 = lat[Math.floor(lat.length * 0.99)];
    assert.ok(p99 < 250, `HTTP p99 ${p99.toFixed(1)} ms while fuzzing`);
    assert.ok(await pipeClosed(pipeR), "every fd attached to a message was closed by the server");
    sys.close(pipeR);
    assert.equal(
      await fdsSettle(server.pid, base),
      base,
      "the server's fds are back where they were",
    );
    const after = await serverStatus(ctl);
    assert.equal(after?.pid, server.pid, "the same process still answers");
    assert.equal(after?.state, "ready");
  });

  test(`${HELLO_CASES} mutated hellos: each is refused with PROTOCOL_ERROR and an error reply, or names only fds that are what it says`, async () => {
    const dir = left.tempDir("instar-fuzz-hello-");
    const base = fdCount("self");
    const fx = helloFixtures(dir);
    const [pipeR, pipeW] = sys.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
    const notListening = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC);
    const r = rng(SEED ^ 0x5eed);
    let refused = 0, accepted = 0;
    try {
      for (let i = 0; i < HELLO_CASES; i++) {
        const c = helloCase(r, fx.hello, [pipeR, notListening]);
        const why = () =>
          `seed ${SEED} case ${i}: ${c.kind} ${
            JSON.stringify(new TextDecoder().decode(c.bytes.slice(0, 200)))
          }`;
        const { link, error, back } = helloInProcess(c, pipeW);
        if (error) {
          refused++;
          assert.equal(error.code, "PROTOCOL_ERROR", `${error.message}: ${why()}`);
          const replies = back.text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
          assert.equal(replies.length, 1, why());
          assert.equal(replies[0].type, "error", why());
          assert.equal(replies[0].message, error.message, why());
          assert.ok(error.message.length < 600, `the error echoes at most a little: ${why()}`);
          assert.ok(back.eof, `the channel was closed: ${why()}`);
        } else {
          accepted++;
          const problem = reallyListening(link!.hello);
          assert.equal(problem, null, `accepted a hello naming a bad fd (${problem}): ${why()}`);
          if (link!.hello.control) {
            assert.equal(link!.hello.control.fd, fx.hello.control.fd, why());
          }
          link!.channel.close();
        }
      }
    } finally {
      sys.close(pipeW);
      sys.close(notListening);
    }
    console.log(`hello fuzz (${RUNTIME}, seed ${SEED}): ${refused} refused, ${accepted} accepted`);
    assert.ok(refused > HELLO_CASES / 2, `only ${refused} refused`);
    assert.ok(await pipeClosed(pipeR), "every fd attached to a hello was closed");
    sys.close(pipeR);
    fx.close();
    assert.ok(fdCount("self") <= base, `fds: ${fdCount("self")} now, ${base} before`);
  });

  test(`${CHILD_CASES} real children given mutated hellos exit with PROTOCOL_ERROR, reply error, and accept nothing`, async () => {
    const dir = left.tempDir("instar-fuzz-child-");
    const fx = helloFixtures(dir);
    const r = rng(SEED ^ 0xc41d);
    const cmd = runtimeCmd(RUNTIME, HTTP, ["--port", "0"]);
    const env = Object.entries(process.env)
      .filter(([k]) => k !== CONTROL_FD_ENV)
      .map(([k, v]) => `${k}=${v}`);
    // A queued connection on the TCP listener: a child that served would accept it.
    const tcpAddr = fx.hello.listeners[0].addr as Addr & { port: number };
    const probe = sys.socket(C.AF_INET, C.SOCK_STREAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
    try {
      sys.connect(probe, encodeInet("127.0.0.1", tcpAddr.port)!);
    } catch { /* EINPROGRESS: it completes in the backlog */ }
    // Cases the in-process run refuses (a mutation may leave a hello valid).
    const cases: HelloCase[] = [];
    const [pr, pw] = sys.pipe2(C.O_CLOEXEC);
    while (cases.length < CHILD_CASES) {
      const c = helloCase(r, fx.hello, []);
      const { link, error } = helloInProcess(c, pw);
      if (error) cases.push(c);
      else link!.channel.close();
    }
    [pr, pw].forEach(sys.close);
    async function one(c: HelloCase, i: number) {
      const [mine, theirs] = sys.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC);
      if (c.bytes.length) sys.sendFds(mine, c.bytes, []);
      sys.shutdown(mine, C.SHUT_WR);
      const out = join(dir, `child-${i}.log`);
      const pid = spawn({
        path: "/bin/sh",
        argv: ["sh", "-c", 'exec "$@" >"$0" 2>&1', out, ...cmd],
        env: [...env, `${CONTROL_FD_ENV}=${theirs}`],
        fds: [...fx.fds, theirs],
      });
      sys.close(theirs);
      let status: sys.WaitStatus | null = null;
      for (let t = 0; t < 600 && !status; t++) {
        await sleep(50);
        status = sys.waitpidNoHang(pid);
      }
      sys.setNonBlocking(mine, true);
      const back = rawRead(mine);
      sys.close(mine);
      if (!status) process.kill(pid, "SIGKILL");
      return { status, back, log: readFileSync(out, "utf8") };
    }
    const results: Awaited<ReturnType<typeof one>>[] = [];
    for (let i = 0; i < cases.length; i += 4) {
      results.push(...await Promise.all(cases.slice(i, i + 4).map((c, j) => one(c, i + j))));
    }
    results.forEach(({ status, back, log }, i) => {
      const why = `seed ${SEED} child case ${i}: ${cases[i].kind} ${
        JSON.stringify(new TextDecoder().decode(cases[i].bytes.slice(0, 200)))
      }\n${log.slice(-500)}`;
      assert.ok(status, `the child exited: ${why}`);
      assert.ok(
        status!.exited && status!.code !== 0,
        `exit status ${JSON.stringify(status)}: ${why}`,
      );
      assert.match(log, /PROTOCOL_ERROR|instar control protocol/, why);
      const replies = back.text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
      assert.equal(replies.length, 1, why);
      assert.equal(replies[0].type, "error", why);
    });
    // No child accepted the queued connection: it is still there for us.
    let accepted = -1;
    for (let t = 0; t < 20 && accepted < 0; t++) {
      accepted = sys.accept4(fx.fds[0], C.SOCK_CLOEXEC);
      if (accepted < 0) await sleep(20);
    }
    assert.ok(accepted >= 0, "the connection queued before the children is still in the queue");
    sys.close(accepted);
    sys.close(probe);
    fx.close();
  });
});
