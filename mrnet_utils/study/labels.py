"""Knees with labels on request: does a guided sample show its label, and do synthetic knees help a classifier?

A label-conditional base stage (64x64; `train --labels`) is trained at the preset's budget. A
label probe (evaluation.probe), trained on the real train slices, then answers two questions:

- Does the label show? For each request (one task set to 1 or to 0, the others left unsaid) and
  each guidance scale, the share of guided samples the probe puts on the requested side, beside
  the share for real valid slices of that label (what a perfect generator would reach).
- Are synthetic knees useful? The same probe trained on (a) the real train slices, (b) synthetic
  slices only, generated with the label rows of the real train slices (the same label balance) at
  guidance `TSTR_GUIDANCE`, fixed before any run, (c) both; its AUC per task on the real valid
  exams, with exam-bootstrap intervals.

Beside them, privacy: each guided sample's nearest training slice by correlation (metrics.memorisation).
Everything is scored on the valid exams not set aside for tuning; nothing here is tuned on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet_utils.config import StageConfig
from mrnet_utils.presets import default_sampler, stage_config
from mrnet_utils.data.degradation import Degradation
from mrnet_utils.data.mrnet import TASKS
from mrnet_utils.data.slices import SliceDataset, to_unit
from mrnet_utils.diffusion.guidance import label_rows
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics, probe, statistics
from mrnet_utils.pipeline import sample_stage
from mrnet_utils.study.data import tuning_exams
from mrnet_utils.study.layout import StudyPaths
from mrnet_utils.study.training import StageRun, train_stage

STAGE = "base64"
SCALES = (0.0, 1.0, 3.0)  # unconditional, conditional, guided
REQUESTS = tuple({task: value} for task in TASKS for value in (1, 0))
TSTR_GUIDANCE = 1.0  # synthetic training slices: plain conditional sampling
SEED_OFFSET = 1_000_000  # sample seeds apart from those of the generation table


def config(preset: str, degradation: Degradation = Degradation()) -> StageConfig:
    """The preset's base stage, label-conditional, learning from slices made by the study's `degradation`."""
    return stage_config(STAGE, preset).replace(unet={"num_labels": len(TASKS)}, degradation=degradation)


def run_dir(paths: StudyPaths) -> Path:
    return paths.savepoints / f"{STAGE}_labels"


def train_generator(paths: StudyPaths, cache: Path, retrain: bool = False, progress: bool = True,
                    degradation: Degradation = Degradation()) -> StageRun:
    return train_stage(config(paths.preset, degradation), cache, run_dir(paths), retrain, progress)


def real_slices(cache: Path, tuning: int,
                degradation: Degradation = Degradation()) -> tuple[SliceDataset, SliceDataset, np.ndarray]:
    """The 64x64 train and valid slices (made by `degradation`), and a mask of the valid slices that are reported
    (not tuning exams)."""
    train, valid = (SliceDataset(cache, split, probe.SIDE, degradation) for split in ("train", "valid"))
    reported = ~np.isin(valid.exam_ids.numpy(), tuning_exams(cache, tuning))
    return train, valid, reported


def request_name(request: dict[str, int]) -> str:
    """{"acl": 1} -> "acl=1", as the tables name a request."""
    return ",".join(f"{task}={value}" for task, value in request.items())


def guided_samples(model: torch.nn.Module, cfg: StageConfig, labels: dict[str, int], scale: float, count: int,
                   batch_size: int, first_seed: int, progress: bool) -> torch.Tensor:
    """`count` samples asked for `labels` with guidance `scale` (seeds from `first_seed`), in [-1, 1]."""
    seeds = list(range(first_seed, first_seed + count))
    return sample_stage(model, cfg, seeds, sampler=default_sampler(cfg, quick=True), batch_size=batch_size,
                        progress=progress, labels=label_rows(labels, count), guidance=scale)


def agreement(trained, label_probe, train: SliceDataset, valid: SliceDataset, reported: np.ndarray,
              count: int, batch_size: int, progress: bool = True, requests: tuple[dict[str, int], ...] = REQUESTS,
              scales: tuple[float, ...] = SCALES) -> pd.DataFrame:
    """Per request and guidance scale: the share of `count` guided samples on the requested side of the
    probe, the real valid slices' share, and the samples' nearest-training-slice correlation.

    Every scale of a request draws from the same seeds, so each scale after the first is compared with
    the first (`scales[0]`, unconditional by default) seed by seed: the change in share with its 95%
    interval, each seed its own cluster (statistics.paired_comparison), and the verdict (statistics.verdict)."""
    unknown = [request for request in requests if request not in REQUESTS]
    if unknown:
        raise MRNetError(f"request {unknown[0]} is not one label set to 1 or 0; the requests are "
                         + ", ".join(f"{task}={value}" for request in REQUESTS for task, value in request.items()),
                         parameter="requests")
    real_probs = probe.probabilities(label_probe, valid.images[reported])
    real_labels = valid.labels[reported].numpy()
    train_unit = to_unit(train.images)
    rows = []
    for request in requests:
        (task, value), = request.items()
        real = real_labels[:, TASKS.index(task)] == value
        real_share = probe.label_agreement(real_probs[real], request)[task] if real.any() else np.nan
        first_seed = SEED_OFFSET + REQUESTS.index(request) * count
        sides = {}
        for scale in scales:
            images = guided_samples(trained.model, trained.config, request, scale, count, batch_size, first_seed,
                                    progress)
            sides[scale] = probe.on_requested_side(probe.probabilities(label_probe, images), request)[task]
            nearest = metrics.memorisation(to_unit(images), train_unit)
            rows.append({
                "request": request_name(request), "guidance": scale, "samples": count, "share": float(sides[scale].mean()),
                **_change(sides[scale], sides[scales[0]], scale, scales[0]),
                "real_share": real_share, "real_slices": int(real.sum()),
                "nearest_r_median": float(nearest.correlation.median()), "near_copies": nearest.near_copy_share,
            })
    return pd.DataFrame(rows).set_index(["request", "guidance"])


def _change(side: np.ndarray, baseline: np.ndarray, scale: float, baseline_scale: float) -> dict[str, object]:
    """The change in share from `baseline_scale` to `scale` over the same seeds, each seed its own cluster
    (none for the baseline itself)."""
    if scale == baseline_scale:
        return {"change": np.nan, "change_low": np.nan, "change_high": np.nan, "verdict": None}
    change = statistics.paired_comparison(f"guidance {scale:g}", f"guidance {baseline_scale:g}", "share",
                                          side, baseline, exams=np.arange(len(side)))
    d = change.difference
    return {"change": d.mean, "change_low": d.low, "change_high": d.high, "verdict": statistics.verdict(change)}


def usefulness(trained, train: SliceDataset, valid: SliceDataset, reported: np.ndarray, batch_size: int,
               probe_steps: int, progress: bool = True) -> pd.DataFrame:
    """Per training set (real, synthetic, real + synthetic) and task: the probe's AUC on the reported
    valid exams, with its exam-bootstrap interval."""
    synthetic = sample_stage(trained.model, trained.config, list(range(len(train.labels))),
                             sampler=default_sampler(trained.config, quick=True), batch_size=batch_size,
                             progress=progress,
                             labels=train.labels.clone(), guidance=TSTR_GUIDANCE)
    sets = {
        "real": (train.images, train.labels),
        "synthetic": (synthetic, train.labels),
        "real + synthetic": (torch.cat([train.images, synthetic]), torch.cat([train.labels, train.labels])),
    }
    images, labels, exams = valid.images[reported], valid.labels[reported].numpy(), valid.exam_ids[reported].numpy()
    rows = []
    for name, (train_images, train_labels) in sets.items():
        probs = probe.probabilities(probe.train_probe(train_images, train_labels, probe_steps, progress=progress), images)
        for task in TASKS:
            column = TASKS.index(task)
            auc = probe.exam_auc(probs[:, column], labels[:, column], exams)
            rows.append({"trained on": name, "task": task, "auc": auc.value, "ci_low": auc.low, "ci_high": auc.high,
                         "exams": auc.exams, "positive_exams": auc.positives, "train_slices": len(train_images)})
    return pd.DataFrame(rows).set_index(["trained on", "task"])


__all__ = ["REQUESTS", "SCALES", "TSTR_GUIDANCE", "agreement", "config", "guided_samples",
           "real_slices", "request_name", "run_dir", "train_generator", "usefulness"]
