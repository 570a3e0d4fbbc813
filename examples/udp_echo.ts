/**
 * A UDP (or Unix datagram) echo server that upgrades in place: every
 * datagram is sent back to its sender. The socket passes from generation to
 * generation; at a handover the old generation stops reading, answers what
 * it took, and exits.
 *
 *   deno run -A examples/udp_echo.ts --port 9053     (or: bun examples/udp_echo.ts …)
 *   kill -HUP <pid>    # start the program as it now is on disk; this generation drains
 *   kill -TERM <pid>   # stop gracefully
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file, --control,
 * --drain-timeout, --ready-timeout, --spawn-backend), plus --path <socket
 * path> (a Unix datagram socket instead of UDP) and --tag (answer
 * `<pid> <datagram>`, so a client sees which generation answered).
 *
 * @module
 */
import process from "node:process";
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, flags } = await startGeneration("udp-echo", {
  path: { type: "string" },
  tag: { type: "boolean" },
});
const path = flags.path as string | undefined;
const sock = await up.listenDatagram(path ? { path } : { hostname, port });
const tag = flags.tag ? new TextEncoder().encode(`${process.pid} `) : undefined;

(async () => {
  for await (const { data, addr } of sock) {
    const answer = tag ? new Uint8Array([...tag, ...data]) : data;
    // An unnamed Unix sender cannot be answered; the others are.
    await sock.send(answer, addr).catch((err) => console.error(`udp-echo: ${err.message}`));
  }
})();

await up.ready();
