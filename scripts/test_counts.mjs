// Reads the runners' own counts (for scripts/test.mjs): leaf tests passed, failed
// and skipped, and the skip lines tests/support/helpers.ts's skipIf() prints.
import { existsSync, readFileSync } from "node:fs";

/**
 * Counts from `deno test --junit-path` output. Deno reports a node:test
 * describe() as a test and its test()s as steps ("outer > inner"), so only
 * testcases without steps of their own (leaves) are counted, as bun does.
 */
export function countDeno(junitPath) {
  if (!existsSync(junitPath)) return undefined;
  const xml = readFileSync(junitPath, "utf8");
  const cases = [...xml.matchAll(/<testcase name="([^"]*)"[^>]*?(?:\/>|>([\s\S]*?)<\/testcase>)/g)]
    .map((m) => ({ name: m[1], body: m[2] ?? "" }));
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const failed = (c) => /<failure|<error/.test(c.body);
  for (const c of cases) {
    const steps = cases.filter((s) => s.name.startsWith(`${c.name} &gt; `));
    // A failed describe counts only when none of its steps failed (a hook threw).
    if (steps.length) counts.failed += failed(c) && !steps.some(failed) ? 1 : 0;
    else if (failed(c)) counts.failed++;
    else if (/<skipped/.test(c.body)) counts.skipped++;
    else counts.passed++;
  }
  return counts;
}

/** Counts from bun test's closing lines (" 40 pass", " 1 skip", " 0 fail"). */
export function countBun(out) {
  const n = (word) => out.match(new RegExp(`^\\s*(\\d+) ${word}\\s*$`, "m"));
  const pass = n("pass"), fail = n("fail");
  if (!pass && !fail) return undefined;
  return {
    passed: Number(pass?.[1] ?? 0),
    failed: Number(fail?.[1] ?? 0),
    skipped: Number(n("skip")?.[1] ?? 0) + Number(n("todo")?.[1] ?? 0),
  };
}

/** The `skipped (<runtime>): <name>: <reason>` lines skipIf() printed. */
export function skipLines(out, runtime) {
  return [...out.matchAll(/^skipped \((deno|bun)\): (.*)$/gm)]
    .filter((m) => m[1] === runtime)
    .map((m) => ({ runtime, text: m[2] }));
}
