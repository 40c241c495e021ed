"""Uncertainty with the exam as the unit: cluster bootstrap means, paired differences, verdicts.

Slices of one exam are correlated (neighbouring slices of one knee look alike), so an
interval computed as if slices were independent is too narrow. Every interval here
resamples whole exams with replacement, keeping all their slices (the cluster, or
"case", bootstrap; Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007), and reports
how many exams and slices it rests on. Comparisons between two methods run on the same
slices are paired: the per-slice differences are bootstrapped by exam, which removes the
between-exam variation both methods share.

Intervals are percentile intervals of B bootstrap means. Below `MIN_EXAMS` exams no
interval is given: the resampling distribution of so few clusters says little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mrnet_utils.errors import MRNetError

MIN_EXAMS = 5  # fewer exams than this: no interval
BOOTSTRAP_SAMPLES = 2000
# A difference this many standard errors from zero is found 80% of the time by a two-sided
# test at the 5% level: z_0.975 + z_0.80 = 1.960 + 0.842 (the usual power calculation).
DETECTABLE_SE = 2.802


@dataclass(frozen=True)
class Estimate:
    """A mean over slices with its exam-bootstrap interval (NaN when too few exams)."""

    mean: float
    low: float
    high: float
    se: float  # bootstrap standard error of the mean
    exams: int
    slices: int

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)


def _clusters(values, exams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite values with their exam ids; per-exam sums and counts (the bootstrap's units)."""
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


def exam_bootstrap(
    values, exams, confidence: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Estimate:
    """The mean of `values` (one per slice; non-finite ones left out) and a percentile interval from
    resampling exams with replacement, each drawn exam bringing all its slices."""
    values, sums, counts = _clusters(values, exams)
    if not len(values):
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, 0)
    mean = float(values.mean())
    if len(sums) < MIN_EXAMS:
        return Estimate(mean, math.nan, math.nan, math.nan, len(sums), len(values))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(samples, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(mean, float(low), float(high), float(means.std(ddof=1)), len(sums), len(values))


def per_exam_means(values, exams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exam ids, slices per exam, mean per exam) of the finite values: what the bootstrap resamples."""
    values = np.asarray(values, dtype=float)
    exams = np.asarray(exams)
    keep = np.isfinite(values)
    ids, index = np.unique(exams[keep], return_inverse=True)
    counts = np.bincount(index, minlength=len(ids))
    means = np.bincount(index, weights=values[keep], minlength=len(ids)) / np.maximum(counts, 1)
    return ids, counts, means


@dataclass(frozen=True)
class Comparison:
    """A paired difference A - B over the same slices, its interval and what it supports."""

    a: str
    b: str
    metric: str
    difference: Estimate
    higher_is_better: bool

    @property
    def detectable(self) -> float:
        """The smallest true difference this comparison would find 80% of the time (two-sided, 5%)."""
        return DETECTABLE_SE * self.difference.se

    @property
    def verdict(self) -> str:
        d = self.difference
        if not d.has_interval:
            return f"no interval: {d.exams} exams < {MIN_EXAMS}"
        if d.low > 0 or d.high < 0:
            a_better = (d.low > 0) == self.higher_is_better
            better, worse = (self.a, self.b) if a_better else (self.b, self.a)
            return f"{better} better than {worse}"
        return f"no difference detectable at this size (detectable: {self.detectable:.3g})"


def paired_comparison(
    a: str, b: str, metric: str, values_a, values_b, exams, higher_is_better: bool = True,
    confidence: float = 0.95, seed: int = 0,
) -> Comparison:
    """A - B per slice (the same slices, in the same order), bootstrapped by exam."""
    values_a, values_b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if values_a.shape != values_b.shape:
        raise MRNetError(f"paired values differ in shape: {values_a.shape} vs {values_b.shape}")
    return Comparison(a, b, metric, exam_bootstrap(values_a - values_b, exams, confidence, seed=seed),
                      higher_is_better)


def equivalent(comparison: Comparison, margin: float) -> bool:
    """Equivalence test (two one-sided tests, Schuirmann 1987): the interval of A - B lies inside
    (-margin, +margin). Use a 90% interval for a test at the 5% level."""
    d = comparison.difference
    return d.has_interval and -margin < d.low and d.high < margin
