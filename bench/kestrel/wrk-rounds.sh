#!/usr/bin/env bash
# Kestrel's own buffer pool against the PageCore pool, under wrk, in alternating rounds in one run.
#
#   bash bench/kestrel/wrk-rounds.sh [--rounds 3] [--duration 10] [--warmup 2] [--decay 5] [--threads 2]
#                                    [--connections 32] [--pool both|kestrel|pagecore] [--checked] [--out FILE]
#                                    [--no-build]
#
# Builds bench/PageCore.KestrelBench in Release once; then, each round, starts one server per pool (kestrel then
# pagecore in odd rounds, pagecore then kestrel in even ones) on a free port and runs three loads against it:
#   plaintext  GET /plaintext
#   echo64k    POST /echo with a 64 KiB body (echo-64k.lua)
#   bytes1m    GET /bytes/1048576
# each with `wrk -t2 -c32 -d<duration>s --latency` after a <warmup> s wrk warm-up of the same load. /stats is read
# before and after each load (requests served, allocated bytes per request, GC counts). After the loads: RSS, then
# 2 x <decay> + 3 s idle (the same for both pools), POST /collect (a full compacting GC), RSS again ("after decay"). Each server's responses are
# checked with curl (echo with Content-Length and chunked, the /bytes pattern) before and after its loads; the
# pagecore server's arena is verified (POST /verify) when it is idle at the end.
#
# --checked runs the pagecore server with PageMemoryPoolOptions.Checked = true (a correctness run; its pool is named
# pagecore-checked in the results). --decay sets PageArenaOptions.ReturnFreeMemoryAfter (Kestrel's own pool evicts on
# its fixed 10 s schedule whatever --decay says).
#
# Writes one CSV row per measurement to --out (default bench/results/kestrel-<date>.csv), one row per server to
# <out>-servers.csv, keeps the log of every server that wrote anything as <out>-<round>-<pool>.log, and prints a
# Markdown summary (bench/kestrel/summarize.py). Exits 1 when a correctness check failed, a server exited with an
# error, or a server logged a warning or an error.
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/../.." && pwd)"
cd "$ROOT"

ROUNDS=3
DURATION=10
WARMUP=2
DECAY=5
THREADS=2
CONNECTIONS=32
POOL_CHOICE=both
CHECKED=0
OUT=""
BUILD=1

usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --decay) DECAY="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --pool) POOL_CHOICE="$2"; shift 2 ;;
        --checked) CHECKED=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for v in ROUNDS DURATION THREADS CONNECTIONS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "--${v,,} must be a positive integer" >&2; exit 2; }
done
[[ "$WARMUP" =~ ^[0-9]+$ ]] || { echo "--warmup must be a whole number of seconds" >&2; exit 2; }
[[ "$DECAY" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "--decay must be a number of seconds" >&2; exit 2; }
case "$POOL_CHOICE" in
    both) POOLS=(kestrel pagecore) ;;
    kestrel|pagecore) POOLS=("$POOL_CHOICE") ;;
    *) echo "--pool must be both, kestrel or pagecore" >&2; exit 2 ;;
esac
for tool in wrk curl python3 dotnet cmp; do
    command -v "$tool" >/dev/null || { echo "$tool is not on PATH" >&2; exit 2; }
done

STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="${OUT:-bench/results/kestrel-$STAMP.csv}"
OUT_BASE="${OUT%.csv}"
SERVERS_OUT="$OUT_BASE-servers.csv"
mkdir -p "$(dirname "$OUT")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kestrel-bench.XXXXXX")"
DLL="$ROOT/bench/PageCore.KestrelBench/bin/Release/net10.0/PageCore.KestrelBench.dll"
LUA="$ROOT/bench/kestrel/echo-64k.lua"
SERVER_PID=""
SERVER_PORT=""
PROBLEMS=0
ROWS=()

