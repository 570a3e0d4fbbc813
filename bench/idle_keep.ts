/**
 * Idle keep-alive connections through upgrades: a naive pooled client
 * (tests/support/naive_client.ts: idle between requests, never checks for a
 * closed connection, never re-sends) against examples/http_server.ts, once per
 * policy (`--idle-connections keep` and `close-when-quiet`) and serve path;
 * prints the requests lost and how long each old generation took to drain.
 *
 *   deno run -A bench/idle_keep.ts [--upgrades 10] [--every 2000] [--connections 20]
 *     [--idle-min 1000] [--idle-max 4000] [--drain-timeout 30000] [--modes transplant,fallback]
 *     [--example http_server.ts|express.ts] (express.ts: a node:http server through up.serveNode())
 *   bun bench/idle_keep.ts …
 *
 * @module
 */
import { parseArgs } from "node:util";
import { leftovers, RUNTIME } from "../tests/support/helpers.ts";
import { idleThroughUpgrades } from "../tests/support/idle_keep.ts";
import { lostCount } from "../tests/support/naive_client.ts";

const { values } = parseArgs({
  options: {
    upgrades: { type: "string", default: "10" },
    every: { type: "string", default: "2000" },
    connections: { type: "string", default: "20" },
    "idle-min": { type: "string", default: "1000" },
    "idle-max": { type: "string", default: "4000" },
    "drain-timeout": { type: "string", default: "30000" },
    modes: { type: "string", default: "transplant,fallback" },
    example: { type: "string", default: "http_server.ts" },
  },
});

const left = leftovers();

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

console.log(
  `${RUNTIME} ${values.example}: ${values.connections} connections idle ${values["idle-min"]}–${
    values["idle-max"]
  } ms, ${values.upgrades} upgrades every ${values.every} ms, drain timeout ${
    values["drain-timeout"]
  } ms`,
);
console.log("| path | policy | sent | lost | how | drain ms (median / max) |");
console.log("| --- | --- | ---: | ---: | --- | --- |");
try {
  for (const mode of values.modes.split(",") as ("auto" | "transplant" | "fallback")[]) {
    for (const policy of ["close-when-quiet", "keep"] as const) {
      const out = await idleThroughUpgrades(left, {
        policy,
        mode,
        example: values.example,
        upgrades: Number(values.upgrades),
        everyMs: Number(values.every),
        connections: Number(values.connections),
        idleMinMs: Number(values["idle-min"]),
        idleMaxMs: Number(values["idle-max"]),
        drainTimeoutMs: Number(values["drain-timeout"]),
      });
      const c = out.client;
      const d = out.drainMs.map(Math.round);
      console.log(
        `| ${mode} | ${policy} | ${c.sent} | ${lostCount(c)} | ${JSON.stringify(c.lost)} | ${
          pct(d, 0.5)
        } / ${Math.max(...d)} |`,
      );
    }
  }
} finally {
  left.cleanUp();
}
