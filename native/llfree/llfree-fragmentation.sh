#!/usr/bin/env bash
# Fragmentation after a standard churn, PageCore next to LLFree-C on the same trace (docs/multicore.md).
#
#   native/llfree/llfree-fragmentation.sh LLFREE_C_DIR [--seed S] [other pagecore-bench --fragmentation options]
#
# LLFREE_C_DIR: a checkout of github.com/luhsra/llfree-c beside the project (git clone https://github.com/luhsra/llfree-c
# ../llfree-c); none of its code is in this repository. This script builds its static library there (make DEBUG=0,
# clang), builds llfree_replay.c against it, writes the trace with pagecore-bench --fragmentation (which replays it on
# PageCore and prints its rows), then replays the same trace on LLFree-C and prints its row.
# Needs: clang (clang-16 is taken when there is no plain clang), make, the .NET SDK.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ $# -lt 1 ] || [ ! -f "$1/include/llfree.h" ]; then
  echo "usage: $0 LLFREE_C_DIR [pagecore-bench --fragmentation options]" >&2
  echo "LLFREE_C_DIR must be a checkout of github.com/luhsra/llfree-c (include/llfree.h was not found in '${1:-}')" >&2
  exit 64
fi
llfree=$(cd "$1" && pwd)
shift
cc=$(command -v clang || command -v clang-16 || true)
[ -n "$cc" ] || { echo "$0: needs clang (apt-get install clang)" >&2; exit 69; }
work=${TMPDIR:-/tmp}/pagecore-llfree-frag
mkdir -p "$work"
make -C "$llfree" DEBUG=0 CC="$cc" -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -20 "$work/make.log" >&2; exit 1; }
"$cc" -std=c11 -O2 -DSTD -I "$llfree/include" -I "$llfree/std" -I "$llfree/src" "$here/llfree_replay.c" "$llfree/build/libllc.a" \
  -o "$work/llfree_replay"
echo "LLFree-C at $(git -C "$llfree" log -1 --format='%h %cs' 2>/dev/null || echo 'an unversioned copy'), built with $("$cc" --version | head -1)"
dotnet run -c Release --project "$root/bench/PageCore.Benchmarks" -- --fragmentation --trace "$work/trace.bin" "$@"
"$work/llfree_replay" "$work/trace.bin" 2>"$work/llfree.log"