stop_server() { # stop_server [grace seconds]: TERM, then KILL after the grace; sets SERVER_EXIT
    SERVER_EXIT=""
    [[ -n "$SERVER_PID" ]] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local waited=0
        while kill -0 "$SERVER_PID" 2>/dev/null && (( waited < ${1:-15} * 10 )); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server $SERVER_PID did not stop in ${1:-15} s; killing it" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    SERVER_EXIT=0
    wait "$SERVER_PID" 2>/dev/null || SERVER_EXIT=$?
    SERVER_PID=""
}

cleanup() {
    local rc=$?
    stop_server 5 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# stats PREFIX: reads /stats into shell variables PREFIX_<key> (numbers and booleans only).
stats() {
    local json
    json="$(curl -sf --max-time 10 "http://127.0.0.1:$SERVER_PORT/stats")" || { echo "GET /stats failed" >&2; return 1; }
    eval "$(python3 -c '
import json, sys
d = json.loads(sys.argv[2])
for k, v in d.items():
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, (int, float)):
        print(f"{sys.argv[1]}_{k}={v}")
' "$1" "$json")"
}

# parse_wrk FILE: prints "rps p50_ms p99_ms socket_errors non2xx" from wrk's output (rps 0 when wrk printed none).
parse_wrk() {
    python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}[unit]
m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
rps = float(m.group(1)) if m else 0.0
lat = {}
for q, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
    lat[q] = ms(v, u)
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
sock = sum(int(x) for x in m.groups()) if m else 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
non2xx = int(m.group(1)) if m else 0
print(f"{rps:.2f} {lat.get('50', float('nan')):.3f} {lat.get('99', float('nan')):.3f} {sock} {non2xx}")
PY
}

# check_responses LABEL: echo (Content-Length and chunked) and the /bytes pattern, with curl; counts failures.
check_responses() {
    local base="http://127.0.0.1:$SERVER_PORT" failed=0
    curl -sf --max-time 30 --data-binary @"$WORK/body" "$base/echo" -o "$WORK/echo.out" \
        && cmp -s "$WORK/echo.out" "$WORK/body" || { echo "  CHECK FAILED ($1): POST /echo with Content-Length" >&2; failed=$((failed + 1)); }
    curl -sf --max-time 30 -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/body" "$base/echo" -o "$WORK/echo.out" \
        && cmp -s "$WORK/echo.out" "$WORK/body" || { echo "  CHECK FAILED ($1): POST /echo chunked" >&2; failed=$((failed + 1)); }
    curl -sf --max-time 30 "$base/bytes/1048576" -o "$WORK/bytes.out" \
        && cmp -s "$WORK/bytes.out" "$WORK/pattern" || { echo "  CHECK FAILED ($1): GET /bytes/1048576" >&2; failed=$((failed + 1)); }
    curl -sf --max-time 30 "$base/bytes/1000" -o "$WORK/bytes.out" \
        && cmp -s "$WORK/bytes.out" <(head -c 1000 "$WORK/pattern") || { echo "  CHECK FAILED ($1): GET /bytes/1000" >&2; failed=$((failed + 1)); }
    SERVER_FAILED_CHECKS=$((SERVER_FAILED_CHECKS + failed))
}

mb() { python3 -c "print(f'{int(\"$1\") / 1048576:.1f}')"; }

if (( BUILD )); then
    echo "building bench/PageCore.KestrelBench (Release)..."
    dotnet build bench/PageCore.KestrelBench -c Release -nologo -v q -clp:ErrorsOnly >"$WORK/build.log" 2>&1 \
        || { cat "$WORK/build.log" >&2; echo "build failed" >&2; exit 1; }
fi
[[ -f "$DLL" ]] || { echo "$DLL is missing (build it, or drop --no-build)" >&2; exit 1; }

head -c 65536 /dev/urandom >"$WORK/body"
python3 -c 'import sys; sys.stdout.buffer.write(bytes(((i * 31 + 7) & 255) for i in range(1 << 20)))' >"$WORK/pattern"

echo "round,pool,load,rps,p50_ms,p99_ms,socket_errors,non2xx,alloc_bytes_per_req,gen0,gen1,gen2,rss_load_mb,rss_after_decay_mb" >"$OUT"
echo "round,pool,port,exit_code,log_problems,failed_checks,requests,fallback_rents,free_pages_after_decay,page_count,verify,rss_peak_mb,bug_reports,returned_mb" >"$SERVERS_OUT"

