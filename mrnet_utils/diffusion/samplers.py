"""Samplers: ancestral DDPM (both variances), DDIM, DPM-Solver++(2M) and its SDE form, in one table.

    sample(name, model, schedule, noise, steps, extra_args=None, generators=None, progress=False) -> x_0

is a pure function of the network, the schedule, the starting noise x_T and the per-image
generators, as in k-diffusion; nothing is stored on the network. `SAMPLERS` maps each name
to the diffusers scheduler it steps with (DDPMScheduler, DDIMScheduler,
DPMSolverMultistepScheduler), built fresh for each call from our NoiseSchedule's betas,
without clipping or thresholding of the predicted x_0; it is the one list of sampler names.

Each sampler makes exactly `steps` network evaluations, at "trailing" timesteps
(Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2):
    t_k = round(T (steps - k) / steps) - 1,  k = 0 .. steps-1.
The first step is at t = T-1, where N(0, I) is the best match for x_t, and the last step
goes to abar = 1, the clean image. With steps == T this is T-1, ..., 0: the full chain.
(diffusers' default "leading" spacing would label pure noise as t = 960 of 1000 at 25 steps.)

Reproducibility: image i depends only on its own seed. `noise_from_seeds` draws x_T and
`generators_from_seeds` gives one generator per image for the per-step noise (DDPM and
SDE-DPM-Solver++);
the two are distinct streams of the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor

from mrnet_utils.diffusion.schedules import NoiseSchedule
from mrnet_utils.errors import MRNetError
from mrnet_utils.progress import track

if TYPE_CHECKING:  # diffusers takes seconds to import; the schedulers below import it when first built
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

Model = Callable[..., Tensor]
Device = torch.device | str

# Purposes hashed together with (seed, stream), so that x_T and the per-step noise never share a stream.
_START_NOISE, _STEP_NOISE = 0, 1


def _derived_seed(seed: int, stream: int, purpose: int, draw: int) -> int:
    """A 64-bit seed for (seed, stream, purpose, draw); SeedSequence hashes them, so nearby inputs do not collide.
    Draw 0 hashes (seed, stream, purpose) alone, as before draws existed, so its numbers are unchanged."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MRNetError(f"seeds must be non-negative integers, got {seed!r}")
    entropy = [int(seed), stream, purpose] + ([draw] if draw else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def noise_from_seeds(
    seeds: list[int], shape_chw: tuple[int, ...], device: Device, stream: int = 0, draw: int = 0
) -> Tensor:
    """x_T ~ N(0, I), one image per seed, shape (len(seeds), *shape_chw).

    Drawn on the CPU and then moved, so the starting noise (and with it every DDIM and
    DPM-Solver++ sample) is the same on any device. `stream` separates independent uses
    of one seed, e.g. the stages of a cascade; `draw` separates repeated draws for one image
    (the draws a posterior-mean estimate averages).
    """
    draws = [
        torch.randn(
            (1, *shape_chw), generator=torch.Generator().manual_seed(_derived_seed(s, stream, _START_NOISE, draw))
        )
        for s in seeds
    ]
    return torch.cat(draws).to(device)


def generators_from_seeds(seeds: list[int], device: Device, stream: int = 0, draw: int = 0) -> list[torch.Generator]:
    """One generator per image for the per-step noise, on `device` so that drawing needs no host copy.

    Distinct from the stream `noise_from_seeds` uses for the same (seed, stream, draw). On a GPU
    these draw different numbers than on the CPU, so DDPM and SDE-DPM-Solver++ samples differ across devices.
    """
    return [torch.Generator(device=device).manual_seed(_derived_seed(s, stream, _STEP_NOISE, draw)) for s in seeds]


def trailing_timesteps(T: int, steps: int) -> list[int]:
    """t_k = round(T (steps - k) / steps) - 1 for k = 0 .. steps-1, in exact integer arithmetic.

    diffusers computes this with a float np.arange that, for some (T, steps) such as
    (1000, 61), yields one extra step at t = -1; hence our own list.
    """
    return [(2 * T * j + steps) // (2 * steps) - 1 for j in range(steps, 0, -1)]


def _scheduler_args(schedule: NoiseSchedule) -> dict[str, Any]:
    return dict(
        num_train_timesteps=schedule.timesteps,
        trained_betas=schedule.betas.detach().cpu().numpy(),  # one host copy per call, before the loop
        prediction_type="epsilon" if schedule.prediction == "epsilon" else "v_prediction",
        thresholding=False,
    )


def check_steps(name: str, timesteps: int, steps: int) -> None:
    """Refuse a sampler name or a number of steps that a schedule of `timesteps` cannot take, before any sampling."""
    if name not in SAMPLERS:
        raise MRNetError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}", parameter="sampler")
    if not 1 <= steps <= timesteps:
        raise MRNetError(f"steps={steps} must be between 1 and the schedule's T={timesteps}", parameter="steps")
    if name == "ddim" and timesteps % steps:
        raise MRNetError(
            f"DDIM steps={steps} must divide the schedule's T={timesteps} "
            "(diffusers' DDIMScheduler strides by T // steps); choose a divisor or the 'dpmpp' sampler",
            parameter="steps",
        )


def _check(noise: Tensor, generators: list[torch.Generator] | None) -> None:
    if noise.ndim != 4:
        raise MRNetError(f"noise must be a (B, C, H, W) tensor, got shape {tuple(noise.shape)}")
    if generators is not None:
        if len(generators) != len(noise):
            raise MRNetError(f"got {len(generators)} generators for a batch of {len(noise)}; give one per image")
        if any(g.device.type != noise.device.type for g in generators):
            raise MRNetError(f"generators must be on {noise.device.type}: use generators_from_seeds(seeds, device)")


@torch.inference_mode()
def _denoise(
    scheduler: SchedulerMixin,
    model: Model,
    noise: Tensor,
    extra_args: dict[str, Any] | None,
    generators: list[torch.Generator] | None,
    progress: bool,
    name: str,
    **step_args: Any,
) -> Tensor:
    """Run scheduler.step from x_T to x_0 (the scheduler's timesteps already set)."""
    extra_args = extra_args or {}
    x = noise
    # Python ints: diffusers indexes its CPU-side alphas with them, so no step waits on the GPU.
    timesteps = scheduler.timesteps.tolist()
    for t in track(timesteps, desc=name, unit="step", enabled=progress):
        # 1. the network takes t as a (B,) long tensor beside x
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        # 2. predict epsilon or v at (x_t, t)
        model_output = model(x, t_batch, **extra_args)
        # 3. step x_t -> x_{t_prev} in x's precision: under bf16 autocast the output is bf16, and
        #    DPM-Solver would otherwise cast x itself to the output's dtype after every step
        x = scheduler.step(model_output.to(x.dtype), t, x, generator=generators, **step_args).prev_sample
    # 4. the data lie in [-1, 1]
    return x.clamp(-1, 1)


def _ddpm(schedule: NoiseSchedule, steps: int) -> SchedulerMixin:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) with the posterior variance beta~_t.

    steps == T is the full chain; fewer steps use the respaced process between the chosen
    timesteps (beta_t = 1 - abar_t / abar_t_prev), as in Nichol & Dhariwal (2021).
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**_scheduler_args(schedule), variance_type="fixed_small", clip_sample=False)
    scheduler.set_timesteps(timesteps=trailing_timesteps(schedule.timesteps, steps))
    return scheduler


