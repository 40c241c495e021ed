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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from mrnet_utils.data.slices import to_unit
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics

# Full-reference metrics of a super-resolved image against the real high-res one.
SR_METRICS = {
    "psnr": metrics.psnr,
    "ssim": metrics.ssim,
    "ms_ssim": metrics.ms_ssim,
    "fsim": metrics.fsim,
    "vif": metrics.vif,
}
REFERENCE_ROW = "high-res (reference)"
REAL_ROW = "real (held-out)"
NOT_COMPUTED = "not computed:"  # how a cell without a number starts; the reason follows


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval over images: (mean, low, high).

    Non-finite values are dropped first: PSNR is +inf for a pixel-identical pair, which
    has no place in a mean; callers report how many were dropped (see `psnr_n_inf` in
    `evaluate_super_resolution`). With fewer than two finite values the interval is NaN.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half_width = stats.t.ppf((1 + confidence) / 2, df=len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half_width, mean + half_width


def _per_image(metric, predictions: Tensor, reference: Tensor, batch_size: int) -> Tensor:
    return torch.cat([metric(p, r) for p, r in zip(predictions.split(batch_size), reference.split(batch_size))]).cpu()


def _summary(name: str, values: Tensor) -> dict[str, float]:
    mean, low, high = mean_ci(values.numpy())
    return {f"{name}_mean": mean, f"{name}_ci_low": low, f"{name}_ci_high": high}


def evaluate_super_resolution(
    low_res: Tensor,
    high_res: Tensor,
    predictions: dict[str, Tensor],
    lpips_weights: str | os.PathLike | None = None,
    timings: dict[str, float] | None = None,
    lpips_net: str = "alex",
    batch_size: int = 32,
) -> pd.DataFrame:
    """One row per method: each interpolation baseline (computed here from `low_res`) and
    each model in `predictions`; columns `<metric>_mean`, `_ci_low`, `_ci_high` for PSNR,
    SSIM, MS-SSIM, FSIM, VIF, LPIPS and the average gradient (AG), `psnr_n_inf` (pairs
    left out of the PSNR mean because they are identical) and `seconds_per_image`.

    Images are paired by index: `predictions[name][i]` is the super-resolution of
    `low_res[i]`, whose ground truth is `high_res[i]`. `timings` gives the models'
    seconds per image (NaN when absent); the baselines are timed here. A last row,
    "high-res (reference)", holds only the AG of the ground truth, the value a sharp but
    faithful method should approach. LPIPS cells hold the reason when the backbone's
    weights are missing. All images are in model space [-1, 1] and are clamped to it, as
    a sampler's output is.
    """
    size = tuple(high_res.shape[-2:])
    if low_res.dim() != 4 or high_res.dim() != 4 or len(low_res) != len(high_res):
        raise MRNetError(f"low_res and high_res must be (B, 1, H, W) with the same B; got {tuple(low_res.shape)} and {tuple(high_res.shape)}")
    for name, images in predictions.items():
        if images.shape != high_res.shape:
            raise MRNetError(f"predictions[{name!r}] has shape {tuple(images.shape)}; it must match high_res {tuple(high_res.shape)}")
    timings = dict(timings or {})
    outputs = {}
    for method in metrics.INTERPOLATIONS:
        start = time.perf_counter()
        outputs[method] = metrics.interpolate(low_res, size, method)
        timings.setdefault(method, (time.perf_counter() - start) / len(low_res))
    outputs.update(predictions)

    try:
        lpips_network = metrics.load_lpips(lpips_weights, lpips_net)
    except metrics.MissingWeights as missing:
        lpips_network, lpips_reason = None, f"{NOT_COMPUTED} {missing}"
    reference = to_unit(high_res)
    rows = {}
    for method, images in outputs.items():
        images = to_unit(images)
        row = {}
        for name, metric in SR_METRICS.items():
            values = _per_image(metric, images, reference, batch_size)
            row.update(_summary(name, values))
            if name == "psnr":
                row["psnr_n_inf"] = int(torch.isinf(values).sum())
        if lpips_network is None:
            row.update({"lpips_mean": lpips_reason, "lpips_ci_low": math.nan, "lpips_ci_high": math.nan})
        else:
            row.update(_summary("lpips", _per_image(lambda p, r: metrics.lpips(p, r, lpips_network), images, reference, batch_size)))
        row.update(_summary("ag", metrics.average_gradient(images).cpu()))
        row["seconds_per_image"] = timings.get(method, math.nan)
        rows[method] = row
    rows[REFERENCE_ROW] = _summary("ag", metrics.average_gradient(reference).cpu())
    return _table(rows)


def evaluate_generation(
    samples: dict[str, Tensor],
    real: Tensor,
    train_images: Tensor,
    feature_weights: str | os.PathLike | None = None,
    feature_extractor: nn.Module | None = None,
    is_splits: int = 10,
    kid_subset_size: int = 1000,
    near_copy_threshold: float = 0.95,
    diversity_pairs: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per generative model in `samples`, plus a "real (held-out)" row.

    Columns: `fid`; `is_mean`, `is_std` (over `is_splits` splits); `kid_mean`, `kid_std`;
    `diversity_ms_ssim` (mean pairwise MS-SSIM, lower = more diverse);
    `histogram_w1` and `spectrum_distance` against `real`; `near_copy_share` and
    `nearest_train_correlation` (mean correlation with the nearest of `train_images`).
    The real row holds the values that have a meaning for real images (IS, diversity,
    memorisation against the training set), as the target for the models.

    The feature network is `feature_extractor` (pooled features for FID/KID and logits
    for IS) or, by default, the FID Inception from `feature_weights`, the environment or
    the torch hub cache; if its weights are missing, FID/IS/KID cells hold the reason.
    """
    real, train_images = to_unit(real), to_unit(train_images)
    sets = {name: to_unit(images) for name, images in samples.items()}
    try:
        if feature_extractor is None:
            pool_net = metrics.inception_features(feature_weights, "2048")
            logit_net = metrics.inception_features(feature_weights, "logits_unbiased")
        else:
            pool_net = logit_net = feature_extractor
        reason = None
    except metrics.MissingWeights as missing:
        reason = f"{NOT_COMPUTED} {missing}"

    rows = {}
    for name, images in {**sets, REAL_ROW: real}.items():
        row = {}
        is_real = name == REAL_ROW
        if not is_real:  # FID and KID compare a model's samples with the real set
            row["fid"] = reason or metrics.fid(images, real, pool_net)
        row["is_mean"], row["is_std"] = (
            (reason, math.nan) if reason else metrics.inception_score(images, logit_net, splits=is_splits, seed=seed)
        )
        if not is_real:
            row["kid_mean"], row["kid_std"] = (
                (reason, math.nan) if reason else metrics.kid(images, real, pool_net, subset_size=kid_subset_size, seed=seed)
            )
        row["diversity_ms_ssim"] = metrics.diversity_ms_ssim(images, max_pairs=diversity_pairs, seed=seed)
        if not is_real:
            row["histogram_w1"] = metrics.histogram_distance(images, real)
            row["spectrum_distance"] = metrics.power_spectrum_distance(images, real)
        nearest = metrics.memorisation(images, train_images, threshold=near_copy_threshold)
        row["near_copy_share"] = nearest.near_copy_share
        row["nearest_train_correlation"] = float(nearest.correlation.mean())
        rows[name] = row
    return _table(rows)


def _table(rows: dict[str, dict]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def write_table(table: pd.DataFrame, out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write `table` as `<name>.csv` (every digit) and `<name>.md` (`markdown`) in `out_dir`; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    table.to_csv(csv_path)
    md_path.write_text(markdown(table) + "\n")
    return csv_path, md_path


def markdown(table: pd.DataFrame, index: bool = True) -> str:
    """`table` as a Markdown table (pandas' to_markdown needs the optional tabulate package).

    Numbers show 4 significant digits, NaN reads "n/a". A "not computed: <why>" cell reads
    "not computed [k]", with each distinct reason written once under the table as
    "- [k] not computed: <why>".
    """
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
