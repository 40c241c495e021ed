"""Uncertainty with the exam as the unit: intervals, paired differences, tests of difference and of
equivalence, multiplicity, and the verdict they support.

Slices of one exam are correlated (neighbouring slices of one knee look alike), so an interval
computed as if slices were independent is too narrow. Every interval here treats the exam as the
unit, and states how many exams and slices it rests on. Comparisons of two methods run on the same
slices are paired: the per-slice differences are summarised by exam, which removes the
between-exam variation both methods share.

Interval methods (`METHODS`) for a mean over slices:
- "t": the mean with its cluster-robust standard error (the linearised variance of a ratio
  estimator with the small-sample factor G / (G - 1), "CR1"; Cameron & Miller 2015, secs. II.C
  and VI) and Student's t with G - 1 degrees of freedom, G the number of exams. With the same
  number of slices in every exam it is the one-sample t test on the exam means.
- "percentile": the percentile interval of B cluster-bootstrap means, each resampled exam bringing
  all its slices (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007).
- "bca": the same bootstrap, bias-corrected and accelerated (Efron 1987), the acceleration from the
  leave-one-exam-out jackknife (scipy.stats.bootstrap).
- "studentized": the bootstrap-t interval (Davison & Hinkley 1997, sec. 5.2.1): the quantiles of
  (resampled mean - mean) / its resample's CR1 standard error, scaled by the standard error.
`INTERVAL` is the one the study's tables use, chosen by its coverage at the study's 6 and 8 exams in
benchmarks/bench_coverage.py (docs/statistics.md has the table and the choice). Below `MIN_EXAMS`
exams no interval is given.

Tests take the t reference: two-sided for a difference, two one-sided tests (TOST; Schuirmann 1987)
for equivalence within a margin, Holm's step-down adjustment (Holm 1979) for a family of tests.
Comparisons of models trained with several seeds take both seeds and exams as random
(`seeds_and_exams`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mrnet_utils.errors import MRNetError

MIN_EXAMS = 5  # fewer exams than this: no interval
BOOTSTRAP_SAMPLES = 2000
METHODS = ("t", "percentile", "bca", "studentized")
INTERVAL = "t"  # the study's tables' method (docs/statistics.md: its coverage at 5 to 120 exams)
ALPHA = 0.05  # the level of every test


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval (NaN when there are too few exams), standard error and sizes.

    `df` is the degrees of freedom of a t interval, NaN for a bootstrap one; tests need it."""

    mean: float
    low: float
    high: float
    se: float
    exams: int
    slices: int
    df: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)


