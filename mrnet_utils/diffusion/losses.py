"""The training objective: what the network learns to predict, and how each timestep is weighted.

Symbols as in schedules.py: x_0 the clean image, epsilon the noise, abar_t = prod (1 - beta_s),
SNR(t) = abar_t / (1 - abar_t), v = sqrt(abar_t) epsilon - sqrt(1 - abar_t) x_0.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from mrnet_utils.diffusion.schedules import NoiseSchedule, alpha_sigma, q_sample, snr


def training_target(schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """What the network learns to output at x_t: epsilon, or v = sqrt(abar_t) epsilon - sqrt(1 - abar_t) x_0."""
    if schedule.prediction == "epsilon":
        return noise
    alpha, sigma = alpha_sigma(schedule, t, x0)
    return alpha * noise - sigma * x0


def loss_weight(schedule: NoiseSchedule, t: Tensor, min_snr_gamma: float = 0.0) -> Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023), shape (B,); all ones when min_snr_gamma == 0.

    The MSE on epsilon weighs step t by SNR(t) relative to an x_0 loss, and the MSE on v by
    SNR(t) + 1; clipping SNR at gamma stops the nearly clean steps from dominating.
    """
    if min_snr_gamma <= 0:
        return torch.ones(t.shape, dtype=torch.float64, device=t.device)
    ratio = snr(schedule, t)
    clipped = ratio.clamp(max=min_snr_gamma)
    return clipped / ratio if schedule.prediction == "epsilon" else clipped / (ratio + 1)


def diffusion_loss(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    min_snr_gamma: float = 0.0,
    extra_args: dict[str, Any] | None = None,
) -> Tensor:
    """Per-sample loss, shape (B,): weighted MSE between model(x_t, t, **extra_args) and the target (DDPM eq. 14)."""
    x_t = q_sample(schedule, x0, t, noise)
    prediction = model(x_t, t, **(extra_args or {}))
    target = training_target(schedule, x0, noise, t)
    # Upcast: under bf16 autocast the network output is bf16, and the squared error needs more bits.
    mse = (prediction.float() - target.float()).square().mean(dim=tuple(range(1, x0.ndim)))
    return loss_weight(schedule, t, min_snr_gamma).to(mse.dtype) * mse


def sample_timesteps(batch: int, T: int, generator: torch.Generator | None = None) -> Tensor:
    """t ~ Uniform{0, ..., T-1}, shape (batch,), int64, on the generator's device (CPU without one)."""
    device = generator.device if generator is not None else None
    return torch.randint(0, T, (batch,), generator=generator, device=device)


__all__ = ["training_target", "loss_weight", "diffusion_loss", "sample_timesteps"]
