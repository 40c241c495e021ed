#!/usr/bin/env bash
# Usage: bash run_all.sh [OPTION]...
#
# Run the study with papermill, in order: preprocess the data; train base 64, SR1 and SR2 with and
# without Swin, single-stage 256, base 64 distilled to a few steps and the SR stages' regression
# baselines; generate with each model (pipeline); evaluate (SR against interpolation, generation).
# Every notebook is kept as it ran in OUT/runs/PRESET/, also as a page to read (HTML).
#
# Options:
#   --preset NAME          smoke, demo, gpu, full or reference (default: demo)
#   --mrnet-root DIR       the unzipped MRNet-v1.0 folder (default: $MRNET_ROOT; unset, the synthetic
#                          phantom, written to OUT/data/phantom)
#   --volumes DIR          instead of MRNet: a folder of NIfTI, NRRD or MHA volumes or DICOM series folders,
#                          one per exam, split by DIR/exams.csv (exam,split[,abnormal,acl,meniscus]) or,
#                          without it, with the last 20% of the names valid (mrnet_utils.data.volumes)
#   --only PART[,PART...]  run only these parts (default: every part but the optional ones)
#   --retrain              train again the models whose final checkpoint exists (default: skip them; an
#                          interrupted one continues from its newest checkpoint)
#   --all-slices           keep every slice of each series, not the preset's central ones (few real exams)
#   --tuning-exams N       set aside N valid exams for tuning instead of the preset's number (0 when the
#                          samplers were chosen on other data)
#   --eval-slices N        score N held-out slices, spread over the reported exams, in the SR evaluation
#                          and the Swin question (default: all)
#   --degradation SPEC     how every lower resolution is made, in training and evaluation alike: image
#                          (anti-aliased halving; the default), pil (the reference's one-step resize) or
#                          kspace[,snr=S,window=W] (k-space truncation; mrnet_utils.data.degradation); use
#                          its own --out, since trained models and results follow it
#   --device DEVICE        cpu, cuda or cuda:N, for every notebook (default: the GPU if there is one)
#   --gpus N               train each model with torchrun on N GPUs of this machine (default: 1)
#   --out DIR              where data/, savepoints/, runs/ and results/ go (default: this folder, where
#                          git ignores them)
#   --results DIR          where the tables, figures and pages to read go (default: OUT/results/PRESET)
#   --refresh-results      write them into the committed record instead: evaluation/results/PRESET
#                          (evaluation/results/ for realism)
#   -h, --help             show this text and exit
#
# Parts: preprocess, base64, sr1, sr2, single256, pipeline, sr_evaluation (the SR tables; needs sr1
# and sr2), generation (the generation tables; needs pipeline); and, run only when --only names them:
# swin (the Swin question: the SR stages in four arms x the preset's seeds), labels (a label-conditional base
# stage, its guided samples read by a label probe) and realism (the phantom against real exams; needs
# --mrnet-root). swin and labels need the preprocessed data.
#
# A bad option stops the script before anything runs (one line on stderr, exit code 2); a failing
# notebook stops the run (exit code 1), naming the notebook and its error.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {  # the comment block above, without its comment marks
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
}
fail() {  # fail MESSAGE: a bad option, before anything runs
    echo "error: $1 (bash run_all.sh --help lists every option)" >&2
    exit 2
}
value() {  # value OPTION [VALUE]: VALUE, or a one-line error when it is missing
    [ $# -ge 2 ] && [ -n "$2" ] || fail "$1 needs a value"
    echo "$2"
}

preset=demo
mrnet_root=""
volumes=""
only=""
retrain=False
out="$root"
results=""
refresh=False
all_slices=False
tuning=""
eval_slices=""
degradation=image
device=""
gpus=1
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) preset="$(value "$@")"; shift 2 ;;
        --mrnet-root) mrnet_root="$(value "$@")"; shift 2 ;;
        --volumes) volumes="$(value "$@")"; shift 2 ;;
        --only) only="$(value "$@")"; shift 2 ;;
        --retrain) retrain=True; shift ;;
        --out) out="$(value "$@")"; shift 2 ;;
        --results) results="$(value "$@")"; shift 2 ;;
        --refresh-results) refresh=True; shift ;;
        --all-slices) all_slices=True; shift ;;
        --tuning-exams) tuning="$(value "$@")"; shift 2 ;;
        --eval-slices) eval_slices="$(value "$@")"; shift 2 ;;
        --degradation) degradation="$(value "$@")"; shift 2 ;;
        --device) device="$(value "$@")"; shift 2 ;;
        --gpus) gpus="$(value "$@")"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) fail "unknown option $1" ;;
    esac
