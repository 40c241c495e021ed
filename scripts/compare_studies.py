"""Whether two runs of the study agree: every result table and every trained network.

    python scripts/compare_studies.py OUT_A OUT_B [--preset demo]

OUT_A and OUT_B are two `run_all.sh --out` folders (for example the same study run at two
commits). Compared: every CSV under results/<preset>/ (recursively; a study run before run_all.sh
wrote there has them in evaluation/results/<preset>/), cell for cell,
without the columns that measure time (their names hold "second" or "time", or end in "per_s"); and the
weights of every final checkpoint under savepoints/<preset>/ (network and EMA), bit for bit.
Prints one line per file and exits 1 when anything differs or is missing on one side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

TIMING = ("second", "time")  # words in the name of a column that measures time
RATE = "per_s"  # the end of the name of one that measures a rate (images_per_s; per_seed is a result)


def timing_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if any(word in column for word in TIMING) or column.endswith(RATE)]


def same_table(a: Path, b: Path) -> tuple[bool, str]:
    x, y = pd.read_csv(a), pd.read_csv(b)
    if list(x.columns) != list(y.columns):
        return False, "columns differ"
    left_out = timing_columns(x)
    same = x.drop(columns=left_out).equals(y.drop(columns=left_out))
    return same, f"{len(x)} rows; timing columns left out: {', '.join(left_out) or '-'}"


def same_weights(a: Path, b: Path) -> tuple[bool, str]:
    x, y = (torch.load(path, map_location="cpu", weights_only=False) for path in (a, b))
    tensors = 0
    for key in ("model", "ema"):
        left, right = x.get(key) or {}, y.get(key) or {}
        if left.keys() != right.keys():
            return False, f"{key}: different parameter names"
        for name in left:
            if not torch.equal(left[name], right[name]):
                return False, f"{key}.{name} differs"
        tensors += len(left)
    return True, f"{tensors} tensors"


def results_folder(out: Path, preset: str) -> Path:
    folder = out / "results" / preset
    return folder if folder.is_dir() else out / "evaluation" / "results" / preset


def compare(out_a: Path, out_b: Path, preset: str) -> bool:
    """Print a line per file; True when every table and every final checkpoint agrees."""
    pairs = [(results_folder(out_a, preset), results_folder(out_b, preset), "*.csv", same_table),
             (out_a / "savepoints" / preset, out_b / "savepoints" / preset, "final.pt", same_weights)]
    agree = True
    for root_a, root_b, pattern, same in pairs:
        names = sorted({p.relative_to(root_a) for p in root_a.rglob(pattern)}
                       | {p.relative_to(root_b) for p in root_b.rglob(pattern)})
        if not names:
            print(f"no {pattern} under {root_a} or {root_b}")
            agree = False
        for name in names:
            if not ((root_a / name).exists() and (root_b / name).exists()):
                ok, detail = False, f"only in {out_a if (root_a / name).exists() else out_b}"
            else:
                ok, detail = same(root_a / name, root_b / name)
            agree &= ok
            print(f"{'same     ' if ok else 'DIFFERENT'} {root_a.relative_to(out_a).as_posix()}/{name}: {detail}")
    return agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_a", type=Path)
    parser.add_argument("out_b", type=Path)
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args(argv)
    agree = compare(args.out_a, args.out_b, args.preset)
    print("every table and network agrees" if agree else "the two studies differ")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
