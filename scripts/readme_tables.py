"""Write the result tables and numbers of README.md and docs/*.md from the result files, or check them.

No document holds a typed result: each table and number stands between markers that name the file
it comes from, and this script fills them in.

    <!-- table: evaluation/results/demo/sr_sr1_64_to_128.csv | rows: lanczos; SR1 (Swin), mean | columns: psnr_mean, ssim_mean -->
    ...generated Markdown table...
    <!-- end -->

    <!-- value: evaluation/results/demo/sr_sr1_64_to_128_comparisons.csv | row: SR1 (Swin), lanczos, psnr | column: difference -->4.2<!-- end -->

A script's usage, as its `--help` prints it, stands in a fenced block between the same kind of markers:

    <!-- help: run_all.sh -->
    ...`bash run_all.sh --help`, in a text block...
    <!-- end -->

The claims of a comparison table are sentences written from its verdict columns (evaluation.claims), a
bullet each, for all its rows, the `rows` named, or the rows of one `endpoint` (primary or exploratory):

    <!-- claims: evaluation/results/demo/sr_sr1_64_to_128_comparisons.csv | endpoint: primary -->
    ...one bullet per claim...
    <!-- end -->

Paths are relative to the repository, in every document. `rows` (separated by ";", since row names
hold commas) and `columns` (separated by ",") are optional (default: all); a row of a table with key
columns (KEY_COLUMNS: the comparison, equivalence, Swin and label tables) is named by their values joined with
", ", any other by its first column. Numbers are written as the result tables write them
(evaluation.tables.markdown: 4 significant digits).

    python scripts/readme_tables.py                         # rewrite README.md and docs/*.md in place
    python scripts/readme_tables.py --check                 # exit 1, naming the block, if one is out of date
    python scripts/readme_tables.py docs/results.md         # only the documents named
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.claims import claims
from mrnet_utils.evaluation.tables import markdown

ROOT = Path(__file__).resolve().parents[1]
# A row of a table with these columns is named by their values, in the table's order.
KEY_COLUMNS = ("pipeline", "path", "stage", "arm", "a", "b", "metric", "request", "guidance", "trained on", "task")
BLOCK = re.compile(r"<!-- (table|value|help|claims): (?P<spec>[^>]*?) -->(?P<body>.*?)<!-- end -->", re.S)


def _fields(spec: str) -> tuple[Path, dict[str, list[str]]]:
    path, *parts = [part.strip() for part in spec.split(" | ")]
    options = {}
    for part in parts:
        key, _, value = part.partition(":")
        separator = {"row": None, "rows": ";"}.get(key.strip(), ",")
        options[key.strip()] = [item.strip() for item in value.split(separator)] if separator else [value.strip()]
    return ROOT / path, options


def documents() -> list[Path]:
    """The documents whose marked blocks are written from the result files."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _name(document: Path) -> str:
    return document.relative_to(ROOT).as_posix() if document.is_relative_to(ROOT) else document.name


def _read(path: Path, document: str) -> pd.DataFrame:
    if not path.is_file():
        raise MRNetError(f"{document} cites {path.relative_to(ROOT)}, which does not exist; run the study that writes it")
    table = pd.read_csv(path)
    index = [column for column in table.columns if column in KEY_COLUMNS] or [table.columns[0]]
    table.index = [", ".join(str(value) for value in row) for row in table[index].itertuples(index=False)]
    table.index.name = " / ".join(index)
    repeated = table.index[table.index.duplicated()].unique().tolist()
    if repeated:
        raise MRNetError(f"{document} cites {path.relative_to(ROOT)}, whose rows {', '.join(repeated)} are named more "
                         f"than once by {table.index.name}")
    return table.drop(columns=index)


def _usage(script: str, document: str) -> str:
    shown = subprocess.run(["bash", str(ROOT / script), "--help"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise MRNetError(f"{document} shows the usage of {script}, whose --help failed: {shown.stderr.strip()}")
    return f"\n```text\n{shown.stdout}```\n"


def _claims(path: Path, options: dict[str, list[str]], document: str) -> str:
    """A bullet per row of a comparison table (all, or `rows`, or those of one `endpoint`), each the sentence
    that evaluation.claims writes from the row's verdict columns."""
    table = _read(path, document)
    rows = options.get("rows") or options.get("row") or list(table.index)
    missing = [row for row in rows if row not in table.index]
    if missing:
        raise MRNetError(f"{document} cites {', '.join(missing)} of {path.relative_to(ROOT)}, which it does not hold")
    selected = pd.read_csv(path).set_axis(table.index).loc[rows]
    sentences = claims(selected, options.get("endpoint", [None])[0])
    return "\n" + "\n".join(f"- {sentence}" for sentence in sentences) + "\n"


def _render(kind: str, spec: str, document: str) -> str:
    if kind == "help":
        return _usage(spec.strip(), document)
    path, options = _fields(spec)
    if kind == "claims":
        return _claims(path, options, document)
    table = _read(path, document)
    rows = options.get("rows") or options.get("row") or list(table.index)
    columns = options.get("columns") or options.get("column") or list(table.columns)
    missing = [row for row in rows if row not in table.index] + [c for c in columns if c not in table.columns]
    if missing:
        raise MRNetError(f"{document} cites {', '.join(missing)} of {path.relative_to(ROOT)}, which it does not hold")
    selected = table.loc[rows, columns]
    if kind == "table":
        return "\n" + markdown(selected) + "\n"
    text = markdown(selected, index=False).splitlines()[-1]  # the one value, formatted as in the tables
    return text.strip("| ").strip()


def fill(text: str, document: str = "README.md") -> str:
    """`text` with every marked block rewritten from its file."""
    def block(match: re.Match) -> str:
        kind, spec = match.group(1), match.group("spec")
        return f"<!-- {kind}: {spec} -->{_render(kind, spec, document)}<!-- end -->"

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a document is out of date")
    parser.add_argument("documents", nargs="*", type=Path, help="default: README.md and docs/*.md")
    args = parser.parse_args(argv)
    stale = False
    for document in [path.resolve() for path in args.documents] or documents():
        name, text = _name(document), document.read_text(encoding="utf-8")
        try:
            filled = fill(text, name)
        except MRNetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.check:
            for old, new in zip(BLOCK.finditer(text), BLOCK.finditer(filled)):
                if old.group(0) != new.group(0):
                    print(f"{name} disagrees with its source: {old.group('spec')} (run python scripts/readme_tables.py)",
                          file=sys.stderr)
                    stale = True
        elif filled != text:
            document.write_text(filled, encoding="utf-8")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