done
[ -n "$volumes" ] && [ -n "$mrnet_root" ] && fail "--volumes and --mrnet-root are two sources of exams; give one"
[ -z "$volumes" ] && [ -z "$mrnet_root" ] && mrnet_root="${MRNET_ROOT:-}"
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
if [[ "$preset" == full || "$preset" == reference ]] && [ -z "$mrnet_root$volumes" ]; then
    echo "warning: the $preset preset is meant for real MRNet on a GPU (hours of training); running it on the phantom" >&2
fi

absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
out="$(absolute "$out")"
runs="$out/runs/$preset"
# The tables and figures: git-ignored under OUT unless asked to refresh the committed record.
results_root="$out/results"
[ "$refresh" = True ] && results_root="$root/evaluation/results"
results="$(absolute "${results:-$results_root/$preset}")"

source "$root/scripts/setup_env.sh"

presets="$(python -m mrnet_utils presets)"
grep -qx "$preset" <<<"$presets" || {
    echo "error: --preset must be one of: $(tr '\n' ' ' <<<"$presets")(not '$preset')" >&2
    exit 2
}
# the degradation's text read as the notebooks will read it, before anything runs (one line if it is bad)
python -c 'import sys
from mrnet_utils.data.degradation import Degradation
from mrnet_utils.errors import MRNetError
try:
    Degradation.parse(sys.argv[1])
except MRNetError as error:
    print(f"error: --degradation: {error}", file=sys.stderr)
    sys.exit(2)' "$degradation"
# The runs the study trains, "stage use_swin process run_name teacher" per line, from the library
# (study.layout.study_runs); teacher: the run a distilled generator learns from, else None.
mapfile -t study_runs < <(python -m mrnet_utils study-runs)
trained_stages=()
for run in "${study_runs[@]}"; do
    stage="${run%% *}"
    [[ " ${trained_stages[*]} " == *" $stage "* ]] || trained_stages+=("$stage")
done
parts=(preprocess "${trained_stages[@]}" pipeline sr_evaluation generation)
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
common=(-p PRESET "$preset" -r OUT_DIR "$out" -r RESULTS_DIR "$results" -r DEGRADATION "$degradation")
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
print("  " + ("\n  ".join(errors) if errors else "\n  ".join(log.read_text(encoding="utf-8").splitlines()[-15:])))
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

# train_on_gpus STAGE USE_SWIN PROCESS RUN_NAME TEACHER: the run trained by torchrun on $gpus processes, resumed
# from its newest checkpoint, in the run folder and on the slice cache the notebooks use (study.layout.StudyPaths);
# with a TEACHER run, distilled from it round by round.
train_on_gpus() {
    local run_dir="$out/savepoints/$preset/$4" log="$runs/01_train_$4.torchrun.log" started=$SECONDS
    local data="$out/data/$preset/slices_coronal.npz"
    local options=(train --stage "$1" --preset "$preset" --data "$data" --out "$run_dir" --resume)
    [ "$2" = False ] && options+=(--no-swin)
    [ "$3" != None ] && options+=(--process "$3")
    [ "$5" != None ] && options=(distill --teacher "$out/savepoints/$preset/$5" --data "$data" --out "$run_dir" --resume)
    [ "$retrain" = True ] && rm -rf -- "$run_dir"
    echo "[$(date +%H:%M:%S)] torchrun on $gpus processes: $4 -> ${log#"$out"/}"
    if ! torchrun --standalone --nproc_per_node "$gpus" -m mrnet_utils "${options[@]}" >"$log" 2>&1; then
        echo "error: training $4 with torchrun failed; its log ends:" >&2
        tail -n 15 "$log" | sed 's/^/  /' >&2
        exit 1
    fi
    echo "           done in $((SECONDS - started)) s"
}

