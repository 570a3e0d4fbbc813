/**
 * An HTTP server that upgrades in place without dropping a request. It runs on
 * Deno and on Bun, with the runtime's own server (Deno.serve / Bun.serve) at
 * full speed on the socket instar passes from generation to generation.
 *
 *   deno run -A examples/http_server.ts --port 8080 --pid-file app.pid   (or: bun examples/http_server.ts …)
 *   kill -HUP $(cat app.pid)    # run the program as it now is on disk; this generation drains
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Answers (status 200 unless said):
 * - `GET /slow?ms=N`: the hello line after N ms;
 * - `GET /stream?ms=N`: a line (`<pid> <ms since start>`) every 100 ms for N ms;
 * - `GET /busy?ms=N`: the hello line after blocking the event loop for N ms;
 * - `GET /metrics`: instar's metrics in the Prometheus text format;
 * - `GET /healthz?ms=N`: after N ms (default 0), 200 while this generation serves, 503
 *   while it starts or drains;
 * - `POST` anything: the number of body bytes it read;
 * - `GET /unhealthy?reason=R`: calls `up.unhealthy(R)` (in a new generation
 *   within its promotion window the previous one takes over again), answers
 *   `rolled back: R`, or status 409 with the error when no window is open. A
 *   demonstration: any client can reach it. A real service calls `up.unhealthy()`
 *   from its own checks (a failing dependency, a config path taken late);
 * - any other request: `hello from pid <pid> generation <n> (<label>)`.
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend, --serve-mode), plus
 * --version-label <text>, --stats-file <path> (each generation appends
 * `<pid> <POST bodies read>` to it once drained), and --cert <path> --key <path>
 * (PEM files: HTTPS, and HTTP/2 on Deno; checked before serving, so a broken pair
 * fails this generation before ready: docs/tls.md), --promotion-window <ms> (see
 * examples/_lifecycle.ts).
 *
 * Test aids, never for production: --crash-after-ready <ms> (tests/promotion_test.ts)
 * makes the generation crash (an uncaught error) that long after ready(). Every
 * generation is started with the same arguments, so a test deploys a script that
 * adds it to process.argv before importing this file. --fail-if-exists <path>
 * (tests/metrics_test.ts): a new generation exits with status 1 before it is
 * ready while that file exists, a broken deploy.
 *
 * @module
 */
import { appendFileSync, existsSync } from "node:fs";
import process from "node:process";
import { startGeneration } from "./_lifecycle.ts";
import { healthResponse, InstarError, metricsResponse, readTlsFiles } from "../mod.ts";

const { up, hostname, port, serveMode, flags } = await startGeneration("http", {
  "version-label": { type: "string" },
  "stats-file": { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  "crash-after-ready": { type: "string" },
  "fail-if-exists": { type: "string" },
});

// A broken deploy: a later generation that dies before it is ready; the one serving goes on.
const failFile = flags["fail-if-exists"] as string | undefined;
if (up.generation > 1 && failFile && existsSync(failFile)) {
  console.error(`generation ${up.generation}: ${failFile} exists; exiting before ready`);
  process.exit(1);
}

const label = flags["version-label"] ??
  (process.versions.bun ? `bun ${process.versions.bun}` : `deno ${process.versions.deno}`);
const body = `hello from pid ${process.pid} generation ${up.generation} (${label})\n`;
let posts = 0;

// A POST's body is read whole; the answer is how many bytes it had.
async function post(req: Request): Promise<Response> {
  const n = (await req.arrayBuffer()).byteLength;
  posts++;
  return new Response(`${n}\n`);
}

// A line every 100 ms for `ms` milliseconds, then the end of the body.
function stream(ms: number): Response {
  let timer: ReturnType<typeof setInterval> | undefined;
  const started = Date.now();
  const lines = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => {
        try {
          controller.enqueue(new TextEncoder().encode(`${process.pid} ${Date.now() - started}\n`));
          if (Date.now() - started >= ms) {
            clearInterval(timer);
            controller.close();
          }
        } catch {
          clearInterval(timer); // the client went away, or the drain timeout cut the stream
        }
      }, 100);
    },
    cancel: () => clearInterval(timer),
  });
  return new Response(lines, { headers: { "content-type": "text/plain" } });
}

// Asks the previous generation to take over again (a new generation within its promotion window).
async function unhealthy(reason: string): Promise<Response> {
  try {
    await up.unhealthy(reason);
    return new Response(`rolled back: ${reason}\n`);
  } catch (err) {
    return new Response(`${(err as Error).message}\n`, { status: 409 });
  }
}

function handle(req: Request): Response | Promise<Response> {
  if (req.method === "POST") return post(req);
  const url = new URL(req.url);
  if (url.pathname === "/unhealthy") {
    return unhealthy(url.searchParams.get("reason") ?? "unhealthy");
  }
  const ms = Math.min(Number(url.searchParams.get("ms") ?? 0) || 0, 600_000);
  if (url.pathname === "/slow") {
    return new Promise((r) => setTimeout(() => r(new Response(body)), ms));
  }
  if (url.pathname === "/stream") return stream(ms);
  if (url.pathname === "/metrics") return metricsResponse(up);
  if (url.pathname === "/healthz") {
    // With ?ms=N the state is read after N ms: a request held into a drain answers 503.
    if (!ms) return healthResponse(up);
    return new Promise((r) => setTimeout(() => r(healthResponse(up)), ms));
  }
  if (url.pathname === "/busy") {
    // Blocks the event loop, as a CPU-heavy request would (for tests of a loaded server).
    const until = Date.now() + ms;
    while (Date.now() < until) { /* busy */ }
  }
  return new Response(body);
}

// With --stats-file, each generation appends `<pid> <POST bodies read>` once it has drained.
const statsFile = flags["stats-file"] as string | undefined;
if (statsFile) up.onDrained(() => appendFileSync(statsFile, `${process.pid} ${posts}\n`));

// --cert and --key: HTTPS (HTTP/2 too where the runtime offers it, Deno). The pair is
// checked before serving: a broken one (unreadable, not PEM, a key of another
// certificate, expired) stops this generation before ready, and the running one serves on.
if (!flags.cert !== !flags.key) {
  throw new InstarError("INVALID_ARGUMENT", "--cert and --key go together: give both, or neither");
}
const tls = flags.cert && flags.key
  ? (({ cert, key }) => ({ cert, key }))(
    readTlsFiles({ cert: flags.cert as string, key: flags.key as string }),
  )
  : undefined;
const tlsOptions = !tls ? {} : process.versions.bun ? { tls } : tls;

await up.serve({ hostname, port, mode: serveMode, fetch: handle, ...tlsOptions });

await up.ready();

// Test aid: crash (an uncaught error, exit code 1) this long after ready.
const crashAfter = flags["crash-after-ready"];
if (crashAfter !== undefined) {
  if (!/^\d+$/.test(String(crashAfter))) {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `--crash-after-ready ${crashAfter}: expected ms, e.g. 1000`,
    );
  }
  setTimeout(() => {
    throw new Error(`--crash-after-ready ${crashAfter}: crashing on purpose`);
  }, Number(crashAfter));
}
