"""DDPM (Ho et al. 2020): diffusion of x_0 to pure noise, sampled back by any of the samplers in
diffusion/samplers.py. A super-resolution stage sees the bilinearly upsampled low-res image beside x_t
(SR3, Saharia et al. 2021), as the reference study's SR stages did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mrnet_utils.diffusion import samplers
from mrnet_utils.diffusion.losses import diffusion_loss
from mrnet_utils.diffusion.processes.base import Model, Process, SamplerChoice
from mrnet_utils.diffusion.schedules import DATA_RANGES, PREDICTIONS, NoiseSchedule
from mrnet_utils.errors import MRNetError

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig


class DDPM(Process):
    name = "ddpm"
    predictions = PREDICTIONS
    data_ranges = DATA_RANGES
    samplers = tuple(samplers.SAMPLERS)  # "ddpm" first: the ancestral chain is the default
    upsampling = "bilinear"
    starts_from_input = False
    switch_settings = {"timesteps": 1000, "prediction": "epsilon"}

    @classmethod
    def check_timesteps(cls, timesteps: int) -> None:
        if timesteps < 2:
            raise MRNetError(f"timesteps={timesteps} does not suit process 'ddpm' (at least 2)")

    @classmethod
    def check_sampler(cls, cfg: DiffusionConfig, sampler: SamplerChoice) -> None:
        super().check_sampler(cfg, sampler)
        samplers.check_steps(sampler[0], cfg.timesteps, sampler[1])  # DDIM's steps must also divide T

    @staticmethod
    def build_schedule(cfg: DiffusionConfig, device: torch.device | str) -> NoiseSchedule:
        schedule = NoiseSchedule.from_config(cfg)
        return NoiseSchedule(schedule.betas.to(device), schedule.prediction)

    def loss(self, model: Model, x0: Tensor, t: Tensor, noise: Tensor, extra_args: dict[str, Any],
             y0: Tensor | None) -> Tensor:
        return diffusion_loss(model, self.schedule, x0, t, noise, self.cfg.min_snr_gamma, extra_args)

    def sample(self, model: Model, sampler: SamplerChoice, noise: Tensor, extra_args: dict[str, Any],
               generators: list[torch.Generator] | None, y0: Tensor | None, progress: bool = False) -> Tensor:
        name, steps = sampler
        return samplers.sample(name, model, self.schedule, noise, steps, extra_args, generators, progress)
