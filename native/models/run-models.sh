#!/usr/bin/env bash
# Model-checks the five rules of ARCHITECTURE.md with spin: each legacy model (-DLEGACY) must produce a counterexample
# trail, each fixed model must verify with no errors. Prints a table; exits 0 only when every row is as expected.
# Needs spin and a C compiler; says so and exits 2 when spin is missing (never skips silently).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v spin >/dev/null 2>&1; then
  echo "run-models: spin is not installed (Debian: apt-get install spin); nothing was checked"
  exit 2
fi
cc="${CC:-gcc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
printf '| model | form | expected | errors | states | trail | as expected |\n|---|---|---|---|---|---|---|\n'
for model in "$here"/rule*.pml; do
  name="$(basename "$model" .pml)"
  for form in legacy fixed; do
    dir="$work/$name-$form"
    mkdir -p "$dir"
    cp "$model" "$dir/model.pml"
    define=""
    [ "$form" = legacy ] && define="-DLEGACY"
    if ! (cd "$dir" && spin -a $define model.pml >spin.log 2>&1 && "$cc" -O2 -DSAFETY -o pan pan.c >cc.log 2>&1); then
      printf '| %s | %s | - | build failed | - | - | NO |\n' "$name" "$form"
      cat "$dir"/spin.log "$dir"/cc.log 2>/dev/null | head -5
      status=1
      continue
    fi
    (cd "$dir" && ./pan -m10000 >pan.log 2>&1)
    errors="$(sed -nE 's/.*errors: ([0-9]+).*/\1/p' "$dir/pan.log" | head -1)"
    states="$(sed -nE 's/^ *([0-9]+) states, stored.*/\1/p' "$dir/pan.log" | head -1)"
    trail="no"
    [ -f "$dir/model.pml.trail" ] && trail="yes"
    if [ "$form" = legacy ]; then
      expected="counterexample"
      ok=$([ "${errors:-0}" -gt 0 ] && [ "$trail" = yes ] && echo yes || echo NO)
    else
      expected="verified"
      ok=$([ "${errors:-1}" = 0 ] && [ "$trail" = no ] && echo yes || echo NO)
    fi
    [ "$ok" = yes ] || status=1
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$form" "$expected" "${errors:-?}" "${states:-?}" "$trail" "$ok"
    if [ "$form" = legacy ] && [ "$trail" = yes ] && [ -n "${SHOW_TRAILS:-}" ]; then
      (cd "$dir" && spin -t -p $define model.pml | head -40)
    fi
  done
done
if [ "$status" = 0 ]; then
  echo "run-models: every legacy model gave a counterexample and every fixed model verified"
else
  echo "run-models: some model did not behave as expected"
fi
exit "$status"
