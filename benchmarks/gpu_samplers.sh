#!/usr/bin/env bash
# The sampler comparison (benchmarks/bench_samplers.py) on a lent GPU, on trained checkpoints,
# with more samples than a CPU run can afford, twice: as sampling runs by default (bf16 autocast)
# and in strict fp32. Side by side, the two show what bf16 does to trained models' samples.
#
#   OUT=DIR bash benchmarks/gpu_samplers.sh CHECKPOINTS CACHE [bench_samplers options]
#
# CHECKPOINTS: folder of <stage>_swin/final.pt (run_all.sh's savepoints/demo); CACHE: a slice
# cache whose valid split is used (data/demo/slices_coronal.npz). Options after these two go to
# bench_samplers and override the defaults below (e.g. --stages base64 --samplers ddpm:250).
# PRECISIONS="config" runs the bf16 pass only. Like gpu_check.sh it needs an installed torch only:
# other packages come from $PWD/.gpu_deps when that folder exists.
# Writes $OUT/samplers_bf16.md and $OUT/samplers_fp32.md (and their logs); on the demo checkpoints it
# took 342 s on one H200 (each run is cut at 200 s).
set -uo pipefail
checkpoints="${1:?usage: OUT=DIR bash benchmarks/gpu_samplers.sh CHECKPOINTS CACHE}"
cache="${2:?usage: OUT=DIR bash benchmarks/gpu_samplers.sh CHECKPOINTS CACHE}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -d .gpu_deps ]]; then
    export PYTHONPATH="$PWD/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
OUT="${OUT:-$PWD/runs/gpu_samplers}"
mkdir -p "$OUT"
status=0
shift 2
for precision in ${PRECISIONS:-config fp32}; do
    name=$([[ $precision == config ]] && echo bf16 || echo fp32)
    timeout 200 "$PYTHON" -m benchmarks.bench_samplers --device cuda --precision "$precision" \
        --checkpoints "$checkpoints" --data "$cache" --sr-images 48 --base-images 256 --single-images 64 \
        --batch-size 64 --results "$OUT/samplers_$name.md" "$@" > "$OUT/samplers_$name.log" 2>&1
    code=$?
    echo "$name: exit $code after $SECONDS s"
    (( code == 0 )) || { status=$code; tail -20 "$OUT/samplers_$name.log"; }
done
exit $status
