"""Write the README's result tables and numbers from the result files, or check that they match.

The README never holds a typed result: each table and number stands between markers that name
the file it comes from, and this script fills them in.

    <!-- table: evaluation/results/demo/sr_sr1_64_to_128.csv | rows: lanczos; SR1 (Swin), mean | columns: psnr_mean, ssim_mean -->
    ...generated Markdown table...
    <!-- end -->

    <!-- value: evaluation/results/demo/sr_sr1_64_to_128_comparisons.csv | row: SR1 (Swin), lanczos, psnr | column: difference -->4.2<!-- end -->

`rows` (separated by ";", since row names hold commas) and `columns` (separated by ",") are
optional (default: all); a row of a table with key columns (KEY_COLUMNS: the comparison,
Swin and label tables) is named by their values joined with ", ", any other by its first column. Numbers are written as the
result tables write them (evaluation.tables.markdown: 4 significant digits).

    python scripts/readme_tables.py            # rewrite README.md in place
    python scripts/readme_tables.py --check    # exit 1, naming the block, if README.md is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.tables import markdown

ROOT = Path(__file__).resolve().parents[1]
# A row of a table with these columns is named by their values, in the table's order.
KEY_COLUMNS = ("stage", "arm", "a", "b", "metric", "request", "guidance", "trained on", "task")
BLOCK = re.compile(r"<!-- (table|value): (?P<spec>[^>]*?) -->(?P<body>.*?)<!-- end -->", re.S)


def _fields(spec: str) -> tuple[Path, dict[str, list[str]]]:
    path, *parts = [part.strip() for part in spec.split(" | ")]
    options = {}
    for part in parts:
        key, _, value = part.partition(":")
        separator = {"row": None, "rows": ";"}.get(key.strip(), ",")
        options[key.strip()] = [item.strip() for item in value.split(separator)] if separator else [value.strip()]
    return ROOT / path, options


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MRNetError(f"README cites {path.relative_to(ROOT)}, which does not exist; run the study that writes it")
    table = pd.read_csv(path)
    index = [column for column in table.columns if column in KEY_COLUMNS] or [table.columns[0]]
    table.index = [", ".join(str(value) for value in row) for row in table[index].itertuples(index=False)]
    table.index.name = " / ".join(index)
    return table.drop(columns=index)


def _render(kind: str, spec: str) -> str:
    path, options = _fields(spec)
    table = _read(path)
    rows = options.get("rows") or options.get("row") or list(table.index)
    columns = options.get("columns") or options.get("column") or list(table.columns)
    missing = [row for row in rows if row not in table.index] + [c for c in columns if c not in table.columns]
    if missing:
        raise MRNetError(f"README cites {', '.join(missing)} of {path.relative_to(ROOT)}, which it does not hold")
    selected = table.loc[rows, columns]
    if kind == "table":
        return "\n" + markdown(selected) + "\n"
    text = markdown(selected, index=False).splitlines()[-1]  # the one value, formatted as in the tables
    return text.strip("| ").strip()


def fill(text: str) -> str:
    """`text` with every marked block rewritten from its file."""
    return BLOCK.sub(lambda m: f"<!-- {m.group(1)}: {m.group('spec')} -->{_render(m.group(1), m.group('spec'))}<!-- end -->", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if README.md is out of date")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    try:
        filled = fill(text)
    except MRNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        stale = [m.group("spec") for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(filled)) if m.group(0) != n.group(0)]
        for spec in stale:
            print(f"README.md disagrees with its source: {spec} (run python scripts/readme_tables.py)", file=sys.stderr)
        return 1 if stale else 0
    args.readme.write_text(filled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
