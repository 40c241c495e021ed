"""Exam-level statistics: intervals with known coverage, tests pinned to scipy, Holm, seeds and exams, verdicts."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from benchmarks import bench_coverage
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.statistics import (
    METHODS,
    MIN_EXAMS,
    Comparison,
    Estimate,
    equivalent,
    exam_interval,
    holm,
    paired_comparison,
    per_exam_means,
    seeds_and_exams,
    verdict,
)


def clustered(rng, exams=12, slices=5, exam_sd=1.0, slice_sd=0.3, mean=0.0):
    """Values whose slices share their exam's offset: strongly correlated within an exam."""
    offsets = rng.normal(mean, exam_sd, exams)
    values = np.repeat(offsets, slices) + rng.normal(0, slice_sd, exams * slices)
    return values, np.repeat(np.arange(exams), slices)


def test_the_t_interval_with_equal_slices_is_scipys_one_sample_t_test_on_the_exam_means():
    rng = np.random.default_rng(0)
    values, exams = clustered(rng, exams=8, mean=0.4)
    estimate = exam_interval(values, exams, confidence=0.9)
    exam_means = per_exam_means(values, exams)[2]
    reference = stats.ttest_1samp(exam_means, 0.0)
    interval = reference.confidence_interval(0.9)
    assert estimate.mean == pytest.approx(exam_means.mean())
    assert (estimate.low, estimate.high) == pytest.approx((interval.low, interval.high))
    assert estimate.se == pytest.approx(stats.sem(exam_means)) and estimate.df == 7
    comparison = paired_comparison("A", "B", "psnr", values, np.zeros_like(values), exams)
    assert comparison.p_value == pytest.approx(reference.pvalue)


def test_the_t_interval_with_unequal_slices_has_the_cluster_robust_sandwich_variance():
    """The slice mean is least squares on an intercept; its CR1 variance, written as the sandwich
    (X'X)^-1 (sum_g X_g' e_g e_g' X_g) (X'X)^-1 G / (G - 1) (Cameron & Miller 2015, eq. 11)."""
    rng = np.random.default_rng(1)
    counts = [2, 7, 3, 9, 4, 5]
    exams = np.repeat(np.arange(len(counts)), counts)
    values = rng.normal(0, 1, len(counts))[exams] + rng.normal(0, 0.5, len(exams))
    x = np.ones((len(values), 1))
    bread = np.linalg.inv(x.T @ x)
    residuals = values - x @ (bread @ x.T @ values)
    meat = sum(np.outer(x[exams == g].T @ residuals[exams == g], x[exams == g].T @ residuals[exams == g])
               for g in range(len(counts)))
    variance = (bread @ meat @ bread)[0, 0] * len(counts) / (len(counts) - 1)
    estimate = exam_interval(values, exams)
    assert estimate.mean == pytest.approx(values.mean()) and estimate.se == pytest.approx(math.sqrt(variance))
    half = stats.t.ppf(0.975, len(counts) - 1) * math.sqrt(variance)
    assert (estimate.low, estimate.high) == pytest.approx((values.mean() - half, values.mean() + half))


def test_tost_is_scipys_two_one_sided_t_tests_on_the_exam_means():
    rng = np.random.default_rng(2)
    values, exams = clustered(rng, exams=9, exam_sd=0.1, mean=0.05)
    comparison = paired_comparison("A", "B", "psnr", values, np.zeros_like(values), exams)
    exam_means = per_exam_means(values, exams)[2]
    for margin in (0.05, 0.2, 0.5):
        above = stats.ttest_1samp(exam_means, -margin, alternative="greater").pvalue
        below = stats.ttest_1samp(exam_means, margin, alternative="less").pvalue
        assert comparison.equivalence_p(margin) == pytest.approx(max(above, below))
    # TOST at 5% rejects exactly when the 90% t interval lies inside the margins
    ninety = paired_comparison("A", "B", "psnr", values, np.zeros_like(values), exams, confidence=0.9)
    for margin in np.linspace(0.05, 0.4, 30):
        assert (comparison.equivalence_p(margin) < 0.05) == equivalent(ninety, margin)


