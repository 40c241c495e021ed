"""The study's result tables: super-resolution vs interpolation, and generation quality.

The evaluation notebooks call these functions and show or write what they return, so
that no metric formula or bookkeeping lives in a notebook. Inputs are model-space
images (B, 1, H, W) in [-1, 1]; metrics see them as [0, 1] (`mrnet_utils.evaluation.metrics`).

A metric whose pretrained weights are not on the machine is not computed: its cell
holds "not computed: <which file is missing and how to supply it>" instead of a number,
and the rest of the table is filled as usual.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from mrnet_utils.data.slices import to_unit
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import endpoints, metrics, statistics
from mrnet_utils.files import write_atomically

# Per-slice metrics of a super-resolved image against its real high-res slice ([0, 1], data range 1),
# and whether a higher value is better (None: no better direction).
SR_METRICS = {
    "psnr": (metrics.psnr, True),
    "ssim": (metrics.ssim, True),
    "ms_ssim": (metrics.ms_ssim, True),
    "fsim": (metrics.fsim, True),
    "vif": (metrics.vif, True),
    "spectrum_error": (metrics.spectrum_error, False),
}
# Column meanings, written under each SR table.
SR_LEGEND = {
    "psnr, ssim, ms_ssim, fsim, vif": "fidelity to the real slice (higher is better; data range 1 on [0, 1])",
    "lpips": "LPIPS with the AlexNet backbone (the project's; lower is better)",
    "lpips_vgg": "LPIPS with the VGG16 backbone (the reference study's; lower is better)",
    "ag": "average gradient, forward differences (the project's; the real slices' value is the target)",
    "ag_sobel": "average gradient as the reference study computed it: mean Sobel magnitude (about 8x `ag`)",
    "ag_error": "|ag of the output - ag of its real slice| (lower is closer in sharpness)",
    "spectrum_error": "mean |log10 ratio| of the output's radial power spectrum to its real slice's (lower is closer)",
    "_mean, _ci_low, _ci_high": "mean over slices and its 95% interval with the exam as the unit (statistics.exam_interval)",
    "nfe": "network evaluations per output image (a posterior mean: all its draws; interpolation: 0)",
}
REFERENCE_ROW = "high-res (reference)"
REAL_ROW = "real (held-out)"
NOT_COMPUTED = "not computed:"  # how a cell without a number starts; the reason follows


def _per_image(metric, predictions: Tensor, reference: Tensor, batch_size: int) -> Tensor:
    return torch.cat([metric(p, r) for p, r in zip(predictions.split(batch_size), reference.split(batch_size))]).cpu()


def _lpips_networks(weights: dict[str, str | os.PathLike | None]) -> dict[str, nn.Module | str]:
    """{column: LPIPS network, or the "not computed: ..." reason when its backbone is missing}."""
    networks = {}
    for column, net in (("lpips", "alex"), ("lpips_vgg", "vgg")):
        try:
            networks[column] = metrics.load_lpips(weights.get(net), net)
        except metrics.MissingWeights as missing:
            networks[column] = f"{NOT_COMPUTED} {missing}"
    return networks


@dataclass(frozen=True)
class SRScores:
    """The SR table (one row per method) and the per-slice values it summarises."""

    table: pd.DataFrame
    per_slice: pd.DataFrame  # method, exam_id, slice_index, one column per metric

    def per_exam(self) -> pd.DataFrame:
        """Per method and exam: the slice count and the mean of every metric (what the bootstrap resamples)."""
        grouped = self.per_slice.drop(columns="slice_index").groupby(["method", "exam_id"], sort=False)
        return grouped.mean().join(grouped.size().rename("slices")).reset_index()

    def compare(self, a: str, b: str, metric: str) -> statistics.Comparison:
        """The paired difference `a - b` in `metric` over the same slices, with its exam-level interval."""
        values = self.per_slice.set_index("method")
        first, second = values.loc[a], values.loc[b]
        if not np.array_equal(first["slice_index"].to_numpy(), second["slice_index"].to_numpy()):
            raise MRNetError(f"{a} and {b} were not scored on the same slices; they cannot be paired")
        better = SR_HIGHER_IS_BETTER[metric]
        return statistics.paired_comparison(
            a, b, metric, first[metric].to_numpy(), second[metric].to_numpy(), first["exam_id"].to_numpy(),
            higher_is_better=better,
        )


SR_HIGHER_IS_BETTER = {
    **{name: better for name, (_, better) in SR_METRICS.items()},
    "lpips": False, "lpips_vgg": False, "ag_error": False,
}


def evaluate_super_resolution(
    low_res: Tensor,
    high_res: Tensor,
    predictions: dict[str, Tensor],
    exam_ids,
    slice_index=None,
    lpips_weights: dict[str, str | os.PathLike | None] | None = None,
    timings: dict[str, float] | None = None,
    batch_size: int = 32,
    evaluations: dict[str, int] | None = None,
) -> SRScores:
    """Score each interpolation baseline (computed here from `low_res`) and each model in `predictions`.

    Images are paired by index: `predictions[name][i]` is the super-resolution of
    `low_res[i]`, whose ground truth `high_res[i]` comes from exam `exam_ids[i]`. The table
    has one row per method with `<metric>_mean`, `_ci_low`, `_ci_high` (mean over slices,
    95% interval with the exam as the unit: statistics.exam_interval) for every metric of
    SR_LEGEND, `exams` and `slices`, `psnr_n_inf` (identical pairs, left out of the PSNR
    mean), `seconds_per_image` (`timings` for the models; the baselines are timed
    here) and `nfe`, the network evaluations per image (`evaluations` for the models; 0 for
    the baselines). A last row, "high-res (reference)", holds the ground truth's average gradients,
    the values a sharp but faithful method should approach. LPIPS cells hold the reason
    when a backbone's weights are missing (`lpips_weights` maps "alex"/"vgg" to a file,
    else metrics.find_weights looks in the usual places). All images are in model space
    [-1, 1] and are clamped to it, as a sampler's output is.
    """
    size = tuple(high_res.shape[-2:])
    exam_ids = np.asarray(exam_ids)
    slice_index = np.arange(len(high_res)) if slice_index is None else np.asarray(slice_index)
    _check_pairs(low_res, high_res, predictions, exam_ids, slice_index)
    timings = dict(timings or {})
    outputs = {}
    for method in metrics.INTERPOLATIONS:
        start = time.perf_counter()
        outputs[method] = metrics.interpolate(low_res, size, method)
        timings.setdefault(method, (time.perf_counter() - start) / len(low_res))
    outputs.update(predictions)

    lpips_networks = _lpips_networks(lpips_weights or {})
    reference = to_unit(high_res)
    reference_ag = metrics.average_gradient(reference).cpu()
    frames, rows = [], {}
    for method, images in outputs.items():
        values = _per_image_scores(to_unit(images), reference, reference_ag, lpips_networks, batch_size)
        frame = pd.DataFrame({name: value.numpy() for name, value in values.items()})
        frame.insert(0, "slice_index", slice_index)
        frame.insert(0, "exam_id", exam_ids)
        frame.insert(0, "method", method)
        frames.append(frame)
        row = {"exams": len(np.unique(exam_ids)), "slices": len(exam_ids)}
        for name, value in values.items():
            row.update(_summary(name, value.numpy(), exam_ids))
        for column, network in lpips_networks.items():
            if isinstance(network, str):
                row.update({f"{column}_mean": network, f"{column}_ci_low": math.nan, f"{column}_ci_high": math.nan})
        row["psnr_n_inf"] = int(np.isinf(values["psnr"].numpy()).sum())
        row["seconds_per_image"] = timings.get(method, math.nan)
        row["nfe"] = 0 if method in metrics.INTERPOLATIONS else (evaluations or {}).get(method, math.nan)
        rows[method] = row
    rows[REFERENCE_ROW] = {
        "exams": len(np.unique(exam_ids)), "slices": len(exam_ids),
        **_summary("ag", reference_ag.numpy(), exam_ids),
        **_summary("ag_sobel", metrics.average_gradient_sobel(reference).numpy(), exam_ids),
    }
    return SRScores(_table(rows), pd.concat(frames, ignore_index=True))


def _check_pairs(low_res: Tensor, high_res: Tensor, predictions: dict[str, Tensor], exam_ids: np.ndarray,
                 slice_index: np.ndarray) -> None:
    """One low-res image, exam id, slice index and prediction of each model per ground-truth image."""
    if low_res.dim() != 4 or high_res.dim() != 4 or len(low_res) != len(high_res):
        raise MRNetError(f"low_res and high_res must be (B, 1, H, W) with the same B; got {tuple(low_res.shape)} and {tuple(high_res.shape)}")
    if exam_ids.shape != (len(high_res),) or slice_index.shape != (len(high_res),):
        raise MRNetError(f"give one exam id and slice index per image: {len(high_res)} images, {exam_ids.shape} ids")
    for name, images in predictions.items():
        if images.shape != high_res.shape:
            raise MRNetError(f"predictions[{name!r}] has shape {tuple(images.shape)}; it must match high_res {tuple(high_res.shape)}")


def _per_image_scores(images: Tensor, reference: Tensor, reference_ag: Tensor, lpips_networks: dict,
                      batch_size: int) -> dict[str, Tensor]:
    """{metric: one value per image} of one method's images in [0, 1] against the ground truth's; LPIPS only
    for the backbones whose weights were found."""
    values = {name: _per_image(metric, images, reference, batch_size) for name, (metric, _) in SR_METRICS.items()}
    for column, network in lpips_networks.items():
        if not isinstance(network, str):
            values[column] = _per_image(lambda p, r: metrics.lpips(p, r, network), images, reference, batch_size)
    values["ag"] = metrics.average_gradient(images).cpu()
    values["ag_sobel"] = metrics.average_gradient_sobel(images)
    values["ag_error"] = (values["ag"] - reference_ag).abs()
    return values


def _summary(name: str, values: np.ndarray, exam_ids: np.ndarray) -> dict[str, float]:
    estimate = statistics.exam_interval(values, exam_ids)
    return {f"{name}_mean": estimate.mean, f"{name}_ci_low": estimate.low, f"{name}_ci_high": estimate.high}


# Column meanings, written under each comparison table.
COMPARISON_LEGEND = {
    "difference, ci_low, ci_high": "mean of A - B over the same slices and its 95% interval (exam-level t, "
                                   "statistics.exam_interval; seeds and exams both random where there are seeds)",
    "df, p": "degrees of freedom of the t reference and the two-sided p of no difference (n/a: a bootstrap interval)",
    "margin, p_equivalence": "equivalence margin (evaluation.endpoints.MARGINS) and the p of two one-sided tests against it",
    "endpoint": "primary: declared before the run (evaluation.endpoints); exploratory: every other row, read at its own 5% level",
    "family, p_holm, p_equivalence_holm": "primary rows: the number of primary tests and their Holm-adjusted p values",
    "verdict": "what the row supports at the 5% level (adjusted for a primary row): 'A better than B', "
               "'equivalent within' the margin, or 'inconclusive: the data cannot exclude' the interval's farther end",
}


def comparison_table(
    comparisons: list[statistics.Comparison], primary: list[bool] | None = None,
    margins: dict[str, endpoints.Margin] = endpoints.MARGINS,
) -> pd.DataFrame:
    """One row per paired comparison A - B: the difference, its interval, tests, sizes and verdict.

    Columns: `difference`, `ci_low`, `ci_high` (95%), `df` (of the t reference; NaN for a bootstrap
    interval, which has no test), `p` (two-sided, no difference), `margin` (endpoints.MARGINS) and
    `p_equivalence` (two one-sided tests against it), `endpoint` ("primary" where `primary` says so,
    else "exploratory"), `family` (how many primary tests the adjustment spans; none for a row without a
    test) and the Holm-adjusted
    `p_holm` and `p_equivalence_holm` (primary rows only), `exams`, `slices`, and `verdict`
    (statistics.verdict: from the adjusted tests for a primary row, its own for an exploratory one).
    """
    primary = [False] * len(comparisons) if primary is None else list(primary)
    if len(primary) != len(comparisons):
        raise MRNetError(f"give one primary flag per comparison: {len(comparisons)} comparisons, {len(primary)} flags")
    margin = [margins.get(c.metric) for c in comparisons]
    p = np.array([c.p_value for c in comparisons])
    p_equivalence = np.array([c.equivalence_p(m.value) if m else math.nan for c, m in zip(comparisons, margin)])
    chosen = np.array(primary, dtype=bool)
    p_holm, p_equivalence_holm = np.full(len(p), np.nan), np.full(len(p), np.nan)
    p_holm[chosen], p_equivalence_holm[chosen] = statistics.holm(p[chosen]), statistics.holm(p_equivalence[chosen])
    rows = []
    for i, c in enumerate(comparisons):
        d, m = c.difference, margin[i]
        tests = (p_holm[i], p_equivalence_holm[i]) if chosen[i] else (p[i], p_equivalence[i])
        rows.append({
            "a": c.a, "b": c.b, "metric": c.metric, "difference": d.mean, "ci_low": d.low, "ci_high": d.high,
            "df": d.df, "p": p[i], "margin": m.value if m else math.nan, "p_equivalence": p_equivalence[i],
            "endpoint": endpoints.PRIMARY if chosen[i] else endpoints.EXPLORATORY,
            "family": int(np.isfinite(p[chosen]).sum()) if chosen[i] and np.isfinite(p[i]) else math.nan,
            "p_holm": p_holm[i], "p_equivalence_holm": p_equivalence_holm[i],
            "exams": d.exams, "slices": d.slices,
            "verdict": statistics.verdict(c, m.value if m else None, m.unit if m else "", *tests),
        })
    return pd.DataFrame(rows).set_index(["a", "b", "metric"])


# Sample sizes (per set) below which a feature-based generation metric is not computed.
# FID: with fewer samples than the 2048 Inception features the covariance estimate is
# singular, and Heusel et al. (2017, sec. "Fréchet Inception Distance") recommend at least
# 10,000 samples, as FID is biased upward at small sizes (Chong & Forsyth 2020). KID is
# unbiased at any size (Binkowski et al. 2018, sec. 3); below 100 samples we do not report it
# (a project choice: its interval, reported beside it, widens as 1/sqrt(n)). IS: at
# least 50 images per split, so that each split's marginal class distribution means something.
MIN_FID_SAMPLES = 2048
RECOMMENDED_FID_SAMPLES = 10_000
MIN_KID_SAMPLES = 100
MIN_IS_PER_SPLIT = 50


def _too_few(metric: str, have: int, need: int, why: str) -> str:
    return f"{NOT_COMPUTED} {metric} needs at least {need} {why}; {have} here"


GENERATION_BOOTSTRAP = 500  # resamples for the generation table's intervals and comparisons


def _resample_counts(samples: int, exam_index: np.ndarray, draws: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """How often each generated sample (draws, samples) and each real slice (draws, slices) is drawn when the
    samples are resampled one by one (each its own seed) and the real slices by exam (each drawn exam
    bringing all its slices)."""
    exams = exam_index.max() + 1
    sample_counts = np.stack([np.bincount(rng.integers(0, samples, samples), minlength=samples) for _ in range(draws)])
    exam_counts = np.stack([np.bincount(rng.integers(0, exams, exams), minlength=exams) for _ in range(draws)])
    return sample_counts.astype(float), exam_counts[:, exam_index].astype(float)


def _interval(point: float, draws: np.ndarray, confidence: float, enough: bool) -> dict[str, float]:
    """A percentile interval of bootstrap values, NaN ones (a resample without a value) left out; NaN without
    enough samples and exams to resample."""
    ends = [(1 - confidence) / 2, (1 + confidence) / 2]
    low, high = np.nanquantile(draws, ends) if enough else (math.nan, math.nan)
    return {"mean": point, "low": float(low), "high": float(high), "se": float(np.nanstd(draws, ddof=1))}


def _pair_mean(pairs: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of per-pair `values`, each pair weighed by how often a resample drew both its images (NaN for a
    resample that drew no pair)."""
    weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
    total = weights.sum(axis=1)
    return np.divide(weights @ values, total, out=np.full(len(total), np.nan), where=total > 0)


