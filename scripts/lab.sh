#!/usr/bin/env bash
# Open the notebooks in JupyterLab, on the project's kernel (the environment of scripts/setup_env.sh, made ready
# on first use). Options go to `jupyter lab`, e.g. --no-browser --port 8888 on a remote machine.
#
# bash scripts/lab.sh --user-kernel   registers the kernel for this user instead (in ~/.local/share/jupyter) and
#                                     starts nothing: a JupyterHub, or any other Jupyter of the user, then offers it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup_env.sh"
if [ "${1:-}" = --user-kernel ]; then
    "$env_python" -m ipykernel install --user --name "$kernel_name" --display-name "Python ($kernel_name)"
    exit 0
fi
cd "$root"
options=(--notebook-dir="$root" --MappingKernelManager.default_kernel_name="$kernel_name")
[ "$(id -u)" -eq 0 ] && options+=(--allow-root)  # containers often run as root, which Jupyter refuses by default
exec jupyter lab "${options[@]}" "$@"
