"""environment.yml and pyproject.toml list the same dependencies."""

import ast
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    listed = {spec for spec in pip_section if not spec.startswith("-e")}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_jupyterlab_and_what_the_notebooks_need_are_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ ]", spec)[0] for spec in project["dependencies"]}
    # JupyterLab to open the notebooks, ipywidgets for tqdm.auto's bars there, nbconvert for their HTML
    assert {"jupyterlab", "ipywidgets", "nbconvert", "ipykernel", "papermill"} <= names


def test_the_license_is_an_spdx_string_so_that_installing_prints_no_deprecation_warning():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"  # a table ({text = ...}) is deprecated by setuptools 77
    assert "setuptools>=77" in pyproject["build-system"]["requires"]  # the first to read SPDX strings


def test_every_progress_display_goes_through_mrnet_utils_progress():
    """One home for progress (a bar on a terminal or in Jupyter, plain lines in a log file): only
    mrnet_utils/progress.py imports tqdm, and it takes tqdm.auto, whose bars render in Jupyter."""
    importers = {}
    for path in [*(ROOT / "mrnet_utils").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tqdm":
                importers.setdefault(path.relative_to(ROOT).as_posix(), []).append(f"from {node.module}")
            if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "tqdm" for alias in node.names):
                importers.setdefault(path.relative_to(ROOT).as_posix(), []).append("import tqdm")
    assert importers == {"mrnet_utils/progress.py": ["from tqdm.auto"]}
