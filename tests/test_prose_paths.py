"""Prose cannot drift from the tree: every repository path, module and section it names exists.

Read: docstrings and comments of every Python file, comments of the shell scripts, every Markdown
file, and the notebooks' markdown cells and code comments. Checked in that prose:

- paths (`mrnet_utils/evaluation/realism.py`, `docs/presets.md`, `evaluation/metrics.py` inside the
  package, `../benchmarks/RESULTS.md` from docs/) whose first part is a top-level entry of the repository
  or of the package; a path that git ignores is an output the text describes (`savepoints/demo/...`) and
  is not checked, nor is one with a placeholder (`runs/<preset>/`, `sr_*_comparison.png`, `OUT/PRESET`);
- file names on their own (`*.py`, `*.sh`): in the folder of the file that names them or one above it, or
  at the top of the repository or the package (in Markdown, anywhere: a list under a folder's name);
- Markdown link targets, relative to the file that holds them;
- modules and their members (`mrnet_utils.data.phantom.write_phantom`, `data.slices.degrade`);
- sections (README "Presets", "Guidance: ..." in RESULTS.md): a heading of that file starts so.

benchmarks/RESULTS.md is a dated log (each section names the commit it ran at): the paths its old
sections name are not checked, the sections others cite in it are.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mrnet_utils"
DATED_LOGS = {"benchmarks/RESULTS.md"}


def repository_files() -> list[str]:
    """The files a fresh clone of this working tree holds: tracked, or new and not ignored."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    return sorted(name for name in set(listed.stdout.splitlines()) if (ROOT / name).is_file()) if listed.returncode == 0 else []


FILES = repository_files()
NAMES = {Path(name).name for name in FILES}
TOP = {name.split("/")[0] for name in FILES} | {path.name for path in PACKAGE.iterdir()} | {".."}
TOP -= {".gitignore", ".gitattributes"}
# Beside the repository, provided by the machine where there is one (the real MRNet sample): named, not checked,
# since a clone elsewhere does not have it.
BESIDE = "../shared/"


@dataclass(frozen=True)
class Prose:
    path: str
    line: int
    text: str


def python_prose(path: str, source: str) -> list[Prose]:
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append(Prose(path, token.start[0], token.string))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found += [Prose(path, first.lineno + i, line) for i, line in enumerate(first.value.value.splitlines())]
    return found


def shell_prose(path: str, source: str) -> list[Prose]:
    found = []
    for number, line in enumerate(source.splitlines(), 1):
        comment = re.search(r"(?:^|\s)#(?![!{])\s?(.*)", line)
        if comment:
            found.append(Prose(path, number, comment.group(1)))
    return found


def notebook_prose(path: str, source: str) -> list[Prose]:
    found = []
    for index, cell in enumerate(nbformat.reads(source, as_version=4).cells):
        where = f"{path} cell {index}"
        if cell.cell_type == "markdown":
            found += [Prose(where, number, line) for number, line in enumerate(cell.source.splitlines(), 1)]
        elif cell.cell_type == "code":
            found += [Prose(where, p.line, p.text) for p in shell_prose(path, cell.source)]
    return found


def prose(path: str) -> list[Prose]:
    source = (ROOT / path).read_text(encoding="utf-8")
    if path.endswith(".py"):
        return python_prose(path, source)
    if path.endswith(".md"):
        return [Prose(path, number, line) for number, line in enumerate(source.splitlines(), 1)]
    if path.endswith(".ipynb"):
        return notebook_prose(path, source)
    if path.endswith((".sh", ".sbatch")) or path == ".ci/run":
        return shell_prose(path, source)
    return []


URL = re.compile(r"\b(?:https?://|github\.com/|doi\.org/)\S+")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
PATH = re.compile(r"(?<![\w./$}{~@:-])((?:\.\./)*(?:[\w.-]+/)+[\w.-]*|[\w-]+\.(?:py|sh|sbatch))(?![\w<{*$\[(-])")
MODULE = re.compile(r"(?<![\w.])((?:mrnet_utils|data|networks|diffusion|training|evaluation|study|config|stages|pipeline"
                    r"|cli|files|interrupts|errors)(?:\.\w+)+)(?![\w-]|\.\w)")
NOT_MODULE = re.compile(r"\.(?:py|sh|md|csv|png|html|json|ipynb|npz|npy|pt|sbatch|txt|yml|toml|log)$")
SECTION = re.compile(r"\b(README(?:\.md)?|[\w/]*RESULTS\.md)(?:'s)?,?\s+(?:section\s+)?\"([^\"]+)\""
                     r"|\"([^\"]+)\"\s+(?:in|of|under)\s+(?:the\s+)?`?(README(?:\.md)?|[\w/]*RESULTS\.md)")


def ignored(paths: list[str]) -> set[str]:
    if not paths:
        return set()
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths),
                            capture_output=True, text=True)
    return set(result.stdout.splitlines())


def source_file(holder: str) -> Path:
    """The file of a `Prose.path` ("evaluation/labels.ipynb cell 3" is the notebook's)."""
    return ROOT / holder.split(" cell ")[0]


def exists(candidate: str, holder: str) -> bool:
    """A path relative to the repository, the package, or the folder of the file that names it or one above;
    in Markdown, a bare file name may also be any file of the repository (a list under its folder's name)."""
    holder_path = source_file(holder)
    bases = [ROOT, PACKAGE, *holder_path.parents[: len(holder_path.relative_to(ROOT).parts) - 1]]
    if any((base / candidate).exists() for base in bases):
        return True
    return "/" not in candidate and holder_path.suffix in (".md", ".ipynb") and candidate in NAMES


