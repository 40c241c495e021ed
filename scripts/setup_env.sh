#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv, install the project into it and register
# its Jupyter kernel. Re-installs only when pyproject.toml changed. Sourced by run_all.sh, scripts/test.sh
# and scripts/lab.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
# The venv's Jupyter kernel: the notebooks' kernelspec, the kernel papermill runs them on (run_all.sh)
# and the one JupyterLab offers (scripts/lab.sh). tests/test_notebooks.py checks they agree.
kernel_name=mrnet-diffusion
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment in $venv" >&2
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ]; then
    echo "installing mrnet_utils and its dependencies into $venv (first run: several minutes)" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$root[dev]" >&2
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
if [ ! -f "$venv/share/jupyter/kernels/$kernel_name/kernel.json" ]; then
    "$venv/bin/python" -m ipykernel install --sys-prefix --name "$kernel_name" \
        --display-name "Python ($kernel_name)" >/dev/null
fi
export PATH="$venv/bin:$PATH"
