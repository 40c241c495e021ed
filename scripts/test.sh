#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created on first use), on two pytest-xdist
# workers that take one test file at a time (tests/conftest.py orders the files and shares the cores).
# Arguments go to pytest; `-n 0` runs in one process.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
exec python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