# A chunk freed just after a pass is returned at most 1.5 x decay later (passes every decay/4): wait 2 x decay + 3 s.
DECAY_WAIT="$(python3 -c "print(2 * $DECAY + 3)")"
echo "$(date -Is)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') + $(git status --porcelain -uall -- src 2>/dev/null | wc -l) uncommitted file(s) in src" \
    " dotnet $(dotnet --version)  $(nproc) cpus  $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "rounds $ROUNDS, pools ${POOLS[*]}$( ((CHECKED)) && echo ' (pagecore checked)'), wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency," \
    "warm-up ${WARMUP} s per load, decay ${DECAY} s, idle ${DECAY_WAIT} s before the RSS after decay"
echo "results: $OUT"

LOADS=(plaintext echo64k bytes1m)

for ((round = 1; round <= ROUNDS; round++)); do
    order=("${POOLS[@]}")
    if (( round % 2 == 0 && ${#POOLS[@]} == 2 )); then
        order=("${POOLS[1]}" "${POOLS[0]}")
    fi
    for pool in "${order[@]}"; do
        label="$pool"
        server_args=(--pool "$pool" --decay "$DECAY")
        if [[ "$pool" == pagecore ]] && (( CHECKED )); then
            label=pagecore-checked
            server_args+=(--checked)
        fi
        SERVER_PORT="$(free_port)"
        log="$WORK/server-$round-$label.log"
        echo "round $round/$ROUNDS: $label on port $SERVER_PORT"
        dotnet "$DLL" "${server_args[@]}" --port "$SERVER_PORT" >"$log" 2>&1 &
        SERVER_PID=$!
        SERVER_FAILED_CHECKS=0
        for ((i = 0; i < 150; i++)); do
            curl -sf --max-time 2 "http://127.0.0.1:$SERVER_PORT/stats" -o /dev/null && break
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                stop_server
                echo "the $label server exited ($SERVER_EXIT) before answering; its output:" >&2
                cat "$log" >&2
                exit 1
            fi
            sleep 0.2
        done
        (( i < 150 )) || { echo "the $label server did not answer in 30 s; its output:" >&2; cat "$log" >&2; exit 1; }

        check_responses "$label, before the loads"
        for load in "${LOADS[@]}"; do
            case "$load" in
                plaintext) wrk_target=("http://127.0.0.1:$SERVER_PORT/plaintext") ;;
                echo64k) wrk_target=(-s "$LUA" "http://127.0.0.1:$SERVER_PORT/echo") ;;
                bytes1m) wrk_target=("http://127.0.0.1:$SERVER_PORT/bytes/1048576") ;;
            esac
            if (( WARMUP > 0 )); then
                wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${wrk_target[@]}" >/dev/null 2>&1 || true
            fi
            stats B
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${wrk_target[@]}" >"$WORK/wrk.out" 2>&1 \
                || echo "  wrk exited with an error (see below)" >&2
            stats A
            read -r rps p50 p99 sock non2xx < <(parse_wrk "$WORK/wrk.out")
            if [[ "$rps" == 0.00 ]]; then
                echo "  wrk printed no Requests/sec; its output:" >&2
                sed 's/^/    /' "$WORK/wrk.out" >&2
            fi
            served=$((A_requests - B_requests))
            alloc_per_req="$(python3 -c "print(round(($A_allocated_bytes - $B_allocated_bytes) / max($served, 1)))")"
            g0=$((A_gen0 - B_gen0)); g1=$((A_gen1 - B_gen1)); g2=$((A_gen2 - B_gen2))
            owners=""
            [[ -n "${A_owners_created:-}" ]] && owners="  pool owners created $((A_owners_created - B_owners_created))"
            printf '  %-9s %10s req/s  p50 %8s ms  p99 %8s ms  socket errors %s  non-2xx %s  %s B/req  gc %s/%s/%s%s\n' \
                "$load" "$rps" "$p50" "$p99" "$sock" "$non2xx" "$alloc_per_req" "$g0" "$g1" "$g2" "$owners"
            ROWS+=("$round,$label,$load,$rps,$p50,$p99,$sock,$non2xx,$alloc_per_req,$g0,$g1,$g2")
        done
        check_responses "$label, after the loads"

        stats L
        rss_load="$(mb "$L_rss_bytes")"
        sleep "$DECAY_WAIT"
        curl -sf --max-time 60 -X POST "http://127.0.0.1:$SERVER_PORT/collect" -o /dev/null || echo "  POST /collect failed" >&2
        stats D
        rss_decay="$(mb "$D_rss_bytes")"
        verify="-"
        if [[ "$pool" == pagecore ]]; then
            verify_json="$(curl -sf --max-time 60 -X POST "http://127.0.0.1:$SERVER_PORT/verify")" || verify_json=""
            verify="$(python3 -c '