def _closed_testing(p):
    """Holm by brute force: the closed testing procedure over every intersection, each tested by Bonferroni."""
    m = len(p)
    return [max(min(1.0, len(subset) * min(p[j] for j in subset))
                for size in range(1, m + 1) for subset in itertools.combinations(range(m), size) if i in subset)
            for i in range(m)]


def test_holm_matches_closed_testing_with_bonferroni_and_skips_missing_tests():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.uniform(0, 0.2, 6) ** rng.uniform(0.5, 3)
        assert holm(p) == pytest.approx(_closed_testing(list(p)))
    adjusted = holm([0.01, np.nan, 0.04, 0.03])
    assert math.isnan(adjusted[1]) and adjusted[[0, 2, 3]] == pytest.approx(_closed_testing([0.01, 0.04, 0.03]))


def test_seeds_and_exams_without_an_exam_effect_is_the_seed_level_t_test():
    seed_effects = np.array([0.3, -0.1, 0.5, 0.2])
    table = seed_effects[:, None] + np.zeros((1, 7))  # every exam the same within a seed
    estimate = seeds_and_exams(table, slices=35)
    reference = stats.ttest_1samp(seed_effects, 0.0).confidence_interval()
    assert (estimate.low, estimate.high) == pytest.approx((reference.low, reference.high))
    assert estimate.df == 3 and (estimate.exams, estimate.slices) == (7, 35)


def test_seeds_and_exams_estimates_the_variance_of_the_mean_without_bias():
    """A crossed seeds x exams design with all three effects: the mean of the estimated variances over
    many draws is the variance of the mean, sd_s^2 / S + sd_e^2 / E + sd_se^2 / (S E)."""
    rng = np.random.default_rng(4)
    seeds, exams, (sd_s, sd_e, sd_se) = 3, 8, (0.6, 0.8, 0.3)
    variances = []
    for _ in range(4000):
        table = (rng.normal(0, sd_s, (seeds, 1)) + rng.normal(0, sd_e, (1, exams))
                 + rng.normal(0, sd_se, (seeds, exams)))
        variances.append(seeds_and_exams(table, slices=exams).se ** 2)
    truth = sd_s**2 / seeds + sd_e**2 / exams + sd_se**2 / (seeds * exams)
    # the truncation of a negative exam part at 0 adds a little; the Monte Carlo error is about 1.5%
    assert np.mean(variances) == pytest.approx(truth, rel=0.05)


def test_seeds_and_exams_needs_two_seeds_and_enough_exams():
    with pytest.raises(MRNetError, match="needs at least 2 seeds per arm; got 1"):
        seeds_and_exams(np.zeros((1, 8)), slices=8)
    assert not seeds_and_exams(np.ones((3, MIN_EXAMS - 1)), slices=4).has_interval
    with pytest.raises(MRNetError, match=r"finite \(seeds, exams\) table"):
        seeds_and_exams([[1.0, np.nan]], slices=2)


def test_the_t_interval_keeps_its_coverage_at_8_exams_where_the_percentile_bootstrap_does_not():
    """A small run of benchmarks/bench_coverage.py (docs/statistics.md has the full one)."""
    scenarios = {"normal": bench_coverage.SCENARIOS["normal exam effects, 4-12 slices"]}
    table = bench_coverage.exam_coverage(300, exam_counts=(8,), scenarios=scenarios, methods=("t", "percentile"))
    table = table.set_index("method")["8 exams"]
    assert table["t"] >= 90  # nominal 95; 300 studies give a Monte Carlo standard error of 1.3 points
    assert table["percentile"] < table["t"] and table[bench_coverage.SLICE_T] < 75
    seeds = bench_coverage.seed_coverage(300, exam_counts=(8,)).set_index(["scenario", "method"])["8 exams"]
    assert (seeds.xs("seeds_and_exams (both random)", level="method") >= 90).all()
    assert seeds[("seeds vary most (sd 1, 0.3, 0.2)", "over exams (seeds fixed)")] < 60


