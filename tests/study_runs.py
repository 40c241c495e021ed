"""Running run_all.sh from the tests, and reading what its notebooks raised."""

import os
import subprocess
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def run_all(*args: str) -> subprocess.CompletedProcess:
    """bash run_all.sh ARGS, without a MRNET_ROOT from the caller's environment."""
    env = {key: value for key, value in os.environ.items() if key != "MRNET_ROOT"}
    return subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), *args], capture_output=True, text=True, env=env, timeout=3600
    )


def error_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
