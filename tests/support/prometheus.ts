/**
 * Prometheus text read with a real parser: Debian's python3-prometheus-client
 * (.ci/run installs it), run by the system python. Test support.
 *
 * @module
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand, showResult } from "./helpers.ts";

/** The system python, where Debian's python3-prometheus-client lives. */
export const PYTHON = "/usr/bin/python3";

const PARSE = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in f.samples:
        out.append({"family": f.name, "type": f.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
`;

/** Why the parser cannot run here (a skip reason), or false. */
export function noParser(): string | false {
  if (!existsSync(PYTHON)) return `${PYTHON} is missing (Debian package python3)`;
  return false;
}

/** One sample of a parsed exposition. */
export interface Sample {
  family: string;
  type: string;
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text with prometheus_client; fails the test if it does not parse. */
export async function parsePrometheus(text: string): Promise<Sample[]> {
  const dir = mkdtempSync(join(tmpdir(), "instar-prom-"));
  try {
    const file = join(dir, "metrics.txt");
    writeFileSync(file, text);
    const r = await runCommand([PYTHON, "-c", PARSE, file], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, `prometheus_client refused the text:\n${showResult(r)}\n${text}`);
    return JSON.parse(r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The value of the one sample `name` whose labels include `labels`; fails unless exactly one. */
export function value(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number {
  const s = samples.filter((x) =>
    x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)
  );
  assert.equal(s.length, 1, `one ${name} ${JSON.stringify(labels)} in ${JSON.stringify(samples)}`);
  return s[0].value;
}
