"""Do the methods rank the same when the low-res inputs come from another degradation?

    python scripts/degradation_ranks.py evaluation/results/demo evaluation/results/demo_kspace \
        --out evaluation/results/demo_kspace --name degradation_ranks

reads the SR tables (`sr_<task>.csv`) of two results folders of the same study made with two
degradations (each folder's `degradation.json`, written by the study; `mrnet_utils.data.degradation`),
ranks the methods both folders scored on each task and metric (1 = best; the ground-truth row left out)
and writes, per task and metric, each method's rank under both, and Kendall's tau between the two
orders (1: the same order), to OUT/NAME.csv and OUT/NAME.md; per task and metric, tau and the best
method under each, to OUT/NAME_summary.csv and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

from mrnet_utils.data.degradation import Degradation
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.tables import REFERENCE_ROW, SR_HIGHER_IS_BETTER, write_table

TASKS = ("sr1_64_to_128", "sr2_128_to_256", "cascade_64_to_256")
METRICS = ("psnr", "ssim", "spectrum_error", "ag_error")


def degradation_of(folder: Path) -> str:
    """The degradation a results folder was made with, as the study describes it."""
    path = folder / "degradation.json"
    if not path.is_file():
        raise MRNetError(f"{folder} has no degradation.json: not a results folder of the study")
    return Degradation(**json.loads(path.read_text(encoding="utf-8"))).describe()


def ranks(first: Path, second: Path) -> pd.DataFrame:
    """Per task, metric and method scored in both folders: its rank (1 = best) under each degradation,
    and per task and metric Kendall's tau between the two orders (on every row of that task and metric)."""
    names = degradation_of(first), degradation_of(second)
    if names[0] == names[1]:
        raise MRNetError(f"{first} and {second} were both made with {names[0]}; compare two degradations")
    rows = []
    for task in TASKS:
        tables = [pd.read_csv(folder / f"sr_{task}.csv", index_col="method").drop(index=REFERENCE_ROW, errors="ignore")
                  for folder in (first, second)]
        methods = [method for method in tables[0].index if method in tables[1].index]
        for folder, table in zip((first, second), tables):
            missing = [f"{metric}_mean" for metric in METRICS if f"{metric}_mean" not in table.columns]
            if missing:
                raise MRNetError(f"{folder / f'sr_{task}.csv'} has no {', '.join(missing)}: not an SR table of the study")
        for metric in METRICS:
            values = [pd.to_numeric(table.loc[methods, f"{metric}_mean"]) for table in tables]
            ascending = not SR_HIGHER_IS_BETTER[metric]
            order = [value.rank(ascending=ascending, method="min").astype(int) for value in values]
            tau = kendalltau(values[0], values[1]).statistic if len(methods) > 1 else float("nan")
            for method in methods:
                rows.append({"task": task, "metric": metric, "method": method, f"rank ({names[0]})": order[0][method],
                             f"rank ({names[1]})": order[1][method], "kendall_tau": tau})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and metric: Kendall's tau between the two orders and the best method under each degradation."""
    first, second = [column for column in table.columns if column.startswith("rank (")]
    rows = []
    for (task, metric), part in table.groupby(["task", "metric"], sort=False):
        rows.append({"task": task, "metric": metric, "kendall_tau": part["kendall_tau"].iloc[0],
                     f"best {first[6:-1]}": ", ".join(part.loc[part[first] == 1, "method"]),
                     f"best {second[6:-1]}": ", ".join(part.loc[part[second] == 1, "method"])})
    return pd.DataFrame(rows).set_index(["task", "metric"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="a results folder (e.g. evaluation/results/demo)")
    parser.add_argument("second", type=Path, help="the same study's results under another degradation")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write the table to")
    parser.add_argument("--name", default="degradation_ranks", help="the table's file name, without .csv / .md")
    args = parser.parse_args(argv)
    try:
        table = ranks(args.first, args.second)
    except (MRNetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    legend = {"rank (...)": f"the method's place on the task's table under that degradation (1 = best mean; "
                            f"{args.first} and {args.second})",
              "kendall_tau": "agreement of the two orders over the task's methods (1: the same order, -1: reversed)"}
    csv_path, _ = write_table(table.set_index(["task", "metric", "method"]), args.out, args.name, legend)
    summary_path, _ = write_table(summary(table), args.out, f"{args.name}_summary",
                                  {"kendall_tau": legend["kendall_tau"], "best ...": "the first method under each"})
    print(f"wrote {csv_path} and {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
