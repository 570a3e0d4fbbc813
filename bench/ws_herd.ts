/**
 * A herd of WebSockets on examples/ws_chat.ts that reconnect when told
 * `draining`, through upgrades (tests/support/ws_herd.ts), while a prober in
 * its own process times fresh HTTP requests on new connections. Per setting
 * of `--close-spread` and `--backlog` (every pair, rounds interleaved): the
 * failed handshakes, how the notices spread, how long the move took, the
 * probes' latency and the kernel's listen-queue overflows.
 *
 *   deno run -A bench/ws_herd.ts [--clients 3000] [--upgrades 3] [--rounds 1]
 *     [--spreads default,0] [--backlogs default,511] [--drain-timeout 30000] [--server deno|bun]
 *   bun bench/ws_herd.ts …
 *
 * The clients run in this runtime, the server in `--server`'s (default the
 * same). Bun's clients reconnect about 5x faster than Deno's (a sharper herd).
 *
 * `default` passes no flag (the example's default). A run holds up to three
 * connections per client at once in the server's generations and two in this
 * process: the hard fd limit must allow it (both runtimes raise their soft
 * limit to the hard one at start, and so does the Upgrader).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { leftovers, RUNTIME } from "../tests/support/helpers.ts";
import { herdThroughUpgrades } from "../tests/support/ws_herd.ts";

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "3000" },
    upgrades: { type: "string", default: "3" },
    rounds: { type: "string", default: "1" },
    spreads: { type: "string", default: "default,0" },
    backlogs: { type: "string", default: "default,511" },
    "drain-timeout": { type: "string", default: "30000" },
    server: { type: "string", default: RUNTIME },
  },
});

const left = leftovers();

const pct = (xs: number[], p: number) =>
  xs.length
    ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]
    : NaN;
const opt = (v: string) => (v === "default" ? undefined : Number(v));
const r0 = (x: number) => Math.round(x);

console.log(
  `server ${values.server}, clients ${RUNTIME}: ${values.clients} WebSockets, ${values.upgrades} upgrades, drain timeout ${
    values["drain-timeout"]
  } ms`,
);
console.log(
  "| close spread | backlog | failed handshakes | notices span ms (per upgrade) | move ms | probes | probe ms p50 / p99 / max | connect max | probes failed | listen overflows |",
);
console.log("| --- | --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: |");
try {
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const spread of values.spreads.split(",")) {
      for (const backlog of values.backlogs.split(",")) {
        const out = await herdThroughUpgrades(left, {
          clients: Number(values.clients),
          upgrades: Number(values.upgrades),
          drainTimeoutMs: Number(values["drain-timeout"]),
          closeSpreadMs: opt(spread),
          backlog: opt(backlog),
          server: values.server as "deno" | "bun",
        });
        const p = out.probes;
        console.log(
          `| ${spread} | ${backlog} | ${out.failedHandshakes} | ${
            out.notices.map((n) => r0(n.at(-1)!)).join(", ")
          } | ${out.moveMs.map(r0).join(", ")} | ${p.ms.length} | ${r0(pct(p.ms, 0.5))} / ${
            r0(pct(p.ms, 0.99))
          } / ${r0(Math.max(...p.ms))} | ${
            r0(Math.max(...p.connectMs))
          } | ${p.failed.length} | ${out.listenOverflows} |`,
        );
        for (const s of left.servers.splice(0)) s.killAll();
        for (const s of left.sockets.splice(0)) s.close();
      }
    }
  }
} finally {
  left.cleanUp();
}