def test_every_method_states_its_sizes_and_leaves_out_non_finite_values():
    values = np.array([1.0, 2.0, np.inf, 3.0, 4.0, 5.0, 6.0, np.nan])
    exams = np.array([0, 0, 0, 1, 2, 3, 4, 5])
    for method in METHODS:
        estimate = exam_interval(values, exams, method=method)
        assert (estimate.exams, estimate.slices) == (5, 6)  # exam 5 has no finite value
        assert estimate.mean == pytest.approx(3.5)
        assert estimate.low < 3.5 < estimate.high and estimate.se > 0
        assert math.isnan(estimate.df) == (method != "t")
    with pytest.raises(MRNetError, match="method='wild' is not an interval method; choose one of t, percentile"):
        exam_interval(values, exams, method="wild")


def test_the_studentized_interval_leans_towards_the_long_tail():
    """Right-skewed exam means: the bootstrap-t interval reaches further above the mean than below."""
    rng = np.random.default_rng(5)
    offsets = rng.exponential(1.0, 15) ** 2
    estimate = exam_interval(np.repeat(offsets, 3), np.repeat(np.arange(15), 3), method="studentized")
    t_interval = exam_interval(np.repeat(offsets, 3), np.repeat(np.arange(15), 3))
    assert estimate.high - estimate.mean > 1.3 * (estimate.mean - estimate.low)
    assert t_interval.high - t_interval.mean == pytest.approx(t_interval.mean - t_interval.low)


def test_bootstrap_intervals_are_reproducible_and_follow_the_seed_and_confidence():
    rng = np.random.default_rng(6)
    values, exams = clustered(rng, exams=10)
    for method in ("percentile", "bca", "studentized"):
        default = exam_interval(values, exams, method=method)
        assert default == exam_interval(values, exams, method=method, seed=0) != exam_interval(
            values, exams, method=method, seed=1)
        narrow = exam_interval(values, exams, confidence=0.8, method=method)
        assert default.low < narrow.low < narrow.high < default.high


def test_too_few_exams_give_no_interval_and_say_so():
    values, exams = np.arange(8.0), np.repeat(np.arange(MIN_EXAMS - 1), 2)
    estimate = exam_interval(values, exams)
    assert estimate.mean == 3.5 and not estimate.has_interval and math.isnan(estimate.high)
    comparison = paired_comparison("A", "B", "psnr", values + 1, values, exams)
    assert math.isnan(comparison.p_value) and math.isnan(comparison.equivalence_p(0.2))
    assert verdict(comparison) == f"no interval: {MIN_EXAMS - 1} exams < {MIN_EXAMS}"


def test_paired_difference_finds_a_shift_that_unpaired_intervals_would_hide():
    """B = A - 0.2 on every slice, with exam offsets (sd 1) far larger than the shift."""
    rng = np.random.default_rng(7)
    a, exams = clustered(rng, exams=10)
    b = a - 0.2 + rng.normal(0, 0.02, len(a))
    interval_a, interval_b = exam_interval(a, exams), exam_interval(b, exams)
    assert interval_a.low < interval_b.high  # the unpaired intervals overlap ...
    comparison = paired_comparison("A", "B", "psnr", a, b, exams)
    assert comparison.difference.mean == pytest.approx(0.2, abs=0.02)
    assert verdict(comparison) == "A better than B"  # ... the paired difference does not include zero
    assert verdict(comparison, margin=0.5, unit=" dB") == "A better than B, by less than the 0.5 dB margin"
    lower_is_better = paired_comparison("A", "B", "lpips", a, b, exams, higher_is_better=False)
    assert verdict(lower_is_better) == "B better than A"


def _comparison(mean, low, high, df=7.0, exams=8):
    se = (high - low) / (2 * stats.t.ppf(0.975, df)) if not math.isnan(df) else (high - low) / 4
    return Comparison("A", "B", "psnr", Estimate(mean, low, high, se, exams, 40, df), higher_is_better=True)


