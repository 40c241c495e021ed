#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created on first use), on two pytest-xdist
# workers that take one test file at a time (tests/conftest.py orders the files and shares the cores).
# Arguments go to pytest; `-n 0` runs in one process. `--record-time FILE`, given first, also writes the
# run's wall time and exit code to FILE, a CSV that the README can cite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
record=""
if [ "${1:-}" = --record-time ]; then
    record="$(realpath -m "${2:?--record-time needs a file}")"
    shift 2
fi
source "$root/scripts/setup_env.sh"
cd "$root"
started=$SECONDS
status=0
python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@" || status=$?
if [ -n "$record" ]; then
    printf '%s\n' "command,seconds,exit_code" "bash scripts/test.sh,$((SECONDS - started)),$status" > "$record"
fi
exit "$status"