def evaluate_generation(
    samples: dict[str, Tensor],
    real: Tensor,
    real_exams,
    train_images: Tensor,
    feature_weights: str | os.PathLike | None = None,
    feature_extractor: nn.Module | None = None,
    is_splits: int = 10,
    near_copy_threshold: float = 0.95,
    diversity_pairs: int = 1000,
    bootstrap: int = GENERATION_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
    fid_reference: tuple[str, Tensor] | None = None,
) -> pd.DataFrame:
    """One row per generative model in `samples`, plus a "real (held-out)" row.

    Columns: `samples` (and `exams` for the real set); `fid`, `fid_reference` (the set FID compares
    with) and `fid_note`; `is_mean`, `is_std` (over at most `is_splits` splits of at least
    MIN_IS_PER_SPLIT images); `kid_mean` (unbiased over every pair of images,
    metrics.kid_from_features); `diversity_ms_ssim` (mean pairwise MS-SSIM, lower = more diverse;
    real pairs only across exams); `histogram_w1` and `spectrum_distance` against `real`;
    `near_copy_share` and `nearest_train_correlation` (mean correlation with the nearest of
    `train_images`). The real row holds what has a meaning for real images (IS, diversity,
    memorisation against the training set), the target for the models.

    FID compares with `fid_reference` = (its name, its images) when given, such as the training split
    when the held-out slices are too few for FID (as the reference study's FID did), else with `real`.
    KID, diversity and the two distances come with `<column>_ci_low` and `_ci_high`: a 95%
    percentile interval from `bootstrap` resamples of the generated samples one by one (each is
    its own seed) and, independently, of the real slices by exam (the real row's diversity: its
    exams only); with fewer than statistics.MIN_EXAMS samples or real exams, none.

    FID, KID and IS below the sizes above are not computed: the cell says so and why. The
    feature network is `feature_extractor` (pooled features for FID/KID and logits for IS)
    or, by default, the FID Inception from `feature_weights`, the environment or the torch
    hub cache; if its weights are missing, the cells hold that reason instead.
    """
    real_exams = np.asarray(real_exams)
    if real_exams.shape != (len(real),):
        raise MRNetError(f"give one exam id per real slice: {len(real)} slices, {real_exams.shape} ids")
    exam_ids, exam_index = np.unique(real_exams, return_inverse=True)
    real, train_images = to_unit(real), to_unit(train_images)
    reference = (fid_reference[0], to_unit(fid_reference[1])) if fid_reference else ("held-out real slices", real)
    setting = _GenerationSetting(real, real_exams, exam_index, _set_features(real), reference,
                                 *_feature_networks(feature_weights, feature_extractor), is_splits, diversity_pairs,
                                 bootstrap, seed, confidence, np.random.default_rng(seed))
    rows = {}
    for name, images in {**{name: to_unit(images) for name, images in samples.items()}, REAL_ROW: real}.items():
        row = setting.row(images, name == REAL_ROW)
        nearest = metrics.memorisation(images, train_images, threshold=near_copy_threshold)
        rows[name] = row | {"near_copy_share": nearest.near_copy_share,
                            "nearest_train_correlation": float(nearest.correlation.mean())}
    return _table(rows)


