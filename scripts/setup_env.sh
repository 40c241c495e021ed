#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the project into it.
# Re-installs only when pyproject.toml changed. Sourced by run_all.sh and scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment in $venv" >&2
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ]; then
    echo "installing mrnet_utils and its dependencies into $venv (first run: several minutes)" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$root[dev]" >&2
    "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
