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
pre=()
case "$variant" in
  bare) ;;
  auto) pre=(--preload "$root/src/auto/preload.ts") ;;
  *)
    [ -f "$variant" ] || { echo "auto_callgrind: $variant is not bare, auto or a preload file" >&2; exit 2; }
    pre=(--preload "$(realpath "$variant")")
    ;;
esac
dir=$(mktemp -d)
vpid=""
trap '[ -n "$vpid" ] && kill -9 "$vpid" 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
# Under valgrind a generation starts in seconds, not milliseconds.
INSTAR_AUTO_LISTEN_TIMEOUT=200000 valgrind --tool=callgrind --smc-check=all-non-file --dump-instr=no \
  "$root/node_modules/.bin/deno" run -A --no-check "${pre[@]}" "$root/bench/auto_app.mjs" "$app" \
  >out.txt 2>err.txt &
vpid=$!
for _ in $(seq 240); do grep -q port= out.txt 2>/dev/null && break; sleep 0.5; done
port=$(grep -o 'port=[0-9]*' out.txt | cut -d= -f2) || { echo "no port: $(cat out.txt err.txt)" >&2; exit 1; }
h2load --h1 -c10 -n4000 "http://127.0.0.1:$port/" >/dev/null
callgrind_control -z "$vpid" >/dev/null
n=$(h2load --h1 -c10 -n10000 "http://127.0.0.1:$port/" | grep -o '[0-9]* succeeded' | cut -d' ' -f1)
callgrind_control -d "$vpid" >/dev/null
sleep 1
dump=$(ls callgrind.out.*.1 2>/dev/null) || { echo "no dump after 'callgrind_control -d'" >&2; exit 1; }
total=$(grep -h '^totals:' $dump | awk '{print $2}')
[ -n "$n" ] && [ -n "$total" ] || { echo "no count (requests: '$n', instructions: '$total')" >&2; exit 1; }
echo "$variant $app: $((total / n)) instructions per request ($total over $n requests)"
