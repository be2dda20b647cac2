#!/usr/bin/env bash
# Model-checks every C11 client in native/weak/ with GenMC 0.10.3 under RC11 and IMM: each fixed form (the C# code's
# orderings) must verify, each legacy form (-DLEGACY, the historical algorithm) must be caught by an assertion. Prints a
# markdown table and ends with exactly one line "weak-memory: N verified, N caught, N unexpected"; exits 0 only when
# nothing was unexpected, 2 (with the reason) when GenMC or its run-time packages are missing: never skips silently.
#
# GenMC is found at $GENMC (the genmc script, or the folder holding it), else at ../shared/tools/genmc beside the
# repository (where CI's clean clones find it). Its run-time packages: that folder's install-deps.sh (root).
#
#   native/weak/run-weak.sh               the table (4 runs per client)
#   native/weak/run-weak.sh --extra       also, informational and not counted: each legacy form under SC and TSO (which
#                                         models catch it), and each fixed form with Interlocked as a bare seq_cst RMW
#   native/weak/run-weak.sh refcount ...  only the named clients
#   WEAK_TRACES=1                         print GenMC's error trace of every caught legacy run
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

extra=0
clients=()
for a in "$@"; do
  case "$a" in
    --extra) extra=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) clients+=("$a") ;;
  esac
done

missing() {
  echo "run-weak: $1; nothing was checked" >&2
  exit 2
}

genmc="${GENMC:-$(cd "$root/.." && pwd)/shared/tools/genmc}"
[ -d "$genmc" ] && genmc="$genmc/genmc"
if [ ! -x "$genmc" ]; then
  missing "GenMC not found at $genmc (set GENMC to the genmc script, or put GenMC 0.10.3 at ../shared/tools/genmc beside the repository)"
fi
bin="$(dirname "$genmc")/genmc-0.10.3.bin"
if [ -f "$bin" ] && command -v ldd >/dev/null 2>&1; then
  libs="$(ldd "$bin" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')"
  [ -n "$libs" ] && missing "GenMC's run-time libraries are missing (${libs% }); run $(dirname "$genmc")/install-deps.sh as root (Debian: clang-16 llvm-16 libz3-4 libffi8 libedit2)"
fi
if ! command -v clang-16 >/dev/null 2>&1 && [ ! -x /usr/bin/clang-16 ]; then
  missing "clang-16, which GenMC runs to compile each client, is not installed; run $(dirname "$genmc")/install-deps.sh as root"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '#include <assert.h>\n#include <pthread.h>\nint main(void) { assert(1); return 0; }\n' >"$work/smoke.c"
if ! "$genmc" --disable-estimation -- "$work/smoke.c" >"$work/smoke.log" 2>&1; then
  tail -5 "$work/smoke.log"
  missing "GenMC at $genmc does not run (see above); its run-time packages: $(dirname "$genmc")/install-deps.sh"
fi

if [ ${#clients[@]} -eq 0 ]; then
  for f in "$here"/*.c; do clients+=("$(basename "$f" .c)"); done
fi

# run CLIENT FORM MODEL [DEFINE]: one GenMC run; sets $result ("verified", "caught", or what else happened) and $detail.
run() {
  local client="$1" form="$2" model="$3" define="${4:-}"
  local log="$work/$client-$form-$model${define:+-bare}.log"
  # In-place revisiting (RC11) treats a warning (two writes unordered by happens-before) as an error; a form is caught
  # only by an assertion, so explore on to one (IMM has no in-place revisiting anyway).
  local flags=(--disable-estimation --disable-ipr)
  local defs=()
  [ "$form" = legacy ] && defs+=(-DLEGACY)
  [ -n "$define" ] && defs+=("$define")
  timeout "${WEAK_TIMEOUT:-300}" "$genmc" "--$model" "${flags[@]}" -- "${defs[@]}" "$here/$client.c" >"$log" 2>&1
  local rc=$?
  local execs
  execs="$(sed -nE 's/^Number of complete executions explored: ([0-9]+).*/\1/p' "$log" | tail -1)"
  if [ $rc = 0 ] && grep -q 'No errors were detected' "$log"; then
    result="verified"
    detail="${execs:-?} executions"
  elif [ $rc = 42 ] && grep -q '^Assertion violation: ' "$log"; then
    result="caught"
    detail="$(sed -nE 's/^Assertion violation: (.*)$/\1/p' "$log" | head -1 | sed 's/|/\\|/g')"
  elif [ $rc = 42 ]; then
    result="error"
    detail="$(grep -m1 -E '^Error' "$log" | sed 's/|/\\|/g')"
  elif [ $rc = 124 ]; then
    result="timeout"
    detail="over ${WEAK_TIMEOUT:-300} s"
  else
    result="failed"
    detail="genmc exited $rc"
  fi
  lastlog="$log"
}

verified=0 caught=0 unexpected=0
start=$SECONDS
printf '| client | form | model | expected | result | as expected |\n|---|---|---|---|---|---|\n'
for client in "${clients[@]}"; do
  if [ ! -f "$here/$client.c" ]; then
    printf '| %s | - | - | - | no such client | NO |\n' "$client"
    unexpected=$((unexpected + 1))
    continue
  fi
  for form in fixed legacy; do
    for model in rc11 imm; do
      run "$client" "$form" "$model"
      if [ "$form" = fixed ]; then expected=verified; else expected=caught; fi
      if [ "$result" = "$expected" ]; then
        ok=yes
        [ "$result" = verified ] && verified=$((verified + 1)) || caught=$((caught + 1))
      else
        ok=NO
        unexpected=$((unexpected + 1))
      fi
      printf '| %s | %s | %s | %s | %s (%s) | %s |\n' "$client" "$form" "$model" "$expected" "$result" "$detail" "$ok"
      if [ "$ok" = NO ] || { [ "$result" = caught ] && [ -n "${WEAK_TRACES:-}" ]; }; then
        echo
        echo '```'
        "$genmc" "--$model" --disable-estimation --disable-ipr --print-error-trace -- $([ "$form" = legacy ] && echo -DLEGACY) "$here/$client.c" 2>&1 | grep -v '^\s*$' | tail -60
        echo '```'
        echo
      fi
    done
  done
done

if [ $extra = 1 ]; then
  echo
  echo "Informational (not counted): each legacy form under SC and x86-TSO, and each fixed form with every Interlocked"
  echo "operation a bare C11 seq_cst RMW (-DINTERLOCKED_BARE: without the full fences .NET guarantees)."
  echo
  printf '| client | legacy sc | legacy tso | fixed, bare RMW, rc11 | fixed, bare RMW, imm |\n|---|---|---|---|---|\n'
  for client in "${clients[@]}"; do
    [ -f "$here/$client.c" ] || continue
    run "$client" legacy sc; a="$result"
    run "$client" legacy tso; b="$result"
    run "$client" fixed rc11 -DINTERLOCKED_BARE; c="$result${detail:+ ($detail)}"
    run "$client" fixed imm -DINTERLOCKED_BARE; d="$result${detail:+ ($detail)}"
    printf '| %s | %s | %s | %s | %s |\n' "$client" "$a" "$b" "$c" "$d"
  done
fi

echo
echo "run-weak: ${#clients[@]} clients, $((SECONDS - start)) s"
echo "weak-memory: $verified verified, $caught caught, $unexpected unexpected"
[ $unexpected = 0 ]