def test_the_verdict_says_equivalent_inconclusive_or_better_and_takes_adjusted_tests():
    assert verdict(_comparison(0.02, -0.05, 0.09), margin=0.2, unit=" dB") == "equivalent within 0.2 dB"
    assert verdict(_comparison(0.1, -0.31, 0.51), margin=0.2, unit=" dB") == (
        "inconclusive: the data cannot exclude +0.51 dB")
    assert verdict(_comparison(-0.1, -0.4, 0.2)) == "inconclusive: the data cannot exclude -0.4"
    clear = _comparison(0.5, 0.3, 0.7)
    assert verdict(clear) == "A better than B" and clear.p_value < 0.05
    # a primary row reads its Holm-adjusted p values: not significant after adjustment, not a claim
    assert verdict(clear, margin=0.2, unit=" dB", p=0.2, p_equivalence=1.0).startswith("inconclusive")
    assert verdict(_comparison(0.02, -0.05, 0.09), margin=0.2, p_equivalence=0.3).startswith("inconclusive")
    # a bootstrap interval (no degrees of freedom, no test) reads from the interval alone
    assert verdict(_comparison(-0.5, -0.7, -0.3, df=math.nan)) == "B better than A"
    assert verdict(_comparison(0.1, -0.2, 0.4, df=math.nan), margin=1.0).startswith("inconclusive")


def test_a_difference_with_no_spread_is_decided_by_its_sign_and_the_margin():
    exams = np.arange(6)
    same = paired_comparison("A", "B", "psnr", np.ones(6), np.ones(6), exams)
    shifted = paired_comparison("A", "B", "psnr", np.full(6, 1.5), np.ones(6), exams)
    assert same.p_value == 1.0 and same.equivalence_p(0.2) == 0.0
    assert shifted.p_value == 0.0 and shifted.equivalence_p(0.2) == 1.0 and shifted.equivalence_p(0.6) == 0.0


def test_per_exam_means_are_what_the_exam_level_methods_summarise():
    ids, counts, means = per_exam_means([1.0, 3.0, 10.0, np.nan, 7.0], [4, 4, 9, 9, 2])
    assert list(ids) == [2, 4, 9] and list(counts) == [1, 2, 1] and list(means) == [7.0, 2.0, 10.0]


def test_mismatched_inputs_are_refused():
    with pytest.raises(MRNetError, match="must be 1-D and of one length"):
        exam_interval([1.0, 2.0], [0])
    with pytest.raises(MRNetError, match="paired values differ in shape"):
        paired_comparison("A", "B", "psnr", [1.0, 2.0], [1.0], [0, 1])


def test_nothing_finite_is_an_empty_estimate_and_too_few_exams_keep_their_sizes():
    empty = exam_interval([np.nan, np.inf], [0, 1])
    assert (empty.exams, empty.slices) == (0, 0)
    assert all(math.isnan(value) for value in (empty.mean, empty.low, empty.high, empty.se))
    few = exam_interval([1.0, 2.0, 4.0], [0, 0, 1])
    assert few.mean == pytest.approx(7 / 3) and (few.exams, few.slices) == (2, 3) and math.isnan(few.se)


def test_missing_values_given_as_none_are_left_out_like_nan():
    values, exams = [1.0, None, 3.0, 5.0, None, 2.0, 4.0], [0, 0, 1, 2, 3, 4, 5]
    estimate = exam_interval(values, exams)
    assert estimate.mean == pytest.approx(3.0) and (estimate.exams, estimate.slices) == (5, 5)
    paired = paired_comparison("A", "B", "ssim", values, [0.0, 0.0, None, 1.0, 1.0, 1.0, 1.0], exams)
    assert paired.metric == "ssim" and paired.difference.mean == pytest.approx(2.25)  # exams 0, 2, 4, 5


def test_equivalence_from_the_interval_is_strict_at_the_margin():
    rng = np.random.default_rng(8)
    a, exams = clustered(rng, exams=10)
    for shift in (-0.05, 0.05):  # an interval whose low end, then whose high end, is the farther from 0
        comparison = paired_comparison("A", "B", "psnr", a + shift + rng.normal(0, 0.01, len(a)), a, exams,
                                       confidence=0.9)
        d = comparison.difference
        farther = max(-d.low, d.high)
        assert abs(d.low) != abs(d.high) and equivalent(comparison, margin=farther * 1.001)
        assert not equivalent(comparison, margin=farther)  # an interval touching the margin is not inside it
