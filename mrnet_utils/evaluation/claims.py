"""Claim sentences written from the verdict columns of a comparison table, so that no claim says more
than its row supports.

A row of tables.comparison_table (or of a CSV it wrote) becomes one sentence naming both outputs (a
diffusion output with its network evaluations per image, from `nfe_a` / `nfe_b` where the table has
them), the metric, the verdict in the words of statistics.verdict, the difference and its 95% interval,
the exams and slices (and training seeds) it rests on, and whether it is a primary endpoint (with the
size of its Holm family) or exploratory. A comparison of two trained models without a `seeds` column
rests on one training run of each, and says so.

    claims(pd.read_csv("evaluation/results/demo/sr_sr2_128_to_256_comparisons.csv"), endpoint="primary")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import pandas as pd

from mrnet_utils.evaluation import endpoints, metrics

METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "lpips": "LPIPS"}


def _name(row: Mapping, side: str) -> str:
    """An output's name, with its network evaluations per image when it has any."""
    nfe = row.get(f"nfe_{side}", math.nan)
    if isinstance(nfe, (int, float)) and math.isfinite(nfe) and nfe > 0:
        return f"{row[side]} ({int(nfe)} NFE)"
    return str(row[side])


def claim(row: Mapping) -> str:
    """One comparison row (with its a, b and metric as fields) as a sentence."""
    a, b, verdict = _name(row, "a"), _name(row, "b"), str(row["verdict"])
    metric = METRIC_NAMES.get(row["metric"], row["metric"])
    margin = endpoints.MARGINS.get(row["metric"])
    unit = margin.unit if margin else ""
    a_better, b_better = f"{row['a']} better than {row['b']}", f"{row['b']} better than {row['a']}"
    if verdict.startswith(a_better):  # the rest: ", by less than the ... margin" when there is one
        head = f"{a} is better than {b} on {metric}{verdict[len(a_better):]}"
    elif verdict.startswith(b_better):
        head = f"{b} is better than {a} on {metric}{verdict[len(b_better):]}"
    elif verdict.startswith("equivalent"):
        head = f"{a} and {b} are {verdict} on {metric}"
    elif verdict.startswith("inconclusive"):
        head = f"{a} against {b} on {metric} is {verdict}"
    else:  # "no interval: ..."
        head = f"{a} against {b} on {metric}: {verdict}"
    sizes = f"{int(row['exams'])} exams, {int(row['slices'])} slices"
    if "seeds" in row and not pd.isna(row["seeds"]):
        sizes += f", {int(row['seeds'])} training seeds per arm"
    elif row["a"] not in metrics.INTERPOLATIONS and row["b"] not in metrics.INTERPOLATIONS:
        sizes += ", one training run each"
    numbers = (f"difference {row['difference']:+.3g}{unit}" if pd.isna(row["ci_low"]) else
               f"difference {row['difference']:+.3g}{unit}, 95% CI {row['ci_low']:+.3g} to {row['ci_high']:+.3g}")
    if row.get("endpoint") == endpoints.PRIMARY and not pd.isna(row.get("family")):
        kind = f"a primary endpoint, Holm-adjusted over {int(row['family'])} tests"
    elif row.get("endpoint") == endpoints.PRIMARY:
        kind = "a primary endpoint, untested"
    else:
        kind = "exploratory"
    return f"{head} ({numbers}; {sizes}); {kind}."


def claims(table: pd.DataFrame, endpoint: str | None = None) -> list[str]:
    """A sentence per row of a comparison table (indexed by a, b, metric, or with them as columns), or per
    row of the given `endpoint` ("primary" or "exploratory")."""
    rows = table.reset_index() if "a" not in table.columns else table
    if endpoint is not None:
        rows = rows[rows["endpoint"] == endpoint]
    return [claim(row) for row in rows.to_dict("records")]


def claims_from_csv(path: str | os.PathLike, endpoint: str | None = None) -> list[str]:
    """`claims` of a comparison table written as CSV (tables.write_table)."""
    return claims(pd.read_csv(path), endpoint)