import json, sys
try:
    d = json.loads(sys.argv[1])
except ValueError:
    print("no answer"); sys.exit()
print("clean" if d["clean"] else "VIOLATIONS: " + d["report"].replace("\n", " / ").replace(",", ";"))
' "$verify_json")"
            [[ "$verify" == clean ]] || echo "  arena verify: $verify" >&2
        fi
        echo "  RSS after the loads ${rss_load} MB, after ${DECAY_WAIT} s idle and a full GC ${rss_decay} MB" \
            "(peak $(mb "$D_rss_peak_bytes") MB)$([[ "$pool" == pagecore ]] && echo "; arena free ${D_free_pages}/${D_page_count} pages, fallback rents ${D_fallback_rents}, verify $verify, bug reports ${D_bug_reports}, returned $(mb "$D_bytes_returned") MB")"
        for row in "${ROWS[@]}"; do
            echo "$row,$rss_load,$rss_decay" >>"$OUT"
        done
        ROWS=()

        stop_server
        log_problems="$(grep -cE '^(warn|fail|crit):|Unhandled exception' "$log" || true)"
        echo "$round,$label,$SERVER_PORT,$SERVER_EXIT,$log_problems,$SERVER_FAILED_CHECKS,$D_requests,${D_fallback_rents:--},${D_free_pages:--},${D_page_count:--},$verify,$(mb "$D_rss_peak_bytes"),${D_bug_reports:--},$( [[ -n "${D_bytes_returned:-}" ]] && mb "$D_bytes_returned" || echo -)" >>"$SERVERS_OUT"
        if [[ -s "$log" ]]; then
            kept="$OUT_BASE-$round-$label.log"
            if (( $(stat -c %s "$log") > 1048576 )); then
                { head -c 524288 "$log"; printf '\n... [cut: %s lines in all; the start and the end are kept] ...\n' "$(wc -l <"$log")"; tail -c 262144 "$log"; } >"$kept"
            else
                cp "$log" "$kept"
            fi
            echo "  the server wrote to its console ($log_problems warnings/errors; log kept as $kept):"
            python3 "$ROOT/bench/kestrel/log-digest.py" "$log" | sed 's/^/    | /'
        fi
        if [[ "$SERVER_EXIT" != 0 ]]; then
            echo "  the $label server exited with $SERVER_EXIT (SIGTERM should give 0)" >&2
        fi
        if [[ "$SERVER_EXIT" != 0 || "$log_problems" != 0 || "$SERVER_FAILED_CHECKS" != 0 || ( "$verify" != - && "$verify" != clean ) || "${D_bug_reports:-0}" != 0 ]]; then
            PROBLEMS=$((PROBLEMS + 1))
        fi
        unset D_free_pages D_page_count D_fallback_rents D_bug_reports D_bytes_returned
    done
done

echo
python3 "$ROOT/bench/kestrel/summarize.py" "$OUT" "$SERVERS_OUT"
if (( PROBLEMS > 0 )); then
    echo
    echo "$PROBLEMS server run(s) had problems (failed checks, errors in the log, a bad exit or a dirty arena): see above." >&2
    exit 1
fi