if wanted preprocess; then
    data_options=()
    [ -n "$mrnet_root" ] && data_options=(-r MRNET_ROOT "$(absolute "$mrnet_root")")
    [ -n "$volumes" ] && data_options=(-r VOLUMES "$(absolute "$volumes")")
    run_notebook notebooks/00_preprocess.ipynb 00_preprocess.ipynb "${quiet[@]}" "${data_options[@]}" \
        -p ALL_SLICES "$all_slices"
fi
# Every size the study needs, checked against the slice cache before the first training (study/sizes.py),
# unless only the data parts run.
beyond_data=False
for part in ${only//,/ }; do [[ "$part" == preprocess || "$part" == realism ]] || beyond_data=True; done
if [ -z "$only" ] || [ "$beyond_data" = True ]; then
    sizes=(--cache "$out/data/$preset/slices_coronal.npz" --preset "$preset")
    [ -n "$tuning" ] && sizes+=(--tuning-exams "$tuning")
    [ -n "$eval_slices" ] && sizes+=(--eval-slices "$eval_slices")
    python -m mrnet_utils check-study "${sizes[@]}" || exit 2
fi
for run in "${study_runs[@]}"; do
    read -r stage use_swin process name teacher <<<"$run"
    wanted "$stage" || continue
    notebook_retrain="$retrain"
    if [ "$gpus" -gt 1 ]; then
        train_on_gpus "$stage" "$use_swin" "$process" "$name" "$teacher"
        notebook_retrain=False  # trained: the notebook finds the final checkpoint and draws its figures
    fi
    run_notebook notebooks/01_train_stage.ipynb "01_train_$name.ipynb" "${quiet[@]}" "${on_device[@]}" \
        -p STAGE "$stage" -p USE_SWIN "$use_swin" -p PROCESS "$process" -p RETRAIN "$notebook_retrain"
done
if wanted pipeline; then
    run_notebook notebooks/02_pipeline.ipynb 02_pipeline.ipynb "${quiet[@]}" "${held_out[@]}" "${on_device[@]}"
fi
if wanted sr_evaluation; then
    run_notebook evaluation/sr_vs_interpolation.ipynb 03_sr_vs_interpolation.ipynb "${quiet[@]}" "${held_out[@]}" \
        "${scored[@]}" "${on_device[@]}"
fi
if wanted generation; then
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
    python "$root/scripts/phantom_vs_real.py" --mrnet-root "$(absolute "$mrnet_root")" --out "$results_root"
fi
export_html
# results_page NOTEBOOK PAGE: an evaluation notebook as a page to read beside the tables and figures it
# wrote, linking those figures instead of embedding them again.
results_page() {
    python -m mrnet_utils export-html "$runs/$1" --out "$results/$2" --link-figures >/dev/null ||
        echo "warning: the HTML export of $1 failed" >&2
}
if wanted sr_evaluation; then
    results_page 03_sr_vs_interpolation.ipynb sr_vs_interpolation.html
fi
if wanted generation; then
    results_page 04_generation.ipynb generation.html
fi
if named swin; then
    results_page 05_swin_question.ipynb swin_question.html
fi
if named labels; then
    results_page 06_labels.ipynb labels.html
fi
if [ -z "$only" ]; then  # a whole study: its wall time per notebook, a file the README can cite
    mkdir -p "$results"
    printf '%s\n' "notebook,seconds" "${timings[@]}" "total,$SECONDS" > "$results/study_times.csv"
fi
echo "study ($preset) finished in $((SECONDS / 60)) min $((SECONDS % 60)) s; notebooks in $runs (and as HTML), results in $results"
