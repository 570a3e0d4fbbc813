#!/bin/sh
# Type-checks serve()'s options as a Bun user's TypeScript sees them (bun-types, no Deno
# namespace), which `deno check` cannot: tests/serve_types_bun.ts (its @ts-expect-error lines
# must be errors) and examples/bun_serve.ts. Both start with `// @ts-nocheck` for deno check;
# copies without that line are checked. typescript and the pinned bun-types / @types/node are
# installed into a scratch directory, not the project's node_modules.
#
#   sh scripts/check_bun_types.sh [scratch dir, default /tmp/instar-bun-types]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/tmp/instar-bun-types}
mkdir -p "$dir"
ver() { node -p "require('$root/package.json').devDependencies['$1']"; }
if [ ! -x "$dir/node_modules/.bin/tsc" ]; then
  (cd "$dir" && npm init -y >/dev/null &&
    npm install --no-audit --no-fund typescript "bun-types@$(ver bun-types)" \
      "@types/node@$(ver @types/node)" >/dev/null)
fi
files=""
for f in tests/serve_types_bun.ts examples/bun_serve.ts; do
  # Next to the original (relative imports resolve), without the @ts-nocheck line.
  copy="$root/${f%.ts}.bun-check.ts"
  sed '1{/@ts-nocheck/d}' "$root/$f" >"$copy"
  files="$files \"$copy\","
done
trap 'rm -f "$root"/tests/*.bun-check.ts "$root"/examples/*.bun-check.ts' EXIT
cat >"$dir/tsconfig.json" <<JSON
{
  "compilerOptions": {
    "lib": ["ESNext", "DOM"], "target": "ESNext", "module": "Preserve",
    "moduleResolution": "bundler", "allowImportingTsExtensions": true, "noEmit": true,
    "strict": true, "skipLibCheck": true, "types": ["bun-types"], "typeRoots": ["$dir/node_modules/@types", "$dir/node_modules"]
  },
  "files": [${files%,}]
}
JSON
# src/ffi names the Deno namespace in its Deno backend; report only serve()'s files and these.
out=$("$dir/node_modules/.bin/tsc" -p "$dir/tsconfig.json" 2>&1 || true)
mine=$(printf '%s\n' "$out" | grep -E '(bun-check|src/serve/|src/runtime/serve_)[^(]*\([0-9]+,' || true)
if [ -n "$mine" ]; then
  printf '%s\n' "$mine"
  exit 1
fi
echo "bun-types check: no errors in serve()'s types, tests/serve_types_bun.ts, examples/bun_serve.ts"
