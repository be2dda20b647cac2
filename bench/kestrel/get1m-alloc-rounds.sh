#!/usr/bin/env bash
# Alternating rounds of the 1 MiB GET alone, one fresh server per configuration per round (2 s warm-up, 10 s of
# wrk -t2 -c32): prints "round configuration req/s allocated-bytes-per-request" per server. For the allocation
# comparison of docs/kestrel.md; wrk-rounds.sh is the full comparison.
#
#   get1m-alloc-rounds.sh [--rounds N] [CONFIG ...]
#
# A CONFIG is the server's arguments after --pool, quoted as one word: "kestrel", "pagecore", "pagecore --decay off".
# Default: --rounds 10 "kestrel" "pagecore". The order of the configurations rotates by one every round.
set -uo pipefail
cd "$(dirname "$0")/../.."
rounds=10
configs=()
while (( $# )); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    *) configs+=("$1"); shift ;;
  esac
done
(( ${#configs[@]} )) || configs=("kestrel" "pagecore")
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a positive whole number, not '$rounds'" >&2; exit 64; }
dotnet build bench/PageCore.KestrelBench -c Release -nologo -v q -clp:ErrorsOnly || exit 1
n=${#configs[@]}
for r in $(seq 1 "$rounds"); do
  for k in $(seq 0 $((n - 1))); do
    config="${configs[$(( (k + r - 1) % n ))]}"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    # shellcheck disable=SC2086 # a configuration is several arguments
    dotnet bench/PageCore.KestrelBench/bin/Release/net10.0/PageCore.KestrelBench.dll --pool $config --port "$port" >/dev/null 2>&1 &
    pid=$!
    up=0
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/plaintext" >/dev/null && { up=1; break; }; sleep 0.1; done
    (( up )) || { echo "server '$config' did not start" >&2; kill "$pid" 2>/dev/null; exit 1; }
    wrk -t2 -c32 -d2s "http://127.0.0.1:$port/bytes/1048576" >/dev/null
    s1=$(curl -sf "http://127.0.0.1:$port/stats")
    rps=$(wrk -t2 -c32 -d10s "http://127.0.0.1:$port/bytes/1048576" | awk '/Requests\/sec/ {print $2}')
    s2=$(curl -sf "http://127.0.0.1:$port/stats")
    python3 -c 'import json, sys; a = json.loads(sys.argv[1]); b = json.loads(sys.argv[2]); n = b["requests"] - a["requests"]; print(sys.argv[3], "\"" + sys.argv[4] + "\"", sys.argv[5], round((b["allocated_bytes"] - a["allocated_bytes"]) / n))' \
      "$s1" "$s2" "$r" "$config" "$rps"
    kill "$pid"; wait "$pid" 2>/dev/null
  done
done
