"""The three ways a stage learns to make its image, behind one interface for training and sampling.

- "ddpm": the denoising diffusion of Ho et al. (2020) over x_0 (schedules.py, losses.py,
  samplers.py); a super-resolution stage sees the bilinearly upsampled low-res image as a
  condition (SR3, Saharia et al. 2021).
- "resshift": residual shifting (Yue et al. 2023, resshift.py), super-resolution only: a short
  chain from y_0, the bicubically upsampled low-res image, to x_0.
- "regression": no noise at all: x_0 = y_0 + f(y_0), trained with the same loss as resshift's
  x_0 prediction. The learned baseline of the super-resolution tables: what a network trained on
  the same slices, degradation and budget achieves without sampling.

All three give the network the (augmented) upsampled condition as `cond` and its level as
`aug_level` (conditioning.py); the residual formulations also keep the clean y_0 to shift from.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from mrnet_utils.config import DiffusionConfig, StageConfig, preset
from mrnet_utils.diffusion import resshift
from mrnet_utils.diffusion.losses import diffusion_loss
from mrnet_utils.diffusion.samplers import SAMPLERS, check_steps, sample
from mrnet_utils.diffusion.schedules import NoiseSchedule
from mrnet_utils.errors import MRNetError
from mrnet_utils.stages import SamplerChoice

Model = Callable[..., Tensor]
Schedule = NoiseSchedule | resshift.ResShiftSchedule | None
# How each process upsamples the low-res image for its condition (and its y_0).
UPSAMPLING = {"ddpm": "bilinear", "resshift": "bicubic", "regression": "bicubic"}
# The sampler each residual process is sampled with (a ddpm stage uses samplers.SAMPLERS).
OWN_SAMPLER = {"resshift": "resshift", "regression": "regression"}


def build_schedule(cfg: DiffusionConfig, device: torch.device | str = "cpu") -> Schedule:
    """The schedule of `cfg`'s process on `device` (regression has none)."""
    if cfg.process == "ddpm":
        schedule = NoiseSchedule.from_config(cfg)
        return NoiseSchedule(schedule.betas.to(device), schedule.prediction)
    if cfg.process == "resshift":
        return resshift.resshift_schedule(cfg.timesteps, cfg.kappa, cfg.eta_power, prediction=cfg.prediction)
    return None


def loss(
    model: Model, cfg: DiffusionConfig, schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor,
    extra_args: dict[str, Any], y0: Tensor | None = None,
) -> Tensor:
    """Per-sample training loss, shape (B,); `y0` is the clean upsampled input of the residual processes."""
    if cfg.process == "ddpm":
        return diffusion_loss(model, schedule, x0, t, noise, cfg.min_snr_gamma, extra_args)
    if cfg.process == "resshift":
        return resshift.resshift_loss(model, schedule, x0, y0, t, noise, extra_args, cfg.loss)
    error = regress(model, cfg, y0, extra_args).float() - x0.float()
    error = error.square() if cfg.loss == "l2" else error.abs()
    return error.mean(dim=tuple(range(1, x0.ndim)))


def regress(model: Model, cfg: DiffusionConfig, y0: Tensor, extra_args: dict[str, Any]) -> Tensor:
    """The regression baseline's x_0: the network's output (plus y_0 for prediction "residual") at t = 0."""
    t = torch.zeros(len(y0), dtype=torch.long, device=y0.device)
    output = model(y0, t, **extra_args).to(y0.dtype)
    return y0 + output if cfg.prediction == "residual" else output


def default_sampler(cfg: StageConfig) -> SamplerChoice:
    """The sampler a stage uses unless the caller names one, wherever it samples (study, command line, training
    grids, benchmarks). A ddpm stage: its preset's choice when the preset makes one (config.Preset.sampler; all
    T steps when it names no number), else the stage table's default. A residual stage (resshift, regression):
    its process's own chain over all its T steps."""
    process = cfg.diffusion.process
    if process != "ddpm":
        return OWN_SAMPLER[process], cfg.diffusion.timesteps
    chosen = preset(cfg.preset).sampler
    if chosen is None:
        return cfg.spec.sampler
    name, steps = chosen
    return name, steps or cfg.diffusion.timesteps


def takes_sampler(cfg: DiffusionConfig, name: str) -> bool:
    """Whether a stage of `cfg`'s process can be sampled with sampler `name`."""
    return name in SAMPLERS if cfg.process == "ddpm" else name == OWN_SAMPLER[cfg.process]


def check_sampler(cfg: DiffusionConfig, sampler: tuple[str, int]) -> None:
    """Refuse a sampler this process cannot run, or steps its schedule does not have, before sampling anything."""
    name, steps = sampler
    if cfg.process == "ddpm":
        if name in OWN_SAMPLER.values():
            raise MRNetError(f"sampler {name!r} samples a {name} stage; this stage's process is 'ddpm'", parameter="sampler")
        check_steps(name, cfg.timesteps, steps)
        return
    if name != OWN_SAMPLER[cfg.process]:
        raise MRNetError(f"a {cfg.process} stage samples with {OWN_SAMPLER[cfg.process]!r}, not {name!r}",
                         parameter="sampler")
    if cfg.process == "resshift" and not 1 <= steps <= cfg.timesteps:
        raise MRNetError(f"steps={steps} must be between 1 and the schedule's T={cfg.timesteps}", parameter="steps")


def generate(
    model: Model, cfg: DiffusionConfig, schedule: Schedule, sampler: tuple[str, int], noise: Tensor,
    extra_args: dict[str, Any], generators: list[torch.Generator] | None, y0: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    """One draw of x_0 from x_T = `noise` (ddpm) or from y_0 (the residual processes), in [-1, 1];
    `progress` shows a bar over the sampler's steps."""
    check_sampler(cfg, sampler)
    name, steps = sampler
    if cfg.process == "ddpm":
        return sample(name, model, schedule, noise, steps, extra_args=extra_args, generators=generators,
                      progress=progress)
    if cfg.process == "resshift":
        return resshift.sample_resshift(model, schedule, y0, noise, steps, extra_args, generators, progress)
    with torch.inference_mode():
        return regress(model, cfg, y0, extra_args).clamp(-1, 1)
