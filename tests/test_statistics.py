"""Exam-level statistics: intervals that cover the truth for clustered data, paired differences, verdicts."""

import math

import numpy as np
import pytest
from scipy import stats

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.statistics import (
    MIN_EXAMS,
    equivalent,
    exam_bootstrap,
    paired_comparison,
    per_exam_means,
)


def clustered(rng, exams=12, slices=5, exam_sd=1.0, slice_sd=0.3, mean=0.0):
    """Values whose slices share their exam's offset: strongly correlated within an exam."""
    offsets = rng.normal(mean, exam_sd, exams)
    values = np.repeat(offsets, slices) + rng.normal(0, slice_sd, exams * slices)
    return values, np.repeat(np.arange(exams), slices)


def test_exam_bootstrap_covers_the_true_mean_where_a_slice_interval_does_not():
    """200 simulated studies of 12 exams x 5 correlated slices, true mean 0."""
    rng = np.random.default_rng(0)
    covered_by_exam, covered_by_slice = 0, 0
    for draw in range(200):
        values, exams = clustered(rng)
        estimate = exam_bootstrap(values, exams, samples=400, seed=draw)
        covered_by_exam += estimate.low <= 0 <= estimate.high
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        covered_by_slice += abs(values.mean()) <= half
    # Nominal 95%; the percentile bootstrap of 12 clusters runs a little short. Treating the
    # 60 slices as independent covers far less (the intervals are about sqrt(5) too narrow).
    assert covered_by_exam / 200 >= 0.85
    assert covered_by_slice / 200 <= 0.70


def test_the_estimate_states_its_sizes_and_leaves_out_non_finite_values():
    values = np.array([1.0, 2.0, np.inf, 3.0, 4.0, 5.0, 6.0, np.nan])
    exams = np.array([0, 0, 0, 1, 2, 3, 4, 5])
    estimate = exam_bootstrap(values, exams)
    assert (estimate.exams, estimate.slices) == (5, 6)  # exam 5 has no finite value
    assert estimate.mean == pytest.approx(3.5)
    assert estimate.low < 3.5 < estimate.high and estimate.se > 0


def test_too_few_exams_give_no_interval_and_say_so():
    values, exams = np.arange(8.0), np.repeat(np.arange(MIN_EXAMS - 1), 2)
    estimate = exam_bootstrap(values, exams)
    assert estimate.mean == 3.5 and not estimate.has_interval and math.isnan(estimate.high)
    comparison = paired_comparison("A", "B", "psnr", values + 1, values, exams)
    assert comparison.verdict == f"no interval: {MIN_EXAMS - 1} exams < {MIN_EXAMS}"


def test_paired_difference_finds_a_shift_that_unpaired_intervals_would_hide():
    """B = A - 0.2 on every slice, with exam offsets (sd 1) far larger than the shift."""
    rng = np.random.default_rng(1)
    a, exams = clustered(rng, exams=10)
    b = a - 0.2 + rng.normal(0, 0.02, len(a))
    interval_a, interval_b = exam_bootstrap(a, exams), exam_bootstrap(b, exams)
    assert interval_a.low < interval_b.high  # the unpaired intervals overlap ...
    comparison = paired_comparison("A", "B", "psnr", a, b, exams)
    assert comparison.difference.mean == pytest.approx(0.2, abs=0.02)
    assert comparison.verdict == "A better than B"  # ... the paired difference does not include zero
    lower_is_better = paired_comparison("A", "B", "lpips", a, b, exams, higher_is_better=False)
    assert lower_is_better.verdict == "B better than A"


def test_no_difference_is_reported_with_the_difference_that_could_have_been_found():
    rng = np.random.default_rng(2)
    a, exams = clustered(rng, exams=8)
    b = a + rng.normal(0, 0.5, len(a))
    comparison = paired_comparison("A", "B", "ssim", a, b, exams)
    assert comparison.verdict.startswith("no difference detectable at this size (detectable: ")
    assert comparison.detectable == pytest.approx(2.802 * comparison.difference.se)
    assert comparison.difference.low < 0 < comparison.difference.high


