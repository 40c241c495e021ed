"""How often does each interval cover the truth at the study's exam counts? A simulation of clustered data.

    python -m benchmarks.bench_coverage                 # 2000 simulated studies per cell; writes docs/statistics.md
    python -m benchmarks.bench_coverage --studies 200 --no-write

The study's comparisons are paired differences per slice (method A's PSNR minus method B's on the
same slice), averaged over the slices of 6 (phantom) or 8 (real sample) exams. Slices of one exam
share the exam's effect and neighbouring slices resemble each other, so the simulation draws, per
study of G exams, the difference on slice k of exam e as

    d_ek = mu + u_e + eps_ek,   u_e an exam effect (sd 1), eps_e. an AR(1) series along the slices
                                (lag-one correlation 0.8, sd 1): half the variance between exams,

with the exam effects normal or skewed (a centred exponential: a few exams on which a method does
much worse), and 5 slices per exam (the phantom study's held-out set) or 4 to 12 (a real sample's
spread). Each interval method of statistics.exam_interval is run on each simulated study at 95%;
a slice-level t interval, which treats slices as independent (no method of the project), shows what
ignoring the exam costs. Coverage is the share of studies whose interval holds mu; its Monte Carlo
standard error at 95% and N studies is sqrt(0.95 * 0.05 / N) (0.5 points at N = 2000).

A second table does the same for comparisons of models trained with several seeds (the Swin
question: 3 seeds per arm): exam-averaged differences d_se = mu + a_s + b_e + c_se with seed,
exam and seed-by-exam effects, and three ways to draw the interval: over exams only (the seeds
fixed), over seeds only (the exams fixed), and statistics.seeds_and_exams (both random).

Prints both tables and writes them, with the machine, the command and the date, to the
"Coverage of the intervals" section of docs/statistics.md (`--no-write` to skip).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from benchmarks.common import command_line, load_line, machine_info, machine_lines
from benchmarks.sections import update_section
from mrnet_utils.evaluation import statistics
from mrnet_utils.evaluation.tables import markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"
EXAM_COUNTS = (5, 6, 8, 15, 30, 120)
SLICE_CORRELATION = 0.8  # lag-one correlation of the slice noise along an exam
# (exam effects, slices per exam): the scenarios of the first table
SCENARIOS = {
    "normal exam effects, 5 slices each": ("normal", (5, 5)),
    "normal exam effects, 4-12 slices": ("normal", (4, 12)),
    "skewed exam effects, 4-12 slices": ("skewed", (4, 12)),
}
SEEDS = 3
SEED_EXAM_COUNTS = (6, 8, 30)
# (sd of the seed, exam and seed-by-exam effects): the scenarios of the second table
SEED_SCENARIOS = {
    "seeds vary most (sd 1, 0.3, 0.2)": (1.0, 0.3, 0.2),
    "exams vary most (sd 0.2, 1, 0.3)": (0.2, 1.0, 0.3),
}
SLICE_T = "slice-level t (slices as independent)"
SEED_METHODS = ("over exams (seeds fixed)", "over seeds (exams fixed)", "seeds_and_exams (both random)")


def simulate_study(rng: np.random.Generator, exams: int, effects: str, slices: tuple[int, int]):
    """One simulated study's per-slice differences (true mean 0) and their exam ids."""
    counts = rng.integers(slices[0], slices[1] + 1, exams)
    u = rng.normal(0, 1, exams) if effects == "normal" else rng.exponential(1, exams) - 1
    values, ids = [], []
    for exam, (count, offset) in enumerate(zip(counts, u)):
        eps = np.empty(count)
        eps[0] = rng.normal()
        for k in range(1, count):  # stationary AR(1) with unit variance
            eps[k] = SLICE_CORRELATION * eps[k - 1] + np.sqrt(1 - SLICE_CORRELATION**2) * rng.normal()
        values.append(offset + eps)
        ids.append(np.full(count, exam))
    return np.concatenate(values), np.concatenate(ids)


def _covers(low: float, high: float, truth: float = 0.0) -> bool:
    return low <= truth <= high


