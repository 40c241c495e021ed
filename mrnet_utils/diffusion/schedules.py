"""Noise schedules and the forward process q(x_t | x_0) (DDPM, Ho et al. 2020).

Names in the code and the symbols they stand for:

    betas           beta_t        variance of forward step t (DDPM eq. 2)
    alphas_cumprod  abar_t        prod_{s<=t} (1 - beta_s)
    x0, x_t         x_0, x_t      clean image, its noised version at step t
    noise           epsilon       ~ N(0, I)
    snr             SNR(t)        abar_t / (1 - abar_t)
    v               v_t           sqrt(abar_t) epsilon - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, sec. 4)

Timesteps are 0-based: t in [0, T) indexes betas[t], where the papers count 1..T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mrnet_utils.errors import MRNetError

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig

PREDICTIONS = ("epsilon", "v")
# The range of x_0 in the noise process: "symmetric" [-1, 1] (the project's), or "unit" [0, 1] (the
# reference study's ToTensor images; at a given abar_t the signal is then half as strong).
DATA_RANGES = ("symmetric", "unit")


def linear_betas(T: int, beta_start: float, beta_end: float) -> Tensor:
    """beta_t evenly spaced from beta_start to beta_end (linear in beta, as DDPM and the reference use)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved DDPM (Nichol & Dhariwal 2021) eq. 17: abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2).

    beta_t = 1 - abar_t / abar_{t-1}, capped at max_beta so that the last step stays invertible.
    """
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields with == is ambiguous
class NoiseSchedule:
    """The discrete forward process q(x_t | x_0) and what the network predicts ("epsilon" or "v")."""

    betas: Tensor  # (T,) float64
    prediction: str

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise MRNetError(f"prediction must be one of {PREDICTIONS}, not {self.prediction!r}")
        if self.betas.ndim != 1 or len(self.betas) < 2:
            raise MRNetError(f"betas must be a 1-D tensor of at least 2 steps, got shape {tuple(self.betas.shape)}")

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(1 - self.betas, dim=0)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "NoiseSchedule":
        cfg.validate()
        if cfg.schedule == "cosine":
            betas = cosine_betas(cfg.timesteps)
        else:
            betas = linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        if not (0 < float(betas.min()) and float(betas.max()) < 1):
            raise MRNetError(f"betas must lie in (0, 1): check beta_start={cfg.beta_start}, beta_end={cfg.beta_end}")
        return cls(betas, cfg.prediction)


def alpha_sigma(schedule: NoiseSchedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) for each sample, shaped to broadcast against `like` (B, ...)."""
    abar = schedule.alphas_cumprod.to(t.device)[t]  # float64 until the end, for the small 1 - abar_t
    shape = (-1,) + (1,) * (like.ndim - 1)
    return abar.sqrt().to(like.dtype).view(shape), (1 - abar).sqrt().to(like.dtype).view(shape)


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) epsilon (DDPM eq. 4, reparameterised)."""
    alpha, sigma = alpha_sigma(schedule, t, x0)
    return alpha * x0 + sigma * noise


def snr(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """SNR(t) = abar_t / (1 - abar_t), float64, shape (B,)."""
    abar = schedule.alphas_cumprod.to(t.device)[t]
    return abar / (1 - abar)


def to_process(images: Tensor, data_range: str) -> Tensor:
    """Model-space images in [-1, 1] as the noise process's x_0: unchanged ("symmetric") or in [0, 1] ("unit")."""
    return images if data_range == "symmetric" else (images + 1) / 2


def from_process(x0: Tensor, data_range: str) -> Tensor:
    """The inverse of `to_process`: the process's x_0 back in model space [-1, 1]."""
    return x0 if data_range == "symmetric" else x0 * 2 - 1


__all__ = ["PREDICTIONS", "DATA_RANGES", "linear_betas", "cosine_betas", "NoiseSchedule", "q_sample", "snr", "alpha_sigma", "to_process", "from_process"]
