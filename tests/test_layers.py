"""The package's import graph: each unit (a top-level module or sub-package of mrnet_utils) imports only units
of lower layers at run time, so the graph has no cycle and nothing reaches back up.

Imports under `if TYPE_CHECKING:` are left out (they name types and never run); imports inside functions
count: they run.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mrnet_utils"

# Lowest first. A unit may import units of lower layers only; units in one layer do not import each other.
LAYERS = (
    ("errors", "__init__"),
    ("files", "progress", "interrupts", "stages", "provenance"),
    ("data",),
    ("diffusion", "evaluation"),
    ("config",),
    ("presets", "networks"),
    ("pipeline",),
    ("training",),
    ("study",),
    ("cli",),
    ("__main__",),
)
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """mrnet_utils.diffusion.processes.ddpm -> diffusion; mrnet_utils -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under `if TYPE_CHECKING:`."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return skipped


def runtime_imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """The mrnet_utils modules a file imports when it runs (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped, package = _type_checking_only(tree), module_name(path, root)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "mrnet_utils" or name.startswith("mrnet_utils.")}


def edges(package: Path = PACKAGE) -> list[tuple[str, str, str]]:
    """(importing file, its unit, the imported unit) for every import across units."""
    found = []
    for path in sorted(package.rglob("*.py")):
        here = unit_of(module_name(path, package))
        for target in runtime_imports(path, package):
            if unit_of(target) != here:
                found.append((path.relative_to(package.parent).as_posix(), here, unit_of(target)))
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert units == set(LAYER), "a new module or sub-package: give it a layer in LAYERS"


def test_every_import_goes_down_a_layer():
    upward = [f"{file}: {here} (layer {LAYER[here]}) imports {there} (layer {LAYER[there]})"
              for file, here, there in edges() if LAYER[there] >= LAYER[here]]
    assert upward == []


def test_the_check_sees_an_import_inside_a_function_and_skips_a_type_only_one(tmp_path):
    fake = tmp_path / "mrnet_utils"
    (fake / "diffusion").mkdir(parents=True)
    (fake / "diffusion" / "late.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mrnet_utils.pipeline import TrainedStage\n"
        "def teacher():\n    from mrnet_utils.training.checkpoint import load_stage\n"
        "from ..errors import MRNetError\n", encoding="utf-8")
    assert sorted(edges(fake)) == [("mrnet_utils/diffusion/late.py", "diffusion", "errors"),
                                   ("mrnet_utils/diffusion/late.py", "diffusion", "training")]