def _ddpm_large(schedule: NoiseSchedule, steps: int) -> SchedulerMixin:
    """Ancestral sampling with the variance beta_t instead of beta~_t (Ho et al. 2020, sec. 3.2: the other
    of the two choices they found to work alike at T = 1000), as the reference study sampled."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**_scheduler_args(schedule), variance_type="fixed_large", clip_sample=False)
    scheduler.set_timesteps(timesteps=trailing_timesteps(schedule.timesteps, steps))
    return scheduler


def _ddim(schedule: NoiseSchedule, steps: int) -> SchedulerMixin:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with eta = 0).

    diffusers' DDIMScheduler always steps back by T // steps, so `steps` must divide T for
    its steps to land on the trailing timesteps and its last step on the clean image.
    """
    check_steps("ddim", schedule.timesteps, steps)
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        **_scheduler_args(schedule), clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing"
    )
    scheduler.set_timesteps(steps)
    return scheduler


def _dpm_solver_2m(schedule: NoiseSchedule, steps: int, algorithm_type: str) -> SchedulerMixin:
    """diffusers' second-order multistep DPM-Solver++ (ODE or SDE form) at the trailing timesteps, down to sigma = 0."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        **_scheduler_args(schedule), algorithm_type=algorithm_type, solver_order=2, final_sigmas_type="zero"
    )
    scheduler.set_timesteps(timesteps=trailing_timesteps(schedule.timesteps, steps))
    return scheduler


def _dpmpp(schedule: NoiseSchedule, steps: int) -> SchedulerMixin:
    """DPM-Solver++(2M) (Lu et al. 2022), deterministic.

    Second-order multistep in log-SNR on the data prediction, one network evaluation per
    step; the first step (no history yet) and the last (to sigma = 0) are first order.
    """
    return _dpm_solver_2m(schedule, steps, "dpmsolver++")


def _dpmpp_sde(schedule: NoiseSchedule, steps: int) -> SchedulerMixin:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", its solver for the diffusion SDE), stochastic.

    The multistep data-prediction update of DPM-Solver++ on the reverse SDE instead of the
    ODE: with lambda = log(alpha_t / sigma_t) and h = lambda_t - lambda_s, first order reads
        x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0_hat + sigma_t sqrt(1 - e^{-2h}) z.
    The fresh noise z keeps the fine texture that the deterministic solvers smooth out;
    it is drawn from the per-image generators.
    """
    return _dpm_solver_2m(schedule, steps, "sde-dpmsolver++")


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler set up for `steps` steps of a schedule, and the extra arguments of its step()."""

    scheduler: Callable[[NoiseSchedule, int], SchedulerMixin]
    step_args: dict[str, Any] = field(default_factory=dict)


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(_ddpm),
    "ddpm_large": Sampler(_ddpm_large),
    "ddim": Sampler(_ddim, {"eta": 0.0}),
    "dpmpp": Sampler(_dpmpp),
    "dpmpp_sde": Sampler(_dpmpp_sde),
}


def sample(
    name: str,
    model: Model,
    schedule: NoiseSchedule,
    noise: Tensor,
    steps: int,
    extra_args: dict[str, Any] | None = None,
    generators: list[torch.Generator] | None = None,
    progress: bool = False,
) -> Tensor:
    """x_0 from x_T = `noise` in exactly `steps` network evaluations of `model(x_t, t, **extra_args)`.

    `generators` (one per image, `generators_from_seeds`) feed the per-step noise of the
    stochastic samplers; the deterministic ones accept and ignore them.
    """
    check_steps(name, schedule.timesteps, steps)
    _check(noise, generators)
    sampler = SAMPLERS[name]
    scheduler = sampler.scheduler(schedule, steps)
    return _denoise(scheduler, model, noise, extra_args, generators, progress, name, **sampler.step_args)


__all__ = ["SAMPLERS", "Sampler", "sample", "check_steps", "noise_from_seeds", "generators_from_seeds", "trailing_timesteps"]
