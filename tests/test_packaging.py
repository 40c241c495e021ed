"""environment.yml and pyproject.toml list the same dependencies."""

import ast
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    listed = {spec for spec in pip_section if not spec.startswith("-e")}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_jupyterlab_and_what_the_notebooks_need_are_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=!~ ]", spec)[0] for spec in project["dependencies"]}
    # JupyterLab to open the notebooks, ipywidgets for tqdm.auto's bars there, nbconvert for their HTML
    assert {"jupyterlab", "ipywidgets", "nbconvert", "ipykernel", "papermill"} <= names


def test_the_license_is_an_spdx_string_so_that_installing_prints_no_deprecation_warning():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"  # a table ({text = ...}) is deprecated by setuptools 77
    assert "setuptools>=77" in pyproject["build-system"]["requires"]  # the first to read SPDX strings


def test_every_progress_display_goes_through_mrnet_utils_progress():
    """One home for progress (a bar on a terminal or in Jupyter, plain lines in a log file): only
    mrnet_utils/progress.py imports tqdm, and it takes tqdm.auto, whose bars render in Jupyter."""
    importers = {}
    for path in [*(ROOT / "mrnet_utils").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tqdm":
                importers.setdefault(path.relative_to(ROOT).as_posix(), []).append(f"from {node.module}")
            if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "tqdm" for alias in node.names):
                importers.setdefault(path.relative_to(ROOT).as_posix(), []).append("import tqdm")
    assert importers == {"mrnet_utils/progress.py": ["from tqdm.auto"]}


NON_FILE_OPENERS = {"Image", "tarfile", "zipfile", "webbrowser", "os"}  # their open() is not a text file's


def _text_file_call(node: ast.Call) -> bool:
    """A call that opens a file as text: Path.read_text / write_text, or open() / Path.open() in a text mode."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("read_text", "write_text"):
        return True
    if name != "open" or (isinstance(func, ast.Attribute) and getattr(func.value, "id", None) in NON_FILE_OPENERS):
        return False
    mode = next((k.value for k in node.keywords if k.arg == "mode"), None)
    position = 1 if isinstance(func, ast.Name) else 0  # open(path, mode) or path.open(mode)
    if mode is None and len(node.args) > position:
        mode = node.args[position]
    if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
        return False  # not a file mode: an archive's member (ZipFile.open(info)), say
    return mode is None or "b" not in mode.value


def test_every_text_file_is_read_and_written_as_utf_8():
    """The project's files hold non-ASCII text (±, ×, —); a text file opened without an encoding takes the
    locale's, which is ASCII on a machine with LANG unset or C outside Python's UTF-8 coercion (as CI's was)."""
    missing = []
    for folder in ("mrnet_utils", "benchmarks", "scripts", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and _text_file_call(node) and not any(
                        k.arg == "encoding" or k.arg is None for k in node.keywords):
                    missing.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}")
    assert missing == []


def test_every_function_of_the_package_is_under_70_lines_or_says_why_not():
    """A long function says in its first line why it is long (`# Longer than 70 lines: ...`)."""
    long = []
    for path in (ROOT / "mrnet_utils").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 70:
                first = lines[node.body[0].lineno - 2].strip()  # the line above the body's first statement
                if not first.startswith("# Longer than 70 lines: "):
                    long.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}")
    assert long == []