def exam_coverage(studies: int, exam_counts=EXAM_COUNTS, scenarios=SCENARIOS, seed: int = 0,
                  methods=statistics.METHODS) -> pd.DataFrame:
    """Coverage (%) of each interval method (and of the slice-level t), one row per scenario and method,
    one column per exam count."""
    rows = []
    for scenario, (effects, slices) in scenarios.items():
        hits = {method: {g: 0 for g in exam_counts} for method in (*methods, SLICE_T)}
        for exams in exam_counts:
            rng = np.random.default_rng([seed, exams, list(scenarios).index(scenario)])
            for study in range(studies):
                values, ids = simulate_study(rng, exams, effects, slices)
                for method in methods:
                    estimate = statistics.exam_interval(values, ids, method=method, seed=study)
                    hits[method][exams] += _covers(estimate.low, estimate.high)
                interval = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
                hits[SLICE_T][exams] += _covers(interval.low, interval.high)
        for method, counts in hits.items():
            rows.append({"scenario": scenario, "method": method,
                         **{f"{g} exams": 100 * counts[g] / studies for g in exam_counts}})
    return pd.DataFrame(rows)


def seed_coverage(studies: int, exam_counts=SEED_EXAM_COUNTS, scenarios=SEED_SCENARIOS, seeds: int = SEEDS,
                  seed: int = 0) -> pd.DataFrame:
    """Coverage (%) of the three intervals for a (seeds, exams) table of exam-averaged differences."""
    rows = []
    for scenario, (sd_seed, sd_exam, sd_both) in scenarios.items():
        hits = {method: {g: 0 for g in exam_counts} for method in SEED_METHODS}
        for exams in exam_counts:
            rng = np.random.default_rng([seed, exams, 100 + list(scenarios).index(scenario)])
            for _ in range(studies):
                table = (rng.normal(0, sd_seed, (seeds, 1)) + rng.normal(0, sd_exam, (1, exams))
                         + rng.normal(0, sd_both, (seeds, exams)))
                over_exams = statistics.exam_interval(table.mean(axis=0), np.arange(exams))
                over_seeds = stats.ttest_1samp(table.mean(axis=1), 0.0).confidence_interval(0.95)
                both = statistics.seeds_and_exams(table, slices=exams)
                for method, (low, high) in zip(SEED_METHODS, ((over_exams.low, over_exams.high),
                                                             (over_seeds.low, over_seeds.high), (both.low, both.high))):
                    hits[method][exams] += _covers(low, high)
        for method, counts in hits.items():
            rows.append({"scenario": scenario, "method": method,
                         **{f"{g} exams": 100 * counts[g] / studies for g in exam_counts}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2000, help="simulated studies per scenario and exam count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not rewrite {DOCS.name}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = machine_info(torch.device("cpu"))
    start, cpu_start = time.perf_counter(), time.process_time()
    exams = exam_coverage(args.studies, seed=args.seed)
    seeds = seed_coverage(args.studies, seed=args.seed)
    wall, cpu = (time.perf_counter() - start) / 60, (time.process_time() - cpu_start) / 60
    mc_se = 100 * np.sqrt(0.95 * 0.05 / args.studies)
    body = "\n".join([
        f"Run on {datetime.date.today().isoformat()}: {cpu:.1f} min of CPU on one thread ({wall:.1f} min wall "
        f"clock on the shared machine); {args.studies} simulated "
        f"studies per cell, {statistics.BOOTSTRAP_SAMPLES} bootstrap resamples per interval, nominal 95%. "
        f"Monte Carlo standard error of a coverage near 95%: {mc_se:.2f} points.",
        "",
        machine_lines(info, command_line("benchmarks.bench_coverage", argv)),
        "",
        load_line(),
        "",
        "**Means over slices of G exams** (coverage, %; `statistics.exam_interval`):",
        "",
        markdown(exams, index=False),
        "",
        f"**Comparisons over {SEEDS} training seeds and G exams** (coverage, %):",
        "",
        markdown(seeds, index=False),
    ])
    print(body)
    if not args.no_write:
        update_section(DOCS, "Coverage of the intervals", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
