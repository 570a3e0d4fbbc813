// The layer check (scripts/check_layers.ts) on the repository and on small
// trees that break the order in each way it must catch.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { checkLayers } from "../scripts/check_layers.ts";
import { cleanupAfterTests } from "./support/helpers.ts";

const temp = cleanupAfterTests();

/** A throwaway repository holding `files` (path -> source). */
function tree(files: Record<string, string>): string {
  const root = temp.tempDir("instar-layers-");
  for (const [path, code] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), code);
  }
  return root;
}

describe("the layer check", () => {
  test("this repository's imports all point down the order", () => {
    const { files, problems } = checkLayers(join(import.meta.dirname!, ".."));
    assert.deepEqual(problems, []);
    assert.ok(files > 50, `only ${files} files read`);
  });

  test("an import up the order is reported, type-only and dynamic ones too", () => {
    const root = tree({
      "src/ffi/a.ts": 'import type { B } from "../net/b.ts";\nexport type A = B;\n',
      "src/proc.ts": 'export const p = () => import("./lifecycle/c.ts");\n',
      "src/net/b.ts": "export type B = number;\n",
      "src/lifecycle/c.ts": "export const c = 1;\n",
    });
    const { problems } = checkLayers(root);
    assert.deepEqual(problems.sort(), [
      "src/ffi/a.ts -> src/net/b.ts (src/ffi may not import src/net)",
      "src/proc.ts -> src/lifecycle/c.ts (src/proc may not import src/lifecycle)",
    ]);
  });

  test("two units that would import each other cannot both pass", () => {
    const root = tree({
      "src/process/spawn.ts": 'import { E } from "../systemd/env.ts";\nexport const s = E;\n',
      "src/systemd/env.ts": 'export { s } from "../process/spawn.ts";\nexport const E = 1;\n',
    });
    const { problems } = checkLayers(root);
    assert.ok(
      problems.includes(
        "src/process/spawn.ts -> src/systemd/env.ts (src/process may not import src/systemd)",
      ),
      problems.join("\n"),
    );
  });

  test("imports of tests/ or bench/ and folders in no layer are reported", () => {
    const root = tree({
      "src/net/a.ts": 'import { x } from "../../tests/support/x.ts";\nexport const a = x;\n',
      "src/extra/b.ts": "export const b = 1;\n",
      "tests/support/x.ts": "export const x = 1;\n",
    });
    const { problems } = checkLayers(root);
    assert.deepEqual(problems.sort(), [
      "src/extra/b.ts (unit src/extra is in no layer of scripts/check_layers.ts)",
      "src/net/a.ts -> tests/support/x.ts (tests/support/x is in no layer)",
    ]);
  });

  test("a cycle of files within one folder is reported", () => {
    const root = tree({
      "src/net/a.ts": 'import { b } from "./b.ts";\nexport const a = b;\n',
      "src/net/b.ts": 'import { a } from "./a.ts";\nexport const b = a;\n',
    });
    assert.deepEqual(checkLayers(root).problems, [
      "cycle: src/net/a.ts -> src/net/b.ts -> src/net/a.ts",
    ]);
  });
});
