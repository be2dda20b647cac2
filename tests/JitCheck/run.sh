#!/usr/bin/env bash
# Publishes JitCheck for linux-arm64, runs it under qemu-aarch64-static once per emulated CPU model (and once with the
# runtime's LSE atomics switched off) with DOTNET_JitDisasm on PageCore's transitions, then runs check.py on the dumps.
# Usage: tests/JitCheck/run.sh [outdir]   (default artifacts/jitcheck). Needs: qemu-user-static, libc6-arm64-cross,
# libstdc++6-arm64-cross, libgcc-s1-arm64-cross (apt-get), python3. Exit: check.py's status (0 all ok, 1 a failure).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/artifacts/jitcheck}"
pub="$out/publish"
mkdir -p "$out"
command -v qemu-aarch64-static >/dev/null || { echo "jitcheck: qemu-aarch64-static missing (apt-get install qemu-user-static)" >&2; exit 2; }
[ -d /usr/aarch64-linux-gnu/lib ] || { echo "jitcheck: /usr/aarch64-linux-gnu missing (apt-get install libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross)" >&2; exit 2; }
dotnet publish "$here/JitCheck.csproj" -c Release -r linux-arm64 --self-contained -o "$pub" -nologo -v q >/dev/null
# Method patterns: Class:Method, matched on the class name with or without namespace.
methods="*PageRef:* *PageCaches:EnterAsymmetric *PageCaches:EnterSymmetric *PageCaches:LeaveOwner *PageCaches:AnnounceSteal"
methods+=" *FrameAllocator:* *EpochDomain:Enter *EpochDomain:Announce *EpochDomain:ScanFence *EpochDomain:Exit *Sequences:* *Scratch:*"
# name | qemu -cpu | extra runtime knobs
configs=(
  "max|max|"
  "max-noLSE|max|DOTNET_EnableArm64Atomics=0"
  "max-noRCPC|max|DOTNET_EnableArm64Rcpc=0 DOTNET_EnableArm64Rcpc2=0"
  "neoverse-n1|neoverse-n1|"
  "cortex-a76|cortex-a76|"
  "a64fx|a64fx|"
  "cortex-a72|cortex-a72|"
  "cortex-a57|cortex-a57|"
)
for c in "${configs[@]}"; do
  IFS='|' read -r name cpu knobs <<<"$c"
  rm -f "$out/disasm-$name.txt"
  # shellcheck disable=SC2086
  env QEMU_LD_PREFIX=/usr/aarch64-linux-gnu DOTNET_EnableWriteXorExecute=0 DOTNET_TieredCompilation=0 \
      DOTNET_JitStdOutFile="$out/disasm-$name.txt" DOTNET_JitDisasm="$methods" $knobs \
      qemu-aarch64-static -cpu "$cpu" "$pub/JitCheck" >"$out/run-$name.log" 2>&1 \
    || { echo "jitcheck: $name: JitCheck failed, see $out/run-$name.log" >&2; cat "$out/run-$name.log" >&2; exit 2; }
done
args=()
for c in "${configs[@]}"; do args+=("${c%%|*}=$out/disasm-${c%%|*}.txt"); done
python3 "$here/check.py" --self-test "${args[@]}"
python3 "$here/check.py" --markdown "$out/table.md" "${args[@]}"