def _clusters(values, exams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite values with their exam ids; per-exam sums and counts (the units every method resamples or sums)."""
    values = np.asarray(values, dtype=float)
    exams = np.asarray(exams)
    if values.shape != exams.shape or values.ndim != 1:
        raise MRNetError(f"values {values.shape} and exams {exams.shape} must be 1-D and of one length")
    keep = np.isfinite(values)
    values, exams = values[keep], exams[keep]
    ids, index = np.unique(exams, return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(ids))
    counts = np.bincount(index, minlength=len(ids)).astype(float)
    return values, sums, counts


def _cluster_se(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The CR1 standard error of sum(sums) / sum(counts) over the last axis (one row per resample)."""
    exams = sums.shape[-1]
    mean = sums.sum(axis=-1, keepdims=True) / counts.sum(axis=-1, keepdims=True)
    residuals = sums - counts * mean  # each exam's share of the deviation from the overall mean
    return np.sqrt(exams / (exams - 1) * np.sum(residuals**2, axis=-1)) / counts.sum(axis=-1)


def _t_interval(mean: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    return mean - half, mean + half


def exam_interval(
    values, exams, confidence: float = 0.95, method: str = INTERVAL, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
) -> Estimate:
    """The mean of `values` (one per slice; non-finite ones left out) with an interval treating the exam
    as the unit, by `method` (one of METHODS; the bootstrap ones draw `samples` resamples from `seed`)."""
    if method not in METHODS:
        raise MRNetError(f"method={method!r} is not an interval method; choose one of {', '.join(METHODS)}")
    values, sums, counts = _clusters(values, exams)
    if not len(values):
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, 0)
    mean, exam_count = float(values.mean()), len(sums)
    if exam_count < MIN_EXAMS:
        return Estimate(mean, math.nan, math.nan, math.nan, exam_count, len(values))
    se = float(_cluster_se(sums, counts))
    if method == "t":
        low, high = _t_interval(mean, se, exam_count - 1, confidence)
        return Estimate(mean, low, high, se, exam_count, len(values), float(exam_count - 1))
    if method == "studentized":
        draws = np.random.default_rng(seed).integers(0, exam_count, (samples, exam_count))
        boot_sums, boot_counts = sums[draws], counts[draws]
        boot_means = boot_sums.sum(axis=1) / boot_counts.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # a resample of one exam repeated has se 0
            t_stats = (boot_means - mean) / _cluster_se(boot_sums, boot_counts)
        upper, lower = np.nanquantile(t_stats, [(1 + confidence) / 2, (1 - confidence) / 2])
        return Estimate(mean, mean - float(upper) * se, mean - float(lower) * se, float(boot_means.std(ddof=1)),
                        exam_count, len(values))
    result = stats.bootstrap(
        (sums, counts), lambda s, c, axis=-1: s.sum(axis=axis) / c.sum(axis=axis), paired=True, vectorized=True,
        n_resamples=samples, confidence_level=confidence, method="BCa" if method == "bca" else "percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Estimate(mean, float(interval.low), float(interval.high), float(result.standard_error), exam_count,
                    len(values))


def per_exam_means(values, exams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exam ids, slices per exam, mean per exam) of the finite values: what the exam-level methods summarise."""
    values = np.asarray(values, dtype=float)
    exams = np.asarray(exams)
    keep = np.isfinite(values)
    ids, index = np.unique(exams[keep], return_inverse=True)
    counts = np.bincount(index, minlength=len(ids))
    means = np.bincount(index, weights=values[keep], minlength=len(ids)) / np.maximum(counts, 1)
    return ids, counts, means


def seeds_and_exams(differences, slices: int, confidence: float = 0.95) -> Estimate:
    """The mean of a (seeds, exams) table of differences (seed s's A - B, averaged over exam e's slices),
    with training seeds and exams both random.

    The crossed two-way random-effects model d_se = mu + a_s + b_e + e_se gives
    Var(mean) = (MS_seed + MS_exam - MS_residual) / (S E); as in the multi-reader multi-case analysis of
    imaging studies (seeds as readers, exams as cases: Dorfman, Berbaum & Metz 1992), the exam part is
    kept at no less than 0 and the degrees of freedom are Satterthwaite's (Hillis 2007). With no exam
    effect this is the seed-level t test on the exam-averaged differences. `slices` is what the table
    averages, for the record. Each exam weighs equally."""
    table = np.asarray(differences, dtype=float)
    if table.ndim != 2 or not np.isfinite(table).all():
        raise MRNetError(f"differences must be a finite (seeds, exams) table; got shape {table.shape}")
    seeds, exams = table.shape
    if seeds < 2:
        raise MRNetError(f"a comparison over training seeds needs at least 2 seeds per arm; got {seeds}: train more seeds")
    mean = float(table.mean())
    if exams < MIN_EXAMS:
        return Estimate(mean, math.nan, math.nan, math.nan, exams, slices)
    seed_means, exam_means = table.mean(axis=1), table.mean(axis=0)
    ms_seed = exams * float(np.sum((seed_means - mean) ** 2)) / (seeds - 1)
    ms_exam = seeds * float(np.sum((exam_means - mean) ** 2)) / (exams - 1)
    residual = table - seed_means[:, None] - exam_means[None, :] + mean
    ms_residual = float(np.sum(residual**2)) / ((seeds - 1) * (exams - 1))
    exam_part = max(ms_exam - ms_residual, 0.0)
    variance = (ms_seed + exam_part) / (seeds * exams)
    if exam_part > 0:
        df = (ms_seed + exam_part) ** 2 / (
            ms_seed**2 / (seeds - 1) + ms_exam**2 / (exams - 1) + ms_residual**2 / ((seeds - 1) * (exams - 1))
        )
    else:
        df = seeds - 1
    se = math.sqrt(variance)
    low, high = _t_interval(mean, se, df, confidence)
    return Estimate(mean, low, high, se, exams, slices, float(df))


@dataclass(frozen=True)
class Comparison:
    """A paired difference A - B over the same slices, its interval and its tests."""

    a: str
    b: str
    metric: str
    difference: Estimate
    higher_is_better: bool

    @property
    def p_value(self) -> float:
        """Two-sided t test of no difference; NaN for a bootstrap interval (no degrees of freedom)."""
        d = self.difference
        if not d.has_interval or math.isnan(d.df):
            return math.nan
        if d.se == 0:
            return float(d.mean == 0)
        return float(2 * stats.t.sf(abs(d.mean) / d.se, d.df))

    def equivalence_p(self, margin: float) -> float:
        """Two one-sided t tests (Schuirmann 1987) of |A - B| >= `margin`: the larger of their p values.
        Below the level, A and B are equivalent within the margin. NaN without degrees of freedom."""
        d = self.difference
        if not d.has_interval or math.isnan(d.df):
            return math.nan
        if d.se == 0:
            return float(abs(d.mean) >= margin)
        above_lower = stats.t.sf((d.mean + margin) / d.se, d.df)  # H0: difference <= -margin
        below_upper = stats.t.cdf((d.mean - margin) / d.se, d.df)  # H0: difference >= +margin
        return float(max(above_lower, below_upper))


def paired_comparison(
    a: str, b: str, metric: str, values_a, values_b, exams, higher_is_better: bool = True,
    confidence: float = 0.95, seed: int = 0, method: str = INTERVAL,
) -> Comparison:
    """A - B per slice (the same slices, in the same order), with an exam-level interval (exam_interval)."""
    values_a, values_b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if values_a.shape != values_b.shape:
        raise MRNetError(f"paired values differ in shape: {values_a.shape} vs {values_b.shape}")
    estimate = exam_interval(values_a - values_b, exams, confidence, method, seed=seed)
    return Comparison(a, b, metric, estimate, higher_is_better)


def holm(p_values) -> np.ndarray:
    """Holm's (1979) step-down adjusted p values, in the given order: reject where adjusted p < level, and
    the chance of any false rejection in the family stays below the level. NaN entries stay NaN and do
    not count towards the family."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    steps = p[order] * (len(order) - np.arange(len(order)))
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def verdict(
    comparison: Comparison, margin: float | None = None, unit: str = "", p: float | None = None,
    p_equivalence: float | None = None, alpha: float = ALPHA,
) -> str:
    """What the comparison supports, in words: "A better than B", "equivalent within 0.2 dB" or
    "inconclusive: the data cannot exclude -0.3 dB" (the end of the interval farthest from 0).

    `p` and `p_equivalence` default to the comparison's own tests; give adjusted ones for a family.
    Without a margin, equivalence is not tested. A bootstrap interval, which has no test, reads as a
    difference when it excludes 0. A difference significant and also equivalent within the margin says so.
    """
    d = comparison.difference
    if not d.has_interval:
        return f"no interval: {d.exams} exams < {MIN_EXAMS}"
    p = comparison.p_value if p is None else p
    different = p < alpha if not math.isnan(p) else (d.low > 0 or d.high < 0)
    equivalent_within = False
    if margin is not None:
        p_equivalence = comparison.equivalence_p(margin) if p_equivalence is None else p_equivalence
        equivalent_within = p_equivalence < alpha
    if different:
        a_better = (d.mean > 0) == comparison.higher_is_better
        better, worse = (comparison.a, comparison.b) if a_better else (comparison.b, comparison.a)
        within = f", by less than the {margin:g}{unit} margin" if equivalent_within else ""
        return f"{better} better than {worse}{within}"
    if equivalent_within:
        return f"equivalent within {margin:g}{unit}"
    farthest = d.low if abs(d.low) > abs(d.high) else d.high
    return f"inconclusive: the data cannot exclude {farthest:+.3g}{unit}"


def equivalent(comparison: Comparison, margin: float) -> bool:
    """Equivalence from the interval alone: the interval of A - B lies inside (-margin, +margin). With a
    90% t interval this is the TOST at the 5% level (Schuirmann 1987); it also serves bootstrap intervals."""
    d = comparison.difference
    return d.has_interval and -margin < d.low and d.high < margin
