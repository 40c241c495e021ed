#!/usr/bin/env bash
# Make the project's Python environment ready and first on PATH; sourced by run_all.sh, scripts/test.sh and
# scripts/lab.sh. An active conda or virtual environment that has this checkout installed (conda env create -f
# environment.yml, or pip install -e '.[dev]' inside it) is used as it is; otherwise the project's own .venv,
# created on first use with the project installed into it (again whenever pyproject.toml changes). Either way
# the environment's Jupyter kernel is registered in it. The Python version is checked before anything is
# installed; PYTHON names the interpreter that creates .venv (default: python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
# The Jupyter kernel: the notebooks' kernelspec, the kernel papermill runs them on (run_all.sh)
# and the one JupyterLab offers (scripts/lab.sh). tests/test_notebooks.py checks they agree.
kernel_name=mrnet-diffusion
min_python="$(sed -n 's/^requires-python = ">=\([0-9.]*\)"$/\1/p' "$root/pyproject.toml")"

require_python() {  # stop, saying what to do, unless the interpreter $1 is min_python or newer
    if ! "$1" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$min_python'.split('.'))))" 2>/dev/null
    then
        local found
        found="$("$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo "not a Python that runs")"
        echo "error: mrnet_utils needs Python $min_python or newer, and $1 is $found; load a newer one (for" \
             "example module load python/3.11, or conda create -n mrnet-diffusion python=3.11) or name it with" \
             "PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
}

has_this_checkout() {  # the interpreter $1 imports mrnet_utils from this checkout (an editable install)
    local package
    package="$("$1" -I -c 'import mrnet_utils, os; print(os.path.dirname(mrnet_utils.__file__))' 2>/dev/null)" \
        && [ "$package" -ef "$root/mrnet_utils" ]
}

env_python=""
active="${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
if [ -n "$active" ] && [ ! "$active" -ef "$venv" ]; then
    require_python python
    if has_this_checkout python; then
        echo "using the active environment $active" >&2
        env_python="$(command -v python)"
    else
        echo "note: the active environment $active does not have this checkout installed, so $venv is used;" \
             "to use $active instead, run there: python -m pip install -e '$root[dev]'" >&2
    fi
fi
if [ -z "$env_python" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        require_python "${PYTHON:-python3}"
        echo "creating virtual environment in $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    require_python "$venv/bin/python"
    stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "installing mrnet_utils and its dependencies into $venv (first run: several minutes)" >&2
        "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
        "$venv/bin/python" -m pip install --quiet -e "$root[dev]" >&2
        rm -f "$venv"/.installed-*
        touch "$stamp"
    fi
    env_python="$venv/bin/python"
    export PATH="$venv/bin:$PATH"
fi
if [ ! -f "$("$env_python" -c 'import sys; print(sys.prefix)')/share/jupyter/kernels/$kernel_name/kernel.json" ]
then
    "$env_python" -m ipykernel install --sys-prefix --name "$kernel_name" --display-name "Python ($kernel_name)" \
        >/dev/null
fi
# Python in UTF-8 mode whatever the locale: the notebooks, tables and logs hold non-ASCII text (±, ×),
# which a machine whose locale is ASCII (LANG unset outside Python's C-locale coercion) would refuse.
export PYTHONUTF8=1
