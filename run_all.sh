#!/usr/bin/env bash
# Run the whole study with papermill, in order: preprocess; base 64, SR1 and SR2 with and without
# Swin; single-stage 256; the pipeline (generation); the evaluation notebooks.
#
#   bash run_all.sh [--preset PRESET] [--mrnet-root DIR] [--all-slices] [--only PART[,PART...]]
#                   [--retrain] [--device DEVICE] [--gpus N] [--out DIR] [--results DIR] [--tuning-exams N]
#                   [--eval-slices N]
#
# Parts: preprocess, each stage the study trains (base64, sr1, sr2, single256: the library's
# `python -m mrnet_utils study-runs`), pipeline, evaluation; and, only when --only names them, swin
# (the Swin question: SR stages in four arms x three seeds, evaluation/swin_question.ipynb), labels
# (a label-conditional base stage, its guided samples read by a label probe, and the probe trained on
# real and synthetic slices, evaluation/labels.ipynb) and realism (the phantom against real exams,
# scripts/phantom_vs_real.py; needs --mrnet-root). swin and labels need the preprocessed data.
# With no --mrnet-root (or $MRNET_ROOT) the study runs on the synthetic phantom.
# Under --out (default: this folder): executed notebooks in runs/<preset>/, each also rendered to HTML next
# to it; tables, figures and the evaluation notebooks' HTML in evaluation/results/<preset>/ (or --results
# DIR); checkpoints in savepoints/<preset>/; data in data/.
# --all-slices keeps every slice of each series instead of the preset's central ones (few real exams);
# --tuning-exams N sets aside N valid exams for tuning instead of the preset's number (0 when the
# samplers were chosen on other data, as for the 18-exam real sample); --eval-slices N scores N held-out
# slices, evenly spread over the reported exams, in the SR evaluation and the Swin question instead of all.
# A model whose final checkpoint exists is not retrained unless --retrain is given; an interrupted one
# continues from its newest checkpoint.
# --device (cpu, cuda, cuda:N) is where every notebook trains, samples and evaluates; default: the GPU if
# there is one. --gpus N trains each model with torchrun, one process per GPU of this machine
# (`python -m mrnet_utils train --resume` into the run folder its notebook uses, which then finds it trained).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    sed -n '5,7p' "$0" | sed 's/^# //' >&2
    exit 2
}

preset=demo
mrnet_root="${MRNET_ROOT:-}"
only=""
retrain=False
out="$root"
results=""
all_slices=False
tuning=""
eval_slices=""
device=""
gpus=1
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) preset="${2:?--preset needs a value}"; shift 2 ;;
        --mrnet-root) mrnet_root="${2:?--mrnet-root needs a folder}"; shift 2 ;;
        --only) only="${2:?--only needs a stage}"; shift 2 ;;
        --retrain) retrain=True; shift ;;
        --out) out="${2:?--out needs a folder}"; shift 2 ;;
        --results) results="${2:?--results needs a folder}"; shift 2 ;;
        --all-slices) all_slices=True; shift ;;
        --tuning-exams) tuning="${2:?--tuning-exams needs a number}"; shift 2 ;;
        --eval-slices) eval_slices="${2:?--eval-slices needs a number}"; shift 2 ;;
        --device) device="${2:?--device needs a value}"; shift 2 ;;
        --gpus) gpus="${2:?--gpus needs a number}"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "error: unknown argument $1" >&2; usage ;;
    esac
done
if [ -n "$device" ] && ! [[ "$device" =~ ^(cpu|cuda(:[0-9]+)?)$ ]]; then
    echo "error: --device must be cpu, cuda or cuda:N (not '$device')" >&2
    exit 2
