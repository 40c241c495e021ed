"""The training batches: which slices, and every random draw, as functions of (seed, step).

The data order and every random draw (timesteps, noise, conditioning-augmentation levels,
dropped labels) are drawn over the *global* batch from a generator seeded by (seed, step),
and each rank takes its slice. So a run resumed at step s continues exactly, and a run on
k processes sees the same global batch as a run on one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from mrnet_utils.config import StageConfig
from mrnet_utils.diffusion import conditioning
from mrnet_utils.diffusion.losses import sample_timesteps
from mrnet_utils.diffusion.processes import Process
from mrnet_utils.diffusion.schedules import to_process
from mrnet_utils.training.distributed import Distributed


@functools.lru_cache(maxsize=4)
def _epoch_permutation(epoch: int, num_items: int, seed: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def global_batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> torch.Tensor:
    """Dataset indices of the global batch at `step`: consecutive epochs, each a seeded permutation."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return torch.stack([_epoch_permutation(p // num_items, num_items, seed)[p % num_items] for p in positions])


@dataclass(frozen=True)
class Batch:
    x0: torch.Tensor  # (B, 1, R, R) clean images
    t: torch.Tensor  # (B,) timesteps
    noise: torch.Tensor  # (B, 1, R, R)
    extra_args: dict  # what the network takes besides (x_t, t): cond and aug_level, labels
    y0: torch.Tensor | None = None  # the clean upsampled input, where the process's chain starts from it


def draw_batch(
    cfg: StageConfig,
    process: Process,
    step: int,
    images: torch.Tensor,
    low_res: torch.Tensor | None,
    labels: torch.Tensor,
) -> Batch:
    """The global batch at `step` with all its random draws, from a generator seeded by (seed, step).

    `images` are the stage's targets and `low_res` (super-resolution stages) their low-res
    inputs, row for row; the condition of row i is made from `low_res[i]` alone, by `process`.
    """
    generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
    batch = cfg.train.batch_size
    index = global_batch_indices(step, batch, len(images), cfg.train.seed)
    x0 = to_process(images[index], cfg.diffusion.data_range)
    t = sample_timesteps(batch, cfg.diffusion.timesteps, generator)
    noise = torch.randn(x0.shape, generator=generator)
    extra_args, y0 = {}, None
    if low_res is not None:
        aug = cfg.conditioning
        level = (
            conditioning.sample_aug_levels(batch, aug.max_level, generator) if aug.enabled else torch.zeros(batch)
        )
        aug_noise = torch.randn(x0.shape, generator=generator)
        extra_args, y0 = process.condition(low_res[index], cfg.resolution, level, aug_noise)
    if cfg.unet.num_labels:
        # Classifier-free guidance (Ho & Salimans 2022): a share of rows trains with every label null (-1),
        # the unconditional model; of the others, each label is null with the same probability, so that
        # a request may leave any label unsaid (diffusion.guidance).
        row = torch.rand(batch, generator=generator) < cfg.train.label_dropout
        each = torch.rand(labels[index].shape, generator=generator) < cfg.train.label_dropout
        extra_args["labels"] = torch.where(row[:, None] | each, -1.0, labels[index])
    return Batch(x0, t, noise, extra_args, y0)


def to_device(batch: Batch, distributed: Distributed, device: torch.device, channels_last: bool) -> Batch:
    """This rank's share of the batch on `device` (channels-last images where the network is)."""

    def move(tensor: torch.Tensor) -> torch.Tensor:
        tensor = distributed.shard(tensor).to(device, non_blocking=True)
        if channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    y0 = move(batch.y0) if batch.y0 is not None else None
    return Batch(move(batch.x0), move(batch.t), move(batch.noise), {k: move(v) for k, v in batch.extra_args.items()}, y0)
