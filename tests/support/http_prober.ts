/**
 * A process that times fresh HTTP requests, one after another: each on a new
 * TCP connection to 127.0.0.1:<port> (so a SYN dropped by a full listen queue
 * shows as a connect that waited for the kernel's 1 s retry), `<every>` ms
 * apart, in `<lanes>` concurrent loops, until killed. In its own process so that a busy test client cannot
 * delay it. Prints one line per request:
 *
 *   probe <connect ms> <total ms> ok|<error>
 *
 *   deno run -A tests/support/http_prober.ts <port> <every ms> <lanes>
 *
 * Test support, not a test file.
 *
 * @module
 */
import net from "node:net";
import process from "node:process";

const [port, every, lanes] = process.argv.slice(-3).map(Number);

/** One GET with `Connection: close` on a new connection; at most 10 s. */
function probe(): Promise<string> {
  const start = performance.now();
  let connected = NaN;
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let got = "", finished = false;
    const done = (how: string) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      const total = performance.now() - start;
      resolve(`probe ${connected.toFixed(1)} ${total.toFixed(1)} ${how}`);
    };
    const timer = setTimeout(() => done("timeout"), 10_000);
    sock.on("connect", () => {
      connected = performance.now() - start;
      sock.write("GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    });
    sock.on("data", (d) => (got += d.toString()));
    sock.on("error", (e) => done((e as { code?: string }).code ?? "error"));
    sock.on("close", () => done(/^HTTP\/1\.1 200/.test(got) ? "ok" : "bad-response"));
  });
}

async function lane(): Promise<never> {
  for (;;) {
    console.log(await probe());
    await new Promise((r) => setTimeout(r, every));
  }
}

await Promise.all(Array.from({ length: lanes }, lane));