def test_per_exam_means_are_what_the_bootstrap_resamples():
    ids, counts, means = per_exam_means([1.0, 3.0, 10.0, np.nan, 7.0], [4, 4, 9, 9, 2])
    assert list(ids) == [2, 4, 9] and list(counts) == [1, 2, 1] and list(means) == [7.0, 2.0, 10.0]


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    a, exams = clustered(rng, exams=10)
    close = paired_comparison("fast", "chain", "psnr", a + 0.01 + rng.normal(0, 0.01, len(a)), a, exams,
                              confidence=0.90)
    assert equivalent(close, margin=0.1) and not equivalent(close, margin=0.005)
    # a point estimate inside the margin is not enough when the interval reaches past it
    noisy = paired_comparison("fast", "chain", "psnr", a + rng.normal(0, 0.5, len(a)), a, exams, confidence=0.90)
    assert abs(noisy.difference.mean) < 0.06 and not equivalent(noisy, margin=0.06)


def test_mismatched_inputs_are_refused():
    with pytest.raises(MRNetError, match="must be 1-D and of one length"):
        exam_bootstrap([1.0, 2.0], [0])
    with pytest.raises(MRNetError, match="paired values differ in shape"):
        paired_comparison("A", "B", "psnr", [1.0, 2.0], [1.0], [0, 1])


def test_nothing_finite_is_an_empty_estimate_and_too_few_exams_keep_their_sizes():
    empty = exam_bootstrap([np.nan, np.inf], [0, 1])
    assert (empty.exams, empty.slices) == (0, 0)
    assert all(math.isnan(value) for value in (empty.mean, empty.low, empty.high, empty.se))
    few = exam_bootstrap([1.0, 2.0, 4.0], [0, 0, 1])
    assert few.mean == pytest.approx(7 / 3) and (few.exams, few.slices) == (2, 3) and math.isnan(few.se)


def test_missing_values_given_as_none_are_left_out_like_nan():
    values, exams = [1.0, None, 3.0, 5.0, None, 2.0, 4.0], [0, 0, 1, 2, 3, 4, 5]
    estimate = exam_bootstrap(values, exams)
    assert estimate.mean == pytest.approx(3.0) and (estimate.exams, estimate.slices) == (5, 5)
    ids, counts, means = per_exam_means(values, exams)
    assert list(ids) == [0, 1, 2, 4, 5] and list(counts) == [1, 1, 1, 1, 1] and list(means) == [1, 3, 5, 2, 4]
    paired = paired_comparison("A", "B", "ssim", values, [0.0, 0.0, None, 1.0, 1.0, 1.0, 1.0], exams)
    assert paired.metric == "ssim" and paired.difference.mean == pytest.approx(2.25)  # exams 0, 2, 4, 5: (1 + 4 + 1 + 3) / 4


def test_intervals_are_reproducible_central_and_follow_the_confidence_asked_for():
    rng = np.random.default_rng(5)
    values, exams = clustered(rng, exams=10)
    default = exam_bootstrap(values, exams)
    assert default == exam_bootstrap(values, exams) == exam_bootstrap(values, exams, seed=0)
    assert default != exam_bootstrap(values, exams, seed=1)
    paired = paired_comparison("A", "B", "psnr", values + 1, values * 0.5, exams)
    assert paired.difference == exam_bootstrap(values + 1 - values * 0.5, exams)
    seeded = paired_comparison("A", "B", "psnr", values + 1, values * 0.5, exams, seed=3).difference
    assert seeded == exam_bootstrap(values + 1 - values * 0.5, exams, seed=3) != paired.difference
    narrow = paired_comparison("A", "B", "psnr", values + 1, values * 0.5, exams, confidence=0.8).difference
    assert paired.difference.low < narrow.low < narrow.high < paired.difference.high
    # Mirror-image exams: the bootstrap distribution of the mean is symmetric about 0, so a central
    # interval (alpha / 2 in each tail) is symmetric too, up to the noise of 20 000 draws.
    offsets = rng.normal(0, 1, 8)
    mirrored = exam_bootstrap(np.concatenate([offsets, -offsets]), np.arange(16), samples=20_000)
    assert abs(mirrored.low + mirrored.high) < 0.1 * mirrored.se  # alpha / 3 in one tail: about 0.17 se


def test_equivalence_is_strict_at_the_margin():
    rng = np.random.default_rng(4)
    a, exams = clustered(rng, exams=10)
    for shift in (-0.05, 0.05):  # an interval whose low end, then whose high end, is the farther from 0
        comparison = paired_comparison("A", "B", "psnr", a + shift + rng.normal(0, 0.01, len(a)), a, exams,
                                       confidence=0.9)
        d = comparison.difference
        farther = max(-d.low, d.high)
        assert abs(d.low) != abs(d.high) and equivalent(comparison, margin=farther * 1.001)
        assert not equivalent(comparison, margin=farther)  # an interval touching the margin is not inside it