def _feature_networks(weights: str | os.PathLike | None, extractor: nn.Module | None) -> tuple:
    """(pooled-feature network, logit network, None), or (None, None, why not) when the weights are missing."""
    if extractor is not None:
        return extractor, extractor, None
    try:
        return metrics.inception_features(weights, "2048"), metrics.inception_features(weights, "logits_unbiased"), None
    except metrics.MissingWeights as error:
        return None, None, f"{NOT_COMPUTED} {error}"


@dataclass
class _GenerationSetting:
    """What every row of the generation table is measured against, and how (evaluate_generation)."""

    real: Tensor
    real_exams: np.ndarray
    exam_index: np.ndarray
    real_features: dict[str, np.ndarray]
    fid_reference: tuple[str, Tensor]
    pool_net: nn.Module | None
    logit_net: nn.Module | None
    missing: str | None  # why the Inception-based metrics are not computed
    is_splits: int
    diversity_pairs: int
    bootstrap: int
    seed: int
    confidence: float
    rng: np.random.Generator
    real_pool: Tensor | None = None  # the real slices' pooled features, computed once when KID is

    def row(self, images: Tensor, is_real: bool) -> dict:
        n, exams = len(images), self.exam_index.max() + 1
        row = {"samples": n, "exams": exams if is_real else math.nan}
        sample_counts, real_counts = _resample_counts(n, self.exam_index, self.bootstrap, self.rng)
        enough = min(n, exams) >= statistics.MIN_EXAMS
        intervals = {} if is_real else self._against_real(images, row, sample_counts, real_counts, enough)
        splits = min(self.is_splits, n // MIN_IS_PER_SPLIT)
        if splits < 1:
            row["is_mean"], row["is_std"] = _too_few("IS", n, MIN_IS_PER_SPLIT, "images (one split)"), math.nan
        else:
            row["is_mean"], row["is_std"] = (self.missing, math.nan) if self.missing else metrics.inception_score(
                images, self.logit_net, splits=splits, seed=self.seed)
        pairs, values = metrics.pairwise_ms_ssim(images, self.diversity_pairs, seed=self.seed,
                                                 groups=self.real_exams if is_real else None)
        counts = real_counts if is_real else sample_counts
        intervals["diversity_ms_ssim"] = _interval(float(values.mean()), _pair_mean(pairs, values, counts),
                                                   self.confidence, enough)
        for column, estimate in intervals.items():
            key = "kid_mean" if column == "kid" else column
            row.update({key: estimate["mean"], f"{column}_ci_low": estimate["low"], f"{column}_ci_high": estimate["high"]})
        return row

    def _against_real(self, images: Tensor, row: dict, sample_counts, real_counts, enough: bool) -> dict:
        """FID (into `row`), and KID and the set distances to the real slices with their intervals."""
        reference_name, reference = self.fid_reference
        smallest = min(len(images), len(reference))
        if smallest < MIN_FID_SAMPLES:
            row["fid"] = _too_few("FID", smallest, MIN_FID_SAMPLES, "samples and reference slices (its feature width)")
        else:
            row["fid"] = self.missing or metrics.fid(images, reference, self.pool_net)
        row["fid_reference"] = f"{reference_name} ({len(reference)})"
        row["fid_note"] = (f"biased upward below {RECOMMENDED_FID_SAMPLES} samples (Heusel et al. 2017)"
                           if smallest < RECOMMENDED_FID_SAMPLES else "")
        intervals = {}
        smallest = min(len(images), len(self.real))
        if smallest < MIN_KID_SAMPLES or self.missing:
            kid = self.missing or _too_few("KID", smallest, MIN_KID_SAMPLES, "samples")
            row.update({"kid_mean": kid, "kid_ci_low": math.nan, "kid_ci_high": math.nan})
        else:
            if self.real_pool is None:
                self.real_pool = metrics.image_features(self.real, self.pool_net)
            pool = metrics.image_features(images, self.pool_net)
            intervals["kid"] = _interval(float(metrics.kid_from_features(pool, self.real_pool)), metrics.kid_from_features(
                pool, self.real_pool, sample_counts, real_counts), self.confidence, enough)
        features = _set_features(images)
        for metric in GENERATION_DISTANCES:
            intervals[metric] = _interval(_distance(metric, features, self.real_features), _distance(
                metric, features, self.real_features, sample_counts, real_counts), self.confidence, enough)
        return intervals


# Set-level distances to the real slices that the generation comparisons bootstrap (lower is better).
GENERATION_DISTANCES = ("histogram_w1", "spectrum_distance")


def generation_comparisons(
    samples: dict[str, Tensor], real: Tensor, real_exams, pairs: list[tuple[str, str]],
    bootstrap: int = GENERATION_BOOTSTRAP, seed: int = 0, confidence: float = 0.95,
) -> list[statistics.Comparison]:
    """Paired differences A - B of each distance to the real slices, for each (A, B) in `pairs`.

    A and B were sampled from the same seeds, so seed i of A is paired with seed i of B;
    the bootstrap resamples seeds (the same draw for both) and, independently, real exams
    (each bringing all its slices). Both distances are functions of per-image summaries
    (intensity histograms, radial power spectra), computed once. With fewer than
    statistics.MIN_EXAMS seeds or real exams there is no interval.
    """
    real_exams = np.asarray(real_exams)
    exams, exam_index = np.unique(real_exams, return_inverse=True)
    features = {name: _set_features(to_unit(images)) for name, images in samples.items()}
    real_features = _set_features(to_unit(real))
    rng = np.random.default_rng(seed)
    comparisons = []
    for a, b in pairs:
        n = len(samples[a])
        if len(samples[b]) != n:
            raise MRNetError(f"{a} and {b} hold {n} and {len(samples[b])} samples; paired comparisons need one seed each")
        sample_counts, real_counts = _resample_counts(n, exam_index, bootstrap, rng)
        for m in GENERATION_DISTANCES:
            point, draws = (
                _distance(m, features[a], real_features, *counts) - _distance(m, features[b], real_features, *counts)
                for counts in ((), (sample_counts, real_counts))
            )
            estimate = _interval(point, draws, confidence, min(n, len(exams)) >= statistics.MIN_EXAMS)
            comparisons.append(statistics.Comparison(a, b, m, statistics.Estimate(
                estimate["mean"], estimate["low"], estimate["high"], estimate["se"], len(exams), len(real)
            ), higher_is_better=False))
    return comparisons


def generation_distance(metric: str, samples: Tensor, real: Tensor) -> float:
    """One of GENERATION_DISTANCES between two sets of [0, 1] images."""
    return _distance(metric, _set_features(samples), _set_features(real))


def _set_features(images: Tensor) -> dict[str, np.ndarray]:
    """Per-image intensity histograms and radial power spectra: what the set-level distances average."""
    return {"histogram": metrics.intensity_histograms(images), "spectrum": metrics.radial_power_spectrum(images).numpy()}


def _distance(metric: str, samples: dict, real: dict, sample_counts=None, real_counts=None):
    """A set-level distance to the real slices; with (draws, N) and (draws, M) counts from _resample_counts,
    one value per resample, each image weighed by how often it was drawn."""
    if sample_counts is None:
        return float(_distance(metric, samples, real, np.ones((1, len(samples["spectrum"]))),
                               np.ones((1, len(real["spectrum"]))))[0])
    if metric == "histogram_w1":
        pooled = sample_counts @ samples["histogram"], real_counts @ real["histogram"]
        return np.array([metrics.histogram_w1(s, r) for s, r in zip(*pooled)])
    mean_sample = sample_counts @ samples["spectrum"] / sample_counts.sum(axis=1, keepdims=True)
    mean_real = real_counts @ real["spectrum"] / real_counts.sum(axis=1, keepdims=True)
    return np.array([metrics.spectrum_log_distance(s, r) for s, r in zip(mean_sample, mean_real)])


def _table(rows: dict[str, dict]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def write_table(
    table: pd.DataFrame, out_dir: str | os.PathLike, name: str, legend: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """Write `table` as `<name>.csv` (every digit) and `<name>.md` (`markdown`, then `legend`: what each
    column means, one line each) in `out_dir`; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    csv_text = table.to_csv()
    lines = [markdown(table)] + ([""] + [f"- `{column}`: {meaning}" for column, meaning in legend.items()] if legend else [])
    write_atomically(csv_path, lambda handle: handle.write(csv_text.encode()), "table")
    write_atomically(md_path, lambda handle: handle.write(("\n".join(lines) + "\n").encode()), "table")
    return csv_path, md_path


# Columns that readable() writes with their sign: differences between two methods or settings.
SIGNED_COLUMNS = ("difference", "change")
READABLE_WIDTH = 125  # characters per row of one readable table (index included): about a page's width
TEXT_WIDTH = 30  # a longer text cell (a verdict, a row name) wraps on the page, taking this many characters' width


def readable(table: pd.DataFrame, width: int = READABLE_WIDTH) -> list[pd.DataFrame]:
    """`table` as a reader sees it: tables of text, each at most about `width` characters wide.

    A value with a 95% interval (`<metric>_mean`, `_ci_low`, `_ci_high`, or a comparison's
    `difference`, `ci_low`, `ci_high`) becomes one cell "value [low, high]" (no-break spaces: a
    page wraps the text columns, never an interval), rounded to two
    significant digits of the narrowest interval of its metric (the precision the uncertainty
    allows: PSNR in dB to about 2 decimals, SSIM to 3 or 4); other numbers keep 3 significant
    digits, counts none, NaN reads "n/a". A multi-level index reads "a / b / metric". The columns
    are then split, in order, into as many tables as it takes (each with the index) for none to
    need cutting. "not computed: ..." cells are kept whole (markdown() footnotes them).
    """
    frame = table.copy()
    frame.columns = [str(column) for column in frame.columns]
    if isinstance(frame.index, pd.MultiIndex):
        frame.index = pd.Index([" / ".join(str(part) for part in label) for label in frame.index],
                               name=" / ".join(str(name) for name in table.index.names))
    metric_of_row = (table.index.get_level_values("metric") if "metric" in (table.index.names or [])
                     else pd.Index([None] * len(table)))
    intervals = _interval_columns(list(frame.columns))
    ends = {end for _, low, high in intervals.values() for end in (low, high)}
    cells: dict[str, list[str]] = {}
    for column in frame.columns:
        if column in intervals:
            name, low, high = intervals[column]
            cells[name] = _intervals(frame[column], frame[low], frame[high], metric_of_row, column in SIGNED_COLUMNS)
        elif column not in ends:
            cells[column] = [_readable_cell(value) for value in frame[column]]
    text = pd.DataFrame(cells, index=frame.index)
    return [text[part] for part in _parts(text, width)]


def _interval_columns(columns: list[str]) -> dict[str, tuple[str, str, str]]:
    """{value column: (name, low column, high column)} for each value with an interval: `<m>_mean` with
    `<m>_ci_low` and `<m>_ci_high` (named m), `<v>` with `<v>_low` and `<v>_high` or with `<v>_ci_low` and
    `<v>_ci_high`, or the column just before `ci_low` and `ci_high` (a comparison's `difference`, an `auc`)."""
    found = {}
    for position, column in enumerate(columns):
        stem = column[: -len("_mean")]
        if column.endswith("_mean") and {f"{stem}_ci_low", f"{stem}_ci_high"} <= set(columns):
            found[column] = (stem, f"{stem}_ci_low", f"{stem}_ci_high")
        elif {f"{column}_low", f"{column}_high"} <= set(columns):
            found[column] = (column, f"{column}_low", f"{column}_high")
        elif {f"{column}_ci_low", f"{column}_ci_high"} <= set(columns):  # the generation table's distances
            found[column] = (column, f"{column}_ci_low", f"{column}_ci_high")
        elif columns[position + 1: position + 2] == ["ci_low"] and "ci_high" in columns:
            found[column] = (column, "ci_low", "ci_high")
    return found


def _intervals(values: pd.Series, lows: pd.Series, highs: pd.Series, groups: pd.Index, signed: bool) -> list[str]:
    """"value [low, high]" per row, each group of rows (a metric) rounded to its narrowest interval."""
    numbers = [pd.to_numeric(series, errors="coerce").to_numpy(dtype=float) for series in (values, lows, highs)]
    value, low, high = numbers
    decimals = {}
    for group in dict.fromkeys(groups):
        rows = np.asarray(groups == group) if group is not None else np.ones(len(value), bool)
        widths = (high - low)[rows]
        widths = widths[np.isfinite(widths) & (widths > 0)]
        decimals[group] = int(np.clip(1 - math.floor(math.log10(widths.min())), 0, 8)) if len(widths) else None
    cells = []
    for index, group in enumerate(groups):
        if not np.isfinite(value[index]):
            cells.append(_readable_cell(values.iloc[index]))
            continue
        places = decimals[group]
        if places is None:  # no interval to go by
            cells.append(_significant(value[index]))
            continue
        sign = "+" if signed else ""
        cell = f"{value[index]:{sign}.{places}f}"
        if np.isfinite(low[index]) and np.isfinite(high[index]):
            cell += f"\N{NO-BREAK SPACE}[{low[index]:{sign}.{places}f},\N{NO-BREAK SPACE}{high[index]:{sign}.{places}f}]"
        cells.append(cell)
    return cells


def _significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits, without an exponent between 0.001 and 10**digits."""
    if value == 0 or not 1e-3 <= abs(value) < 10**digits:
        return f"{value:.{digits}g}"
    places = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{places}f}"


def _readable_cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e6 else _significant(float(value))
    return str(value)


def _parts(text: pd.DataFrame, width: int) -> list[list[str]]:
    """The columns of `text` in order, grouped so that each group (with the index) fits in `width` characters."""
    def chars(values, name) -> int:
        # markdown() writes a "not computed: ..." cell as "not computed [k]"
        lengths = [16 if value.startswith(NOT_COMPUTED) else len(value) for value in values]
        return min(max([len(str(name)), *lengths]), TEXT_WIDTH) + 3

    index_width = chars([str(label) for label in text.index], text.index.name or "")
    parts: list[list[str]] = [[]]
    used = index_width
    for column in text.columns:
        need = chars(text[column], column)
        if parts[-1] and used + need > width:
            parts.append([])
            used = index_width
        parts[-1].append(column)
        used += need
    return parts


def markdown(table: pd.DataFrame, index: bool = True) -> str:
    """`table` as a Markdown table (pandas' to_markdown needs the optional tabulate package).

    Numbers show 4 significant digits, NaN reads "n/a". A "not computed: <why>" cell reads
    "not computed [k]", with each distinct reason written once under the table as
    "- [k] not computed: <why>". A multi-level index is a column per level.
    """
    if index and isinstance(table.index, pd.MultiIndex):
        return markdown(table.reset_index(), index=False)
    reasons: list[str] = []
    header = ([table.index.name or ""] if index else []) + [str(column) for column in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        cells = ([_markdown_cell(label, reasons)] if index else []) + [_markdown_cell(v, reasons) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if reasons:
        lines += [""] + [f"- [{k}] {reason}" for k, reason in enumerate(reasons, 1)]
    return "\n".join(lines)


def _markdown_cell(value, reasons: list[str]) -> str:
    """A table cell; a "not computed: ..." reason goes to `reasons` and the cell points to it."""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3g}"
    text = str(value)
    if text.startswith(NOT_COMPUTED):
        if text not in reasons:
            reasons.append(text)
        return f"not computed [{reasons.index(text) + 1}]"
    return text.replace("|", "\\|")