def member_exists(dotted: str) -> bool | None:
    """A dotted name under mrnet_utils, with or without the prefix: its modules exist, and the first name
    after them is bound at the top level of the last one. None when `a.b` is no module
    reference at all: a package followed by a name that is not one of its modules (`diffusion.timesteps`,
    a config field)."""
    parts = dotted.split(".")
    short = parts[0] != "mrnet_utils"
    parts = parts if short else parts[1:]
    here = PACKAGE
    for index, part in enumerate(parts):
        if (here / part).is_dir():
            here = here / part
            continue
        if (here / f"{part}.py").is_file():
            rest = parts[index + 1:]
            return not rest or rest[0] in top_level_names(here / f"{part}.py")
        if short and index == 1:
            return None
        return part in top_level_names(here / "__init__.py")
    return True


def top_level_names(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def headings(path: Path) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"), re.M)]


def section_exists(document: str, title: str) -> bool:
    """A heading of README.md or benchmarks/RESULTS.md starts with `title` (less a closing "...")."""
    target = ROOT / ("README.md" if document.startswith("README") else "benchmarks/RESULTS.md")
    stem = title.rstrip(". …").rstrip()
    return any(heading.startswith(stem) for heading in headings(target))


def problems(path: str, items: list[Prose]) -> list[str]:
    """What `items`, the prose of the file `path`, names that does not exist."""
    found: list[str] = []
    candidates: list[tuple[Prose, str]] = []
    for item in items:
        text = URL.sub("", item.text)
        for document, title, title2, document2 in SECTION.findall(text):
            if not section_exists(document or document2, title or title2):
                found.append(f'{item.path}:{item.line}: no section "{title or title2}" in {document or document2}')
        if path in DATED_LOGS:
            continue
        for target in LINK.findall(text):
            if not target.startswith(("http", "mailto")) and not (source_file(item.path).parent / target).exists():
                found.append(f"{item.path}:{item.line}: link to {target}, which does not exist")
        for dotted in MODULE.findall(text):
            if not NOT_MODULE.search(dotted) and member_exists(dotted) is False:
                found.append(f"{item.path}:{item.line}: {dotted} names no module or member of mrnet_utils")
        for match in PATH.finditer(LINK.sub("", text)):
            candidate = match.group(1).rstrip(".")
            parts = candidate.split("/")
            if ("/" in candidate and parts[0] not in TOP or any(re.fullmatch(r"[A-Z][A-Z_]+", part) for part in parts)
                    or candidate.startswith(BESIDE)):
                continue  # not in the repository's top level, a placeholder in capitals (PRESET), or beside it
            candidates.append((item, candidate))
    missing = [(item, c) for item, c in candidates if not exists(c, item.path)]
    skip = ignored([c for _, c in missing if "/" in c])
    found += [f"{item.path}:{item.line}: {c} does not exist" for item, c in missing if c not in skip]
    return found


PROSE_FILES = [name for name in FILES if name.endswith((".py", ".md", ".ipynb", ".sh", ".sbatch")) or name == ".ci/run"]


@pytest.mark.skipif(not FILES, reason="not a git checkout: which files are the repository's is unknown")
@pytest.mark.parametrize("path", PROSE_FILES)
def test_every_path_module_and_section_named_in_prose_exists(path):
    assert problems(path, prose(path)) == []


@pytest.mark.skipif(not FILES, reason="not a git checkout: which files are the repository's is unknown")
def test_drifted_prose_is_found():
    """What went stale in the package before this test existed is found; what exists is not."""
    stale = ['The UNet family (see networks.py); README, "Super-resolution".',
             "Definitions in `mrnet_utils/realism.py`; `config.NO_SUCH_PRESETS`; [the table](docs/nothing.md).",
             '"Guidance: no such section" in RESULTS.md; `mrnet_utils.training.checkpoint.no_such_loader`.',
             "From docs/: ../benchmarks/NO_RESULTS.md and ../scripts/gone.py"]
    fine = ["Checkpoints of `training/checkpoint.py` (mrnet_utils.training.checkpoint.load_stage), run by run_all.sh;",
            '[presets](docs/presets.md), README "Presets", `data.slices.degrade`, savepoints/demo/sr1_swin, runs/<preset>/,',
            "`diffusion.timesteps` (a config field), evaluation/results/PRESET, schedules.py of the package,",
            "the real sample in ../shared/no-such-copy/MRNet-v1.0 (beside the repository, where the machine has it)."]
    found = problems("mrnet_utils/config.py", [Prose("mrnet_utils/config.py", n, line) for n, line in enumerate(stale, 1)])
    assert sorted(line.split(": ", 1)[1] for line in found) == sorted([
        'no section "Super-resolution" in README', "networks.py does not exist",
        "config.NO_SUCH_PRESETS names no module or member of mrnet_utils", "link to docs/nothing.md, which does not exist",
        'no section "Guidance: no such section" in RESULTS.md',
        "mrnet_utils.training.checkpoint.no_such_loader names no module or member of mrnet_utils",
        "mrnet_utils/realism.py does not exist", "../benchmarks/NO_RESULTS.md does not exist",
        "../scripts/gone.py does not exist"])
    assert problems("README.md", [Prose("README.md", n, line) for n, line in enumerate(fine, 1)]) == []
