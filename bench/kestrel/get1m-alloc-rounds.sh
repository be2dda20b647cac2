#!/usr/bin/env bash
# Ten alternating rounds of the 1 MiB GET alone, one fresh server per pool per round (2 s warm-up, 10 s of
# wrk -t2 -c32): prints "round pool req/s allocated-bytes-per-request" per server. For the allocation comparison of
# docs/kestrel.md; wrk-rounds.sh is the full comparison.
set -uo pipefail
cd "$(dirname "$0")/../.."
dotnet build bench/PageCore.KestrelBench -c Release -nologo -v q -clp:ErrorsOnly || exit 1
for r in $(seq 1 10); do
  if (( r % 2 )); then order="kestrel pagecore"; else order="pagecore kestrel"; fi
  for pool in $order; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    dotnet bench/PageCore.KestrelBench/bin/Release/net10.0/PageCore.KestrelBench.dll --pool "$pool" --port "$port" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/plaintext" >/dev/null && break; sleep 0.1; done
    wrk -t2 -c32 -d2s "http://127.0.0.1:$port/bytes/1048576" >/dev/null
    s1=$(curl -sf "http://127.0.0.1:$port/stats")
    rps=$(wrk -t2 -c32 -d10s "http://127.0.0.1:$port/bytes/1048576" | awk '/Requests\/sec/ {print $2}')
    s2=$(curl -sf "http://127.0.0.1:$port/stats")
    python3 -c 'import json, sys; a = json.loads(sys.argv[1]); b = json.loads(sys.argv[2]); n = b["requests"] - a["requests"]; print(sys.argv[3], sys.argv[4], sys.argv[5], round((b["allocated_bytes"] - a["allocated_bytes"]) / n))' \
      "$s1" "$s2" "$r" "$pool" "$rps"
    kill "$pid"; wait "$pid" 2>/dev/null
  done
done
