"""scripts/setup_env.sh: which environment it uses, and an old Python stopped before any install.

Each test runs the script in a copy of it beside pyproject.toml, with fake interpreters first on PATH that
answer its questions (version, where mrnet_utils comes from, sys.prefix) and log what they are asked to do.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$*" in
    *"version_info <"*) [ "$FAKE_VERSION" != 3.8.10 ] ;;
    *"sys.version.split"*) echo "$FAKE_VERSION" ;;
    *"import mrnet_utils"*) [ -n "${FAKE_PROJECT:-}" ] && echo "$FAKE_PROJECT" ;;
    *"sys.prefix"*) echo "$FAKE_PREFIX" ;;
    "-m venv "*) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
esac
"""


@pytest.fixture
def checkout(tmp_path):
    """A checkout with the script, pyproject.toml and the package folder; fake python3 and python on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup_env.sh", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "mrnet_utils").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3", "python"):
        (bin_dir / name).write_text(FAKE_PYTHON, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    return tmp_path


def source(checkout, **env):
    """Source the script in bash with the fakes first on PATH; its exit code, stderr, the python it chose, the log."""
    log = checkout / "log.txt"
    log.touch()
    environment = {"PATH": f"{checkout / 'bin'}:/usr/bin:/bin", "HOME": str(checkout), "FAKE_LOG": str(log),
                   "FAKE_VERSION": "3.11.7", "FAKE_PREFIX": str(checkout / "prefix"), **env}
    done = subprocess.run(["bash", "-c", 'source scripts/setup_env.sh && echo "$env_python"'], cwd=checkout,
                          env=environment, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr, done.stdout.strip(), log.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("interpreter", ["python3", "PYTHON"])
def test_an_old_python_is_stopped_with_what_to_do_before_anything_is_installed(checkout, interpreter):
    env = {"FAKE_VERSION": "3.8.10"}
    if interpreter == "PYTHON":
        env["PYTHON"] = str(checkout / "bin" / "python")
    code, err, _, log = source(checkout, **env)
    named = env.get("PYTHON", "python3")  # 3.10: pyproject.toml's requires-python, which the script reads
    assert code == 2 and err.startswith(f"error: mrnet_utils needs Python 3.10 or newer, and {named} is 3.8.10; ")
    assert "PYTHON=/path/to/python3.11" in err and err.count("\n") == 1
    assert not (checkout / ".venv").exists() and not any("-m " in line for line in log)


def test_an_active_environment_with_this_checkout_installed_is_used_as_it_is(checkout):
    code, err, chosen, log = source(checkout, VIRTUAL_ENV=str(checkout / "env"),
                                    FAKE_PROJECT=str(checkout / "mrnet_utils"))
    assert code == 0 and err == f"using the active environment {checkout / 'env'}\n"
    assert chosen == str(checkout / "bin" / "python") and not (checkout / ".venv").exists()
    assert not any(" -m pip " in line or " -m venv " in line for line in log)
    assert log[-1] == "python -m ipykernel install --sys-prefix --name mrnet-diffusion --display-name " \
                      "Python (mrnet-diffusion)"


def test_an_active_environment_without_it_says_how_to_install_it_and_the_venv_is_used(checkout):
    other_checkout = checkout / "elsewhere" / "mrnet_utils"
    other_checkout.mkdir(parents=True)
    env = {"CONDA_PREFIX": str(checkout / "env"), "FAKE_PROJECT": str(other_checkout)}
    code, err, chosen, log = source(checkout, **env)
    assert code == 0 and err.splitlines()[0] == (
        f"note: the active environment {checkout / 'env'} does not have this checkout installed, so "
        f"{checkout / '.venv'} is used; to use {checkout / 'env'} instead, run there: python -m pip install -e "
        f"'{checkout}[dev]'")
    venv_python = str(checkout / ".venv" / "bin" / "python")
    assert chosen == venv_python
    assert f"python3 -m venv {checkout / '.venv'}" in log
    assert f"python -m pip install --quiet -e {checkout}[dev]" in log
    assert len(list((checkout / ".venv").glob(".installed-*"))) == 1
    # A second run installs nothing again.
    os.remove(checkout / "log.txt")
    code, _, _, log = source(checkout, **env)
    assert code == 0 and not any(" -m pip " in line or " -m venv " in line for line in log)
