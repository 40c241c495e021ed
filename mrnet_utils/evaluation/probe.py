"""A label probe: a small classifier of the three MRNet labels, to ask whether images carry them.

Two questions use it. Does a guided sample show the label it was asked for (the share of
samples the probe assigns the requested label, against the share for real slices of that
label)? And are synthetic knees useful (train the probe on real, synthetic, or both, and
measure its AUC on real exams)?

The network is MONAI's `Classifier` (residual convolution units, instance norm; about 0.4 M
parameters at 64x64), one logit per task (abnormal, acl, meniscus), trained with binary
cross-entropy on 64x64 slices from the project's degradation chain (data.slices.degrade).
An exam's score for a task is the mean of its slices' probabilities, and the AUC is computed
over exams, with a percentile interval from resampling exams (the cluster bootstrap of
evaluation.statistics, here for a statistic that is not a mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import Classifier
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from mrnet_utils.data.mrnet import TASKS
from mrnet_utils.data.slices import degrade
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.statistics import BOOTSTRAP_SAMPLES, MIN_EXAMS
from mrnet_utils.progress import track

SIDE = 64  # the probe sees 64x64 slices: cheap on a CPU, and the base stage's resolution
CHANNELS = (16, 32, 64, 128)


def build_probe(seed: int = 0) -> nn.Module:
    """An untrained probe: (B, 1, 64, 64) in [-1, 1] -> (B, 3) logits, one per task in TASKS order."""
    torch.manual_seed(seed)
    return Classifier(in_shape=(1, SIDE, SIDE), classes=len(TASKS), channels=CHANNELS, strides=(2,) * len(CHANNELS))


def at_probe_size(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) images in [-1, 1] at 64x64, through the degradation chain (S = 64 * 2**k)."""
    return images.float() if images.shape[-1] == SIDE else degrade(images.float(), SIDE)


def train_probe(
    images: torch.Tensor, labels: torch.Tensor, steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
    seed: int = 0, progress: bool = True,
) -> nn.Module:
    """A probe trained on `images` (N, 1, S, S) in [-1, 1] with `labels` (N, 3) in {0, 1}, for `steps`
    Adam steps on batches drawn with replacement (seeded), with random left-right flips."""
    if len(images) != len(labels) or labels.ndim != 2 or labels.shape[1] != len(TASKS):
        raise MRNetError(f"need one row of {len(TASKS)} labels per image; got {tuple(labels.shape)} for "
                         f"{len(images)} images", parameter="labels")
    if not len(images):
        raise MRNetError("no images to train the probe on", parameter="images")
    images, labels = at_probe_size(images), labels.float()
    probe = build_probe(seed).train()
    optimiser = torch.optim.Adam(probe.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in track(range(steps), desc="probe", unit="step", enabled=progress):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index])
        loss = F.binary_cross_entropy_with_logits(probe(batch), labels[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return probe.eval()


@torch.inference_mode()
def probabilities(probe: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """(N, 3) probabilities of each task's label for images (N, 1, S, S) in [-1, 1]."""
    images = at_probe_size(images)
    chunks = [torch.sigmoid(probe(images[start : start + batch_size])) for start in range(0, len(images), batch_size)]
    return torch.cat(chunks).numpy().astype(float)


@dataclass(frozen=True)
class AUC:
    """An exam-level AUC with its exam-bootstrap interval (NaN when too few exams of either class)."""

    value: float
    low: float
    high: float
    exams: int
    positives: int


def exam_auc(scores, labels, exams, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> AUC:
    """AUC of per-exam mean `scores` (one per slice) against each exam's label (one per slice, constant
    within an exam), with a percentile 95% interval from resampling exams. Draws that hold one class
    only have no AUC and are left out; below MIN_EXAMS exams of either class there is no interval."""
    scores, labels, exams = np.asarray(scores, float), np.asarray(labels, int), np.asarray(exams)
    ids, index = np.unique(exams, return_inverse=True)
    per_exam = np.bincount(index, weights=scores) / np.bincount(index)
    exam_label = np.zeros(len(ids), int)
    exam_label[index] = labels
    if np.any(labels != exam_label[index]):
        raise MRNetError("an exam's slices carry different labels; give each exam one label", parameter="labels")
    positives = int(exam_label.sum())
    if positives == 0 or positives == len(ids):
        return AUC(math.nan, math.nan, math.nan, len(ids), positives)
    value = _auc(per_exam, exam_label)
    if min(positives, len(ids) - positives) < MIN_EXAMS:
        return AUC(value, math.nan, math.nan, len(ids), positives)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(samples, len(ids)))
    both = [draw for draw in draws if 0 < exam_label[draw].sum() < len(draw)]
    boot = [_auc(per_exam[draw], exam_label[draw]) for draw in both]
    low, high = np.quantile(boot, [0.025, 0.975])
    return AUC(value, float(low), float(high), len(ids), positives)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(binary_auroc(torch.from_numpy(scores), torch.from_numpy(labels)))


def on_requested_side(probs: np.ndarray, requested: dict[str, int]) -> dict[str, np.ndarray]:
    """Per requested task: for each image, whether its probability is on the requested side of 0.5."""
    unknown = sorted(set(requested) - set(TASKS))
    if unknown:
        raise MRNetError(f"unknown label {unknown[0]!r}; the labels are {', '.join(TASKS)}", parameter="labels")
    return {task: (probs[:, TASKS.index(task)] > 0.5) == bool(value) for task, value in requested.items()}


def label_agreement(probs: np.ndarray, requested: dict[str, int]) -> dict[str, float]:
    """Per requested task: the share of images whose probability is on the requested side of 0.5."""
    return {task: float(side.mean()) for task, side in on_requested_side(probs, requested).items()}


__all__ = ["AUC", "SIDE", "at_probe_size", "build_probe", "exam_auc", "label_agreement", "on_requested_side", "probabilities",
           "train_probe"]
