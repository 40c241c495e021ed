"""Does the synthetic phantom pass for real MRNet slices? Statistics that compare two sets of exams.

Each statistic is a distance between two sets of exams of one plane (the study's is
coronal), 0 when the sets look alike on it. The reference for "alike" is real against
real: two halves of the real exams differ by sampling alone, and a phantom that differs
from the real exams by no more than that is as good as the real sample can tell
(`half_split_distances`, `realism_table`).

Intensities. MRNet's volumes come windowed slice by slice (every real slice has minimum 0
and its top 1 % of pixels at 255). The statistics read each series twice: raw (uint8, as
stored) and normalised the way the models see it, i.e. by the caller's `normalise`
(the project's `preprocess.normalise`: the series' 0.5th-99.5th percentiles to [-1, 1]),
mapped to [0, 1] by (x + 1) / 2 as `metrics` expects. On MRNet the two differ only by the
factor 255, since every series has percentiles 0 and 255.

By default all slices of each series are used, edge slices included: a model trained on all
slices sees them, and they are where the anatomy changes most. `summarise_folder(central_slices=N)`
keeps only the N central slices of each series (normalised as a whole first), the slices the
study keeps by default.

The statistics, each defined where it is computed:
- `histogram_w1`: Wasserstein-1 distance of the pooled normalised intensities (`metrics.histogram_distance`);
- `spectrum_distance`: distance of the mean radial power spectra (`metrics.power_spectrum_distance`);
- `background_raw` / `background_normalised`: fraction of background (air) pixels (`background_fraction`);
- `contrast_mean` / `contrast_spread`: mean and spread over exams of the per-exam contrast (`exam_contrast`);
- `slice_change`: mean absolute change between adjacent slices (`slice_change`);
- `diversity`: mean MS-SSIM between slices of different exams (`cross_exam_ms_ssim`);
- `slices`: number of slices per series.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet_utils.evaluation import metrics
from mrnet_utils.data.slices import to_unit
from mrnet_utils.errors import MRNetError
from mrnet_utils.data.mrnet import SPLITS, iter_exams, read_labels, volume_path
from mrnet_utils.data.preprocess import central_slice_indices

# Background: raw values up to 15 of 255. The pooled histogram of the real coronal sample has
# an air peak at 4-6 (the noise floor, stretched by MRNet's per-slice windowing) that falls
# to the flat level of tissue by 15-16; 15 is the end of that peak. In normalised units the
# same pixels are those at or below 2 * 15 / 255 - 1 = -0.882 (on MRNet normalisation maps
# 0 -> -1 and 255 -> 1), rounded to -0.88, which lies between the images of 15 and 16.
RAW_BACKGROUND = 15
NORMALISED_BACKGROUND = -0.88
HISTOGRAM_BINS = 256  # as metrics.histogram_distance
DIVERSITY_POSITIONS = (0.25, 0.5, 0.75)  # where along each series the diversity slices are taken

STATISTICS = {
    # name: (definition, unit)
    "histogram_w1": ("Wasserstein-1 distance of the pooled normalised intensity histograms", "[0, 1] intensity"),
    "spectrum_distance": ("mean |log10 ratio| of the mean radial power spectra, radii >= 1", "decades"),
    "background_raw": (f"difference of the mean per-exam fraction of raw pixels <= {RAW_BACKGROUND}", "fraction"),
    "background_normalised": (
        f"difference of the mean per-exam fraction of normalised pixels <= {NORMALISED_BACKGROUND}", "fraction"),
    "contrast_mean": ("difference of the mean over exams of the per-exam contrast", "[0, 1] intensity"),
    "contrast_spread": ("difference of the standard deviation over exams of the per-exam contrast",
                        "[0, 1] intensity"),
    "slice_change": ("difference of the mean per-series mean |adjacent-slice difference|", "[0, 1] intensity"),
    "diversity": ("difference of the mean MS-SSIM over slice pairs from different exams", "MS-SSIM"),
    "slices": ("difference of the mean number of slices per series", "slices"),
}


# ---------------------------------------------------------------------------
# Per-image and per-series statistics
# ---------------------------------------------------------------------------


def background_fraction(images: np.ndarray, threshold: float) -> float:
    """Fraction of pixels at or below `threshold` (any shape; raw uint8 or normalised values).

    Use `RAW_BACKGROUND` on raw uint8 volumes and `NORMALISED_BACKGROUND` on normalised ones.
    """
    images = np.asarray(images)
    if not images.size:
        raise MRNetError("background_fraction needs at least one pixel")
    return float(np.count_nonzero(images <= threshold) / images.size)


def exam_contrast(raw: np.ndarray) -> float:
    """Contrast of one series: the standard deviation of its raw foreground intensities, / 255.

    Foreground = pixels above `RAW_BACKGROUND`, pooled over all slices; air is left out so
    that the contrast is that between tissues, not between the leg and its surroundings.
    Raw values, because the per-volume normalisation of the models' input rescales it.
    0 for a series with no foreground.
    """
    raw = np.asarray(raw)
    foreground = raw[raw > RAW_BACKGROUND]
    return float(foreground.std() / 255) if foreground.size else 0.0


def slice_change(series: np.ndarray) -> float:
    """Mean absolute difference between adjacent slices of one series (S, H, W), S >= 2.

    The mean over the S - 1 adjacent pairs and all pixels of |slice[i+1] - slice[i]|, in
    the units of `series` (here normalised [0, 1]): 0 for a series that does not change.
    """
    series = np.asarray(series, np.float32)
    if series.ndim != 3 or len(series) < 2:
        raise MRNetError(f"slice_change needs a series (S, H, W) of at least 2 slices, not shape {series.shape}")
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(series)]))


def diversity_indices(slices: int) -> np.ndarray:
    """The slices of a series used for diversity: those at `DIVERSITY_POSITIONS` of its length."""
    return np.unique(np.round(np.multiply(DIVERSITY_POSITIONS, slices - 1)).astype(int))


def cross_exam_pairs(exam_ids: Sequence[int], per_exam_pair: int | None = None, max_exam_pairs: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """Index pairs (P, 2), i < j, of images from different exams.

    For each pair of exams (all of them, or `max_exam_pairs` drawn at random), all pairs
    of their images, or `per_exam_pair` of them drawn without replacement. Two slices of
    one exam are near-copies of the same anatomy, so they would make a set look less
    diverse than its exams are; they are left out. Every pair of exams contributes the
    same number of pairs (when they have the images), so that any subset of exams can be
    scored from the same pairs (`diversity`). Seeded: the same arguments give the same pairs.
    """
    exam_ids = np.asarray(exam_ids)
    exams = np.unique(exam_ids)
    if len(exams) < 2:
        raise MRNetError("diversity needs images from at least two exams")
    rng = np.random.default_rng(seed)
    exam_pairs = list(zip(*np.triu_indices(len(exams), k=1)))
    if max_exam_pairs is not None and len(exam_pairs) > max_exam_pairs:
        exam_pairs = [exam_pairs[k] for k in np.sort(rng.choice(len(exam_pairs), max_exam_pairs, replace=False))]
    members = {exam: np.flatnonzero(exam_ids == exam) for exam in exams}
    pairs = []
    for a, b in exam_pairs:
        both = np.stack(np.meshgrid(members[exams[a]], members[exams[b]], indexing="ij"), axis=-1).reshape(-1, 2)
        if per_exam_pair is not None and len(both) > per_exam_pair:
            both = both[np.sort(rng.choice(len(both), per_exam_pair, replace=False))]
        pairs.append(np.sort(both, axis=1))
    return np.concatenate(pairs)


def cross_exam_ms_ssim(images: torch.Tensor, exam_ids: Sequence[int], per_exam_pair: int | None = None,
                       max_exam_pairs: int | None = None, batch_size: int = 32, seed: int = 0) -> pd.DataFrame:
    """MS-SSIM (`metrics.ms_ssim`) of each pair of `cross_exam_pairs`: columns exam_a, exam_b, ms_ssim.

    `images` (N, 1, H, W) in [0, 1]. The mean of the ms_ssim column is the project's
    diversity measure (`metrics.diversity_ms_ssim`: mean MS-SSIM over pairs of distinct
    images, lower = more diverse) without same-exam pairs; keeping the table lets
    subsets of exams be scored without computing MS-SSIM again (`diversity`).
    """
    pairs = cross_exam_pairs(exam_ids, per_exam_pair, max_exam_pairs, seed)
    values = []
    for chunk in np.array_split(pairs, -(-len(pairs) // batch_size)):
        first, second = torch.from_numpy(chunk[:, 0]), torch.from_numpy(chunk[:, 1])
        values.append(metrics.ms_ssim(images[first], images[second]))
    exam_ids = np.asarray(exam_ids)
    return pd.DataFrame({"exam_a": exam_ids[pairs[:, 0]], "exam_b": exam_ids[pairs[:, 1]],
                         "ms_ssim": torch.cat(values).double().numpy()})


def diversity(pairs: pd.DataFrame, exams: Iterable[int] | None = None) -> float:
    """Mean MS-SSIM of the pairs of `cross_exam_ms_ssim` whose two exams are both in `exams` (all if None)."""
    if exams is not None:
        wanted = np.asarray(list(exams))
        pairs = pairs[np.isin(pairs["exam_a"], wanted) & np.isin(pairs["exam_b"], wanted)]
    if not len(pairs):
        raise MRNetError("no cross-exam pair among these exams; diversity needs at least two exams")
    return float(pairs["ms_ssim"].mean())


# ---------------------------------------------------------------------------
# One summary per exam, from which every set statistic follows
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExamSummary:
    """What the set statistics need of one series (exam ids must be unique within a set)."""

    exam_id: int
    slices: int
    histogram: np.ndarray  # (HISTOGRAM_BINS,) counts of normalised [0, 1] intensities, as metrics.histogram_distance bins them
    spectrum: np.ndarray  # (R,) radial power spectrum summed over the slices (metrics.radial_power_spectrum)
    background_raw: float
    background_normalised: float
    contrast: float
    slice_change: float
    diversity_slices: np.ndarray  # (K, H, W) float32 normalised [0, 1], at diversity_indices(slices)


def summarise_series(raw: np.ndarray, normalised: np.ndarray, exam_id: int) -> ExamSummary:
    """The summary of one series: `raw` uint8 (S, H, W) and the same series `normalised` to [-1, 1]."""
    if raw.shape != normalised.shape:
        raise MRNetError(f"raw {raw.shape} and normalised {normalised.shape} series differ in shape")
    unit = to_unit(torch.from_numpy(np.asarray(normalised, np.float32))).numpy()
    images = torch.from_numpy(unit)[:, None]
    histogram = torch.histc(images, bins=HISTOGRAM_BINS, min=0, max=1).double().numpy()
    spectrum = metrics.radial_power_spectrum(images).sum(dim=0).numpy()
    return ExamSummary(
        exam_id=exam_id,
        slices=len(raw),
        histogram=histogram,
        spectrum=spectrum,
        background_raw=background_fraction(raw, RAW_BACKGROUND),
        background_normalised=background_fraction(normalised, NORMALISED_BACKGROUND),
        contrast=exam_contrast(raw),
        slice_change=slice_change(unit),
        diversity_slices=unit[diversity_indices(len(raw))].copy(),
    )


Normalise = Callable[[np.ndarray, Path], np.ndarray]


def summarise_folder(root: Path | str, normalise: Normalise, plane: str = "coronal",
                     splits: Sequence[str] = SPLITS, max_exams: int | None = None,
                     central_slices: int | None = None) -> tuple[list[ExamSummary], dict[int, str]]:
    """Summaries of the series of `plane` in an MRNet-layout folder, and {exam_id: split}.

    `normalise(volume, path)` maps a uint8 volume to [-1, 1]: pass `preprocess.normalise`,
    so that the statistics see what the models see. `max_exams` keeps the first of each split;
    `central_slices` keeps that many central slices of each series (`preprocess.central_slice_indices`,
    as the slice cache keeps them; None: all).
    """
    summaries, split_of = [], {}
    for split in splits:
        exam_ids = sorted(read_labels(root, split))[:max_exams]
        for exam in iter_exams(root, split, plane, exam_ids):
            normalised = normalise(exam.volume, volume_path(root, split, plane, exam.exam_id))
            keep = central_slice_indices(len(exam.volume), central_slices)
            summaries.append(summarise_series(exam.volume[keep], normalised[keep], exam.exam_id))
            split_of[exam.exam_id] = split
    return summaries, split_of


def diversity_pairs(summaries: Sequence[ExamSummary], per_exam_pair: int | None = None,
                    max_exam_pairs: int | None = None, seed: int = 0) -> pd.DataFrame:
    """`cross_exam_ms_ssim` over the diversity slices of `summaries` (by default all slice pairs of each exam pair)."""
    images = torch.from_numpy(np.concatenate([s.diversity_slices for s in summaries]))[:, None]
    exam_ids = np.concatenate([[s.exam_id] * len(s.diversity_slices) for s in summaries])
    return cross_exam_ms_ssim(images, exam_ids, per_exam_pair, max_exam_pairs, seed=seed)


# ---------------------------------------------------------------------------
# Set statistics and distances between sets
# ---------------------------------------------------------------------------


def set_values(summaries: Sequence[ExamSummary], pairs: pd.DataFrame | None = None) -> dict[str, float]:
    """The scalar statistics of one set of exams (each exam counts once), and its diversity if `pairs` is given."""
    if not summaries:
        raise MRNetError("a set of exams to summarise is empty")
    contrasts = [s.contrast for s in summaries]
    values = {
        "background_raw": float(np.mean([s.background_raw for s in summaries])),
        "background_normalised": float(np.mean([s.background_normalised for s in summaries])),
        "contrast_mean": float(np.mean(contrasts)),
        "contrast_spread": float(np.std(contrasts, ddof=1)) if len(contrasts) > 1 else 0.0,
        "slice_change": float(np.mean([s.slice_change for s in summaries])),
        "slices": float(np.mean([s.slices for s in summaries])),
    }
    if pairs is not None:
        values["diversity"] = diversity(pairs, [s.exam_id for s in summaries])
    return values


def _mean_spectrum(summaries: Sequence[ExamSummary]) -> np.ndarray:
    """The radial power spectrum averaged over every slice of a set."""
    return sum(s.spectrum for s in summaries) / sum(s.slices for s in summaries)


def distances(a: Sequence[ExamSummary], b: Sequence[ExamSummary], pairs_a: pd.DataFrame,
              pairs_b: pd.DataFrame | None = None) -> dict[str, float]:
    """Every statistic of `STATISTICS` between sets `a` and `b` (0 = alike).

    The histograms are pooled over all slices of a set (each pixel counts once, as in
    `metrics.histogram_distance`), the spectra averaged over all its slices (as in
    `metrics.power_spectrum_distance`); the other statistics are the absolute difference
    of the two sets' `set_values`. `pairs_b` defaults to `pairs_a` (one table for both).
    """
    pairs_b = pairs_a if pairs_b is None else pairs_b
    result = {
        "histogram_w1": metrics.histogram_w1(sum(x.histogram for x in a), sum(x.histogram for x in b)),
        "spectrum_distance": metrics.spectrum_log_distance(_mean_spectrum(a), _mean_spectrum(b)),
    }
    values_a, values_b = set_values(a, pairs_a), set_values(b, pairs_b)
    result.update({name: abs(values_a[name] - values_b[name]) for name in values_a})
    return {name: result[name] for name in STATISTICS}


def half_split_distances(summaries: Sequence[ExamSummary], pairs: pd.DataFrame, repeats: int = 200,
                         seed: int = 0) -> pd.DataFrame:
    """`distances` between the two halves of `repeats` random splits of `summaries` into halves (rows).

    The spread of real-vs-real distances that comes from which exams happen to be in a
    set: the reference against which a phantom-vs-real distance is judged. With an odd
    count the first half has one exam fewer.
    """
    if len(summaries) < 4:
        raise MRNetError(f"half-splits need at least 4 exams, not {len(summaries)}")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(repeats):
        order = rng.permutation(len(summaries))
        half = len(summaries) // 2
        rows.append(distances([summaries[i] for i in order[:half]], [summaries[i] for i in order[half:]], pairs))
    return pd.DataFrame(rows)


SPREAD_QUANTILE = 0.95


def realism_table(real: Sequence[ExamSummary], real_split: dict[int, str], real_pairs: pd.DataFrame,
                  phantom: Sequence[ExamSummary], phantom_pairs: pd.DataFrame, repeats: int = 200,
                  seed: int = 0) -> pd.DataFrame:
    """One row per statistic: real train vs valid, its half-split spread, phantom vs all real, within spread.

    Columns: the values of the real train, real valid and phantom sets (scalar statistics
    only); `real_train_vs_valid` (MRNet's own split); `real_half_median` and
    `real_half_q95`, the median and 95th percentile over `repeats` random half-splits of
    the real exams; `phantom_vs_real` (all phantom exams against all real ones); and
    `within_spread`, "yes" when phantom_vs_real <= real_half_q95. Being within it means
    the phantom differs from the real exams by no more than two halves of the real
    sample differ from each other; with more phantom exams than a half holds, the
    phantom's own sampling noise is smaller, so the test is not harder for it.
    """
    train = [s for s in real if real_split[s.exam_id] == "train"]
    valid = [s for s in real if real_split[s.exam_id] == "valid"]
    values = {name: set_values(group, pairs) for name, group, pairs in
              (("real_train", train, real_pairs), ("real_valid", valid, real_pairs), ("phantom", phantom, phantom_pairs))}
    official = distances(train, valid, real_pairs)
    halves = half_split_distances(real, real_pairs, repeats, seed)
    versus = distances(phantom, real, phantom_pairs, real_pairs)
    rows = []
    for name, (definition, unit) in STATISTICS.items():
        q95 = float(halves[name].quantile(SPREAD_QUANTILE))
        rows.append({
            "statistic": name,
            "unit": unit,
            **{f"{group}_value": values[group].get(name, np.nan) for group in values},
            "real_train_vs_valid": official[name],
            "real_half_median": float(halves[name].median()),
            "real_half_q95": q95,
            "phantom_vs_real": versus[name],
            "within_spread": "yes" if versus[name] <= q95 else "no",
            "definition": definition,
        })
    return pd.DataFrame(rows).set_index("statistic")


__all__ = [
    "RAW_BACKGROUND",
    "NORMALISED_BACKGROUND",
    "STATISTICS",
    "ExamSummary",
    "background_fraction",
    "exam_contrast",
    "slice_change",
    "diversity_indices",
    "cross_exam_pairs",
    "cross_exam_ms_ssim",
    "diversity",
    "summarise_series",
    "summarise_folder",
    "diversity_pairs",
    "set_values",
    "distances",
    "half_split_distances",
    "realism_table",
]
