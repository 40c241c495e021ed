"""Classifier-free guidance (Ho & Salimans 2022): sampling a label-conditional network towards labels.

A label-conditional network (UNetConfig.num_labels = 3) is trained with labels dropped to a null
state (training.batches), so it predicts both with labels and without. Guidance with scale w
replaces the network's prediction by

    uncond + w * (cond - uncond)

w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes further towards the
labels. Every prediction type (epsilon, v, x_0) is affine in the other two at fixed (x_t, t), with
coefficients that do not depend on the network, so combining the predictions with weights that
sum to 1 is the same guidance whichever the network predicts; hence it wraps the network and
works with every sampler and process unchanged.

Labels are asked for by task name (`acl=1,meniscus=0`); a task not named stays in its null
state (its own "no label"), so the request is conditioned on the named labels only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mrnet_utils.data.mrnet import TASKS
from mrnet_utils.errors import MRNetError

NULL = -1  # a label's null state, in a labels tensor


def parse_labels(text: str) -> dict[str, int]:
    """`"acl=1,meniscus=0"` -> {"acl": 1, "meniscus": 0}; a bad name or value is one line naming the valid ones."""
    labels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, value = (piece.strip() for piece in item.partition("="))
        if name not in TASKS:
            raise MRNetError(f"unknown label {name!r} in {text!r}; the labels are {', '.join(TASKS)}",
                             parameter="labels")
        if not separator or value not in ("0", "1"):
            raise MRNetError(f"label {item!r} needs a value 0 or 1 (for example {name}=1)", parameter="labels")
        if name in labels:
            raise MRNetError(f"label {name} is given twice in {text!r}", parameter="labels")
        labels[name] = int(value)
    if not labels:
        raise MRNetError(f"no label in {text!r}; give NAME=0|1 pairs of {', '.join(TASKS)}", parameter="labels")
    return labels


def label_rows(labels: dict[str, int], count: int) -> Tensor:
    """`count` rows of the three task labels in TASKS order, NULL for a task not named: (count, 3)."""
    unknown = sorted(set(labels) - set(TASKS))
    if unknown:
        raise MRNetError(f"unknown label {unknown[0]!r}; the labels are {', '.join(TASKS)}", parameter="labels")
    row = torch.tensor([float(labels.get(task, NULL)) for task in TASKS])
    return row.expand(count, len(TASKS)).clone()


def check_guidance(labels: Tensor | None, scale: float) -> None:
    """A scale of at least 0, and labels wherever the scale is not the plain conditional 1."""
    _check_scale(scale)
    if labels is None and scale != 1:
        raise MRNetError(f"guidance={scale} without labels: guidance steers towards labels; give labels too",
                         parameter="guidance")


class Guided(nn.Module):
    """A label-conditional network that answers `model(x_t, t, ..., labels=rows)` with its guided prediction.

    Without `labels` it is the network unchanged. With them: `scale` 0 evaluates the network once
    with every label null, `scale` 1 once with the labels, any other scale both at once (one
    forward pass of twice the batch) and combines them.
    """

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        _check_scale(scale)
        self.model, self.scale = model, float(scale)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None, **extra_args: Any) -> Tensor:
        if labels is None:
            return self.model(x, t, **extra_args)
        null = torch.full_like(labels, NULL)
        if self.scale == 0:
            return self.model(x, t, labels=null, **extra_args)
        if self.scale == 1:
            return self.model(x, t, labels=labels, **extra_args)
        twice = {name: _twice(value) for name, value in extra_args.items()}
        both = self.model(_twice(x), _twice(t), labels=torch.cat([labels, null]), **twice)
        cond, uncond = both.chunk(2)
        return uncond + self.scale * (cond - uncond)


# The largest guidance scale taken: classifier-free guidance is used up to about this (Ho & Salimans 2022
# go to 4; text-to-image work to about 20); far beyond, the guided prediction only overflows.
MAX_GUIDANCE = 30.0


def _check_scale(scale: float) -> None:
    if not 0 <= scale <= MAX_GUIDANCE:  # also refuses NaN
        raise MRNetError(f"guidance={scale} must lie between 0 and {MAX_GUIDANCE:g} (0: unconditional, 1: conditional, "
                         "more: further towards the labels)", parameter="guidance")


def _twice(value: Any) -> Any:
    """A per-sample tensor repeated for the conditional and unconditional halves of the batch."""
    return torch.cat([value, value]) if isinstance(value, Tensor) and value.ndim > 0 else value


__all__ = ["NULL", "Guided", "check_guidance", "label_rows", "parse_labels"]
