#!/usr/bin/env bash
# The GPU check in one go (see benchmarks/gpu_check.py): bf16 vs fp32, host syncs while sampling,
# channels_last, training and sampling throughput of the paper networks, then torch.compile
# on its own time limit. Needs the repository and an installed torch, nothing else and no
# network: other packages come from $PWD/.gpu_deps when that folder exists. Results go to
# $OUT (default runs/gpu_check, git-ignored): gpu_check.md, gpu_check.json, gpu_check_errors.txt.
# Sized to finish in under 6 minutes on one H100.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -d .gpu_deps ]]; then
    export PYTHONPATH="$PWD/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # mrnet_utils and benchmarks, uninstalled
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
OUT="${OUT:-$PWD/runs/gpu_check}"
mkdir -p "$OUT"
start=$SECONDS

# Main phases: none starts after 200 s; killed at 270 s at the latest (what is done is already in $OUT).
timeout 270 "$PYTHON" -m benchmarks.gpu_check --out "$OUT/main" --budget-s 200 "$@"
status=$?
echo "main phases: exit $status after $((SECONDS - start)) s"

# torch.compile last, on what time is left (compiling the paper UNet takes a minute or two).
left=$((330 - (SECONDS - start)))
if (( left > 60 )); then
    timeout "$left" "$PYTHON" -m benchmarks.gpu_check --out "$OUT/compile" --only "training under torch.compile" \
        --compile --budget-s 60 "$@"
    echo "compile phase: exit $? after $((SECONDS - start)) s"
else
    echo "compile phase: skipped, ${left} s left"
fi
exit $status
