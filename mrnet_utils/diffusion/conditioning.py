"""Super-resolution conditioning: SR3's upsample-and-concatenate (Saharia et al. 2021) with
the noise conditioning augmentation of Cascaded Diffusion Models (Ho et al. 2021).

The low-res image is upsampled to the stage's resolution and noised, variance preserving, at
a level in [0, 1]; the network gets the result as `cond` and the level as `aug_level`.
Training draws the level uniformly from [0, ConditioningConfig.max_level], so that the stage
learns to correct the flaws of generated low-res inputs; sampling uses the fixed
ConditioningConfig.sample_level; with augmentation disabled the level is 0 and the condition
is the clean upsampled image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mrnet_utils.errors import MRNetError


def upsample(low_res: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Upsampling of (B, C, h, w) to (B, C, size, size), half-pixel centres (align_corners=False).

    "bilinear" (SR3's, and the reference's) or "bicubic", a better starting point for the residual
    formulations (diffusion.processes); bicubic overshoots at edges, so it is clamped to [-1, 1].
    """
    if mode not in ("bilinear", "bicubic"):
        raise MRNetError(f"upsampling mode must be 'bilinear' or 'bicubic', not {mode!r}")
    upsampled = F.interpolate(low_res, size=(size, size), mode=mode, align_corners=False)
    return upsampled if mode == "bilinear" else upsampled.clamp(-1, 1)


def sample_aug_levels(
    batch: int, max_level: float, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Levels ~ Uniform[0, max_level], shape (batch,), on `device` (default: the generator's, else CPU)."""
    if not 0 <= max_level <= 1:
        raise MRNetError(f"conditioning max_level={max_level} must lie in [0, 1]")
    device = device if device is not None else (generator.device if generator is not None else None)
    return torch.rand(batch, generator=generator, device=device) * max_level


def augment(cond: Tensor, level: Tensor, noise: Tensor) -> Tensor:
    """sqrt(1 - level^2) cond + level noise, per image (level shaped (B,)): unit variance in, unit variance out."""
    level = level.to(cond.dtype).view(-1, *(1,) * (cond.ndim - 1))
    return (1 - level.square()).sqrt() * cond + level * noise


def make_condition(
    low_res: Tensor, size: int, level: Tensor | float, noise: Tensor, mode: str = "bilinear"
) -> tuple[Tensor, Tensor]:
    """The network's condition and level: augment(upsample(low_res, size, mode), level, noise), level as (B,)."""
    if isinstance(level, float | int):
        if not 0 <= level <= 1:
            raise MRNetError(f"conditioning level={level} must lie in [0, 1]")
        level = torch.full((len(low_res),), float(level), device=low_res.device)
    level = level.to(device=low_res.device, dtype=low_res.dtype)
    return augment(upsample(low_res, size, mode), level, noise), level


def concat_condition(x: Tensor, cond: Tensor | None, cond_channels: int, network: str) -> Tensor:
    """SR3 conditioning (Saharia et al. 2021): the upsampled low-res image concatenated to x on channels.

    A network with `cond_channels` = 0 takes no condition; otherwise `cond` must match x's batch and
    size, so that a mix-up of stages is an error here and not a silent resize.
    """
    if not cond_channels:
        if cond is not None:
            raise MRNetError("cond was given to a network with cond_channels=0; only super-resolution stages take it")
        return x
    expected = (x.shape[0], cond_channels, *x.shape[2:])
    if cond is None or tuple(cond.shape) != expected:
        got = "nothing" if cond is None else tuple(cond.shape)
        raise MRNetError(
            f"super-resolution {network} needs cond of shape {expected} (the low-res image upsampled to "
            f"{x.shape[-1]}x{x.shape[-1]}), got {got}"
        )
    return torch.cat([x, cond.to(x.dtype)], dim=1)


__all__ = ["upsample", "sample_aug_levels", "augment", "make_condition", "concat_condition"]
