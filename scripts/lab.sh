#!/usr/bin/env bash
# Open the notebooks in JupyterLab, on the project's kernel (the venv of scripts/setup_env.sh, created on
# first use). Options go to `jupyter lab`, e.g. --no-browser --port 8888 on a remote machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
options=(--notebook-dir="$root" --MappingKernelManager.default_kernel_name="$kernel_name")
[ "$(id -u)" -eq 0 ] && options+=(--allow-root)  # containers often run as root, which Jupyter refuses by default
exec jupyter lab "${options[@]}" "$@"