fi
if [ -n "$eval_slices" ] && ! [[ "$eval_slices" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --eval-slices must be a positive number of slices (not '$eval_slices')" >&2
    exit 2
fi
if [ -n "$tuning" ] && ! [[ "$tuning" =~ ^[0-9]+$ ]]; then
    echo "error: --tuning-exams must be a number of exams (not '$tuning')" >&2
    exit 2
fi
if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --gpus must be a positive number of GPUs (not '$gpus')" >&2
    exit 2
fi
if [[ "$preset" == full || "$preset" == reference ]] && [ -z "$mrnet_root" ]; then
    echo "warning: the $preset preset is meant for real MRNet on a GPU (hours of training); running it on the phantom" >&2
fi

absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
out="$(absolute "$out")"
runs="$out/runs/$preset"
results="$(absolute "${results:-$out/evaluation/results/$preset}")"

source "$root/scripts/setup_env.sh"

presets="$(python -m mrnet_utils presets)"
grep -qx "$preset" <<<"$presets" || {
    echo "error: --preset must be one of: $(tr '\n' ' ' <<<"$presets")(not '$preset')" >&2
    exit 2
}
# The runs the study trains, "stage use_swin process run_name" per line, from the library (study.layout.study_runs).
mapfile -t study_runs < <(python -m mrnet_utils study-runs)
trained_stages=()
for run in "${study_runs[@]}"; do
    stage="${run%% *}"
    [[ " ${trained_stages[*]} " == *" $stage "* ]] || trained_stages+=("$stage")
done
parts=(preprocess "${trained_stages[@]}" pipeline evaluation)
optional=(swin labels realism)  # run only when --only names them
for part in ${only//,/ }; do
    if [[ " ${parts[*]} ${optional[*]} " != *" $part "* ]]; then
        echo "error: --only $part is not a part of the study; choose from: ${parts[*]} ${optional[*]}" >&2
        exit 2
    fi
done
if [[ ",$only," == *",realism,"* ]] && [ -z "$mrnet_root" ]; then
    echo "error: --only realism compares the phantom with real exams: give --mrnet-root (e.g. the 18-exam sample)" >&2
    exit 2
fi
mkdir -p "$runs"

# Parameters every notebook takes; paths are passed raw (-r) so that papermill never reads them as numbers.
common=(-p PRESET "$preset" -r OUT_DIR "$out" -r RESULTS_DIR "$results")
quiet=(-p PROGRESS False)  # no progress bars in the rendered notebooks
held_out=()
[ -n "$tuning" ] && held_out=(-p TUNING_EXAMS "$tuning")
scored=()  # the SR evaluation's held-out slices
[ -n "$eval_slices" ] && scored=(-p EVAL_SLICES "$eval_slices")
on_device=()  # for the notebooks that train, sample or evaluate
[ -n "$device" ] && on_device=(-r DEVICE "$device")
executed=()  # rendered notebooks, for export_html
timings=()  # "notebook,seconds" per notebook run, for study_times.csv

wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
named() { [[ ",$only," == *",$1,"* ]]; }

# run_notebook SOURCE RENDERED [papermill parameter options...]
run_notebook() {
    local source="$1" rendered="$runs/$2"
    shift 2
    local log="${rendered%.ipynb}.log" started=$SECONDS
    echo "[$(date +%H:%M:%S)] $source -> ${rendered#"$out"/}"
    executed+=("$rendered")
    # The kernel starts in the notebook's folder, where its default OUT_DIR=".." is the repository.
    if ! papermill "$root/$source" "$rendered" --cwd "$(dirname "$root/$source")" --kernel "$kernel_name" \
        --no-progress-bar "${common[@]}" "$@" >"$log" 2>&1; then
        echo "error: notebook $source failed:" >&2
        python - "$rendered" "$log" >&2 <<'EOF'
import sys
from pathlib import Path

import nbformat

rendered, log = map(Path, sys.argv[1:])
errors = []
if rendered.exists():
    cells = nbformat.read(rendered, as_version=4).cells
    errors = [f"{o.ename}: {o.evalue}" for c in cells for o in c.get("outputs", []) if o.output_type == "error"]
# No error cell: the kernel died or papermill failed before running a cell; its log says why.
print("  " + ("\n  ".join(errors) if errors else "\n  ".join(log.read_text().splitlines()[-15:])))
EOF
        export_html >&2
        echo "the rendered notebook is kept for inspection: $rendered (as HTML: ${rendered%.ipynb}.html; papermill log: $log)" >&2
        exit 1
    fi
    echo "           done in $((SECONDS - started)) s"
    timings+=("$(basename "$rendered" .ipynb),$((SECONDS - started))")
}

# export_html: every notebook executed so far to self-contained HTML next to it (mrnet_utils.study.notebooks).
export_html() {
    python -m mrnet_utils export-html "${executed[@]}" >/dev/null || echo "warning: the HTML export failed" >&2
}

# train_on_gpus STAGE USE_SWIN PROCESS RUN_NAME: the run trained by torchrun on $gpus processes, resumed
# from its newest checkpoint, in the run folder and on the slice cache the notebooks use (study.layout.StudyPaths).
train_on_gpus() {
    local run_dir="$out/savepoints/$preset/$4" log="$runs/01_train_$4.torchrun.log" started=$SECONDS
    local options=(--stage "$1" --preset "$preset" --data "$out/data/$preset/slices_coronal.npz" --out "$run_dir" --resume)
    [ "$2" = False ] && options+=(--no-swin)
    [ "$3" != None ] && options+=(--process "$3")
    [ "$retrain" = True ] && rm -rf -- "$run_dir"
    echo "[$(date +%H:%M:%S)] torchrun on $gpus processes: $4 -> ${log#"$out"/}"
    if ! torchrun --standalone --nproc_per_node "$gpus" -m mrnet_utils train "${options[@]}" >"$log" 2>&1; then
        echo "error: training $4 with torchrun failed; its log ends:" >&2
        tail -n 15 "$log" | sed 's/^/  /' >&2
        exit 1
    fi
    echo "           done in $((SECONDS - started)) s"
}

if wanted preprocess; then
    data_options=()
    [ -n "$mrnet_root" ] && data_options=(-r MRNET_ROOT "$(absolute "$mrnet_root")")
    run_notebook notebooks/00_preprocess.ipynb 00_preprocess.ipynb "${quiet[@]}" "${data_options[@]}" \
        -p ALL_SLICES "$all_slices"
fi
for run in "${study_runs[@]}"; do
    read -r stage use_swin process name <<<"$run"
    wanted "$stage" || continue
    notebook_retrain="$retrain"
    if [ "$gpus" -gt 1 ]; then
        train_on_gpus "$stage" "$use_swin" "$process" "$name"
        notebook_retrain=False  # trained: the notebook finds the final checkpoint and draws its figures
    fi
    run_notebook notebooks/01_train_stage.ipynb "01_train_$name.ipynb" "${quiet[@]}" "${on_device[@]}" \
        -p STAGE "$stage" -p USE_SWIN "$use_swin" -p PROCESS "$process" -p RETRAIN "$notebook_retrain"
done
if wanted pipeline; then
    run_notebook notebooks/02_pipeline.ipynb 02_pipeline.ipynb "${quiet[@]}" "${held_out[@]}" "${on_device[@]}"
fi
if wanted evaluation; then
    run_notebook evaluation/sr_vs_interpolation.ipynb 03_sr_vs_interpolation.ipynb "${quiet[@]}" "${held_out[@]}" \
        "${scored[@]}" "${on_device[@]}"
    run_notebook evaluation/generation.ipynb 04_generation.ipynb "${held_out[@]}"
fi
if named swin; then
    run_notebook evaluation/swin_question.ipynb 05_swin_question.ipynb "${quiet[@]}" "${held_out[@]}" "${scored[@]}" \
        "${on_device[@]}"
    mkdir -p "$results"  # its wall time, a file the README can cite
    printf '%s\n' "notebook,seconds" "${timings[-1]}" > "$results/swin_question_time.csv"
fi
if named labels; then
    run_notebook evaluation/labels.ipynb 06_labels.ipynb "${quiet[@]}" "${held_out[@]}" "${on_device[@]}"
    mkdir -p "$results"
    printf '%s\n' "notebook,seconds" "${timings[-1]}" > "$results/labels_time.csv"
fi
if named realism; then
    echo "[$(date +%H:%M:%S)] scripts/phantom_vs_real.py"
    python "$root/scripts/phantom_vs_real.py" --mrnet-root "$(absolute "$mrnet_root")" --out "$out/evaluation/results"
fi
export_html
if wanted evaluation; then  # the pages to read beside the tables they wrote
    mkdir -p "$results"
    cp "$runs/03_sr_vs_interpolation.html" "$results/sr_vs_interpolation.html"
    cp "$runs/04_generation.html" "$results/generation.html"
fi
if [ -z "$only" ]; then  # a whole study: its wall time per notebook, a file the README can cite
    mkdir -p "$results"
    printf '%s\n' "notebook,seconds" "${timings[@]}" "total,$SECONDS" > "$results/study_times.csv"
fi
echo "study ($preset) finished in $((SECONDS / 60)) min $((SECONDS % 60)) s; notebooks in $runs (and as HTML), results in $results"
