#!/usr/bin/env bash
# User-space instructions per request of a hello world on Deno, bare or under instar/auto, counted
# with valgrind's callgrind (deterministic: no other load on the machine changes the count; the
# kernel's share, the same syscalls for both, is not counted). The server starts under callgrind,
# answers 4,000 requests (warm-up), its counters are zeroed, it answers 10,000 more (h2load -c10),
# and the counters are dumped: instructions / requests.
#
#   bash bench/auto_callgrind.sh bare|auto|<preload.ts> [native|native-req|node]
#
# Needs valgrind and h2load. Only hits 127.0.0.1.
set -euo pipefail
variant=$1 app=${2:-native}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'kill -9 "${pid:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
pre=()
[ "$variant" = auto ] && pre=(--preload "$root/src/auto/preload.ts")
[ -f "$variant" ] && pre=(--preload "$variant")
# Under valgrind a generation starts in seconds, not milliseconds.
INSTAR_AUTO_LISTEN_TIMEOUT=200000 valgrind --tool=callgrind --smc-check=all-non-file --dump-instr=no \
  "$root/node_modules/.bin/deno" run -A --no-check "${pre[@]}" "$root/bench/auto_app.mjs" "$app" \
  >out.txt 2>err.txt &
for _ in $(seq 240); do grep -q port= out.txt 2>/dev/null && break; sleep 0.5; done
port=$(grep -o 'port=[0-9]*' out.txt | cut -d= -f2)
pid=$(grep -o '^==[0-9]*==' err.txt | head -1 | tr -d =)
h2load --h1 -c10 -n4000 "http://127.0.0.1:$port/" >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
n=$(h2load --h1 -c10 -n10000 "http://127.0.0.1:$port/" | grep -o '[0-9]* succeeded' | cut -d' ' -f1)
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 1
total=$(grep -h '^totals:' callgrind.out.*.1 | awk '{print $2}')
echo "$variant $app: $((total / n)) instructions per request ($total over $n requests)"
