/**
 * A client run inside another network namespace (`nsenter -t <pid> -n <runtime>
 * tests/support/ns_client.ts …`), for servers whose loopback only that namespace
 * reaches (tests/systemd_supervisor_test.ts). Prints one JSON line on stdout.
 * Test support, not a test file.
 *
 *   ns_client.ts load <port> <connections> <keep-alive 0|1> <max ms>
 *     runs tests/support/load_client.ts's client (never re-sends) until SIGTERM or <max ms>;
 *     prints its result without latencies, plus `bodies`: the distinct answers (up to 50).
 *   ns_client.ts get <port> <path> <timeout ms>
 *     one GET; prints { status, body } or { error }.
 *
 * @module
 */
import process from "node:process";
import { runLoad } from "./load_client.ts";

const [mode, portArg, a, b, c] = process.argv.slice(2);
const port = Number(portArg);

async function load(): Promise<void> {
  const ac = new AbortController();
  process.on("SIGTERM", () => ac.abort());
  const bodies = new Set<string>();
  const r = await runLoad({
    port,
    connections: Number(a),
    keepAlive: b === "1",
    durationMs: Math.min(Number(c), 300_000),
    signal: ac.signal,
    onResponse: (body) => {
      if (bodies.size < 50) bodies.add(body.trim());
    },
  });
  const { latencies: _, ...rest } = r;
  console.log(JSON.stringify({ ...rest, bodies: [...bodies] }));
}

async function get(): Promise<void> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${a}`, {
      signal: AbortSignal.timeout(Number(b)),
    });
    console.log(JSON.stringify({ status: res.status, body: await res.text() }));
  } catch (err) {
    console.log(JSON.stringify({ error: String((err as Error)?.message ?? err) }));
  }
}

if (mode === "load") await load();
else if (mode === "get") await get();
else {
  console.error(
    "usage: ns_client.ts load <port> <conns> <keep-alive 0|1> <max ms> | get <port> <path> <ms>",
  );
  process.exit(2);
}
process.exit(0);
