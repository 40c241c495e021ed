"""Progressive distillation (Salimans & Ho, ICLR 2022, arXiv 2202.00512): a student network learns to take
in one deterministic DDIM step what its teacher takes in two; repeated, each round halves the steps, from
the stage's own network sampled by DDIM down to a generator of a handful of network evaluations.

Why this method: it is built for this project's generating stages, v-prediction on a cosine schedule
(the paper introduces v-prediction for it, sec. 4); its target is a deterministic regression target,
with no target network, no schedule of its own and no learned perceptual metric (consistency
distillation, Song et al. 2023, compares with LPIPS, whose weights this project cannot download at run
time); and every round is a working sampler, so a budget too small for the last round still leaves one.

Names in the code and the paper's symbols (Algorithm 2; time runs from noise, t, to data):

    x_t              z_t          alpha_t x + sigma_t eps (schedules.q_sample), alpha_t^2 + sigma_t^2 = 1
    t, m, s          t, t', t''   the student's step, the teacher's step between, the student's next step
    ddim_step        z_s = alpha_s x^ + (sigma_s / sigma_t) (z_t - alpha_t x^)  (Song et al. 2021, eq. 12, eta = 0)
    target           x~ = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t): the x^
                     that takes z_t to the teacher's z_s in one DDIM step
    loss             max(SNR_t, 1) ||x~ - x^_student(z_t)||^2: "truncated SNR" weighting (sec. 4)

Discrete time, as the project's samplers: a student of N steps steps at the trailing timesteps of N
(samplers.trailing_timesteps) and then to alpha = 1, the clean image; its teacher takes the trailing
timesteps of 2N, which hold the student's as every other one. A training batch's timestep
t ~ U{0..T-1} picks the student's step i = floor(t N / T).

A stage's config (`DiffusionConfig`) says what a round is: `teacher`, the checkpoint it learns from (the
stage's own run for the first round, the round before for the others); `distilled_steps`, the student's
N; `distilled_from`, the DDIM steps of the first teacher, whose halvings are the rounds
(training.distill runs them). The student has its teacher's network and schedule and starts from its
weights; it predicts v, its teacher v or epsilon. Sampling needs only the student's checkpoint.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from mrnet_utils.diffusion.processes.base import Model, Process, SamplerChoice
from mrnet_utils.diffusion.processes.ddpm import DDPM
from mrnet_utils.diffusion.samplers import trailing_timesteps
from mrnet_utils.diffusion.schedules import DATA_RANGES, NoiseSchedule, q_sample, snr
from mrnet_utils.errors import MRNetError
from mrnet_utils.progress import track

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig
    from mrnet_utils.pipeline import TrainedStage

CLEAN = -1  # the timestep after the last: alpha = 1, sigma = 0


def step_grid(timesteps: int, steps: int) -> list[int]:
    """The timesteps a DDIM sampler of `steps` steps visits, then CLEAN."""
    return trailing_timesteps(timesteps, steps) + [CLEAN]


def alpha_sigma_at(schedule: NoiseSchedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """alpha_t and sigma_t per sample, shaped to broadcast against `like`; t = CLEAN gives (1, 0)."""
    abar = torch.cat([schedule.alphas_cumprod, schedule.alphas_cumprod.new_ones(1)]).to(t.device)
    abar = abar[torch.where(t == CLEAN, schedule.timesteps, t)]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return abar.sqrt().to(like.dtype).view(shape), (1 - abar).sqrt().to(like.dtype).view(shape)


def predicted_x0(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, output: Tensor, prediction: str = "v") -> Tensor:
    """x^, the estimate of x_0 in a network's output at x_t: alpha_t x_t - sigma_t v for v-prediction
    (Salimans & Ho, sec. 4), (x_t - sigma_t epsilon) / alpha_t for epsilon-prediction."""
    alpha, sigma = alpha_sigma_at(schedule, t, x_t)
    output = output.to(x_t.dtype)
    return alpha * x_t - sigma * output if prediction == "v" else (x_t - sigma * output) / alpha


def ddim_step(schedule: NoiseSchedule, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """Deterministic DDIM from timestep t to an earlier s (per sample; s = CLEAN gives x0_hat)."""
    alpha_t, sigma_t = alpha_sigma_at(schedule, t, x_t)
    alpha_s, sigma_s = alpha_sigma_at(schedule, s, x_t)
    return alpha_s * x0_hat + sigma_s / sigma_t * (x_t - alpha_t * x0_hat)


def distillation_target(schedule: NoiseSchedule, x_t: Tensor, x_s: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """x~: the estimate of x_0 whose one DDIM step takes x_t at t to x_s at s (Algorithm 2)."""
    alpha_t, sigma_t = alpha_sigma_at(schedule, t, x_t)
    alpha_s, sigma_s = alpha_sigma_at(schedule, s, x_t)
    ratio = sigma_s / sigma_t
    return (x_s - ratio * x_t) / (alpha_s - ratio * alpha_t)


class Distilled(Process):
    """A student distilled from a DDPM stage (or from the student of the round before), sampled by DDIM in
    exactly `distilled_steps` network evaluations."""

    name = "distilled"
    # The student predicts v: an epsilon student could not give x_0 at the first step, where alpha_t is about 0.
    # Its teacher may predict either (a v teacher, the project's, is also the better starting point).
    predictions = ("v",)
    data_ranges = DATA_RANGES
    samplers = ("ddim",)
    starts_from_input = False
    baseline = True  # trained beside the stage's own run, named apart from it
    from_teacher = True
    # The stage's schedule stays: a student shares its teacher's. Presets give their own rounds.
    switch_settings = {"prediction": "v", "distilled_steps": 4, "distilled_from": 32}

    @classmethod
    def check_timesteps(cls, timesteps: int) -> None:
        if timesteps < 2:
            raise MRNetError(f"timesteps={timesteps} does not suit process 'distilled' (at least 2)")

    @classmethod
    def validate(cls, cfg: DiffusionConfig) -> None:
        super().validate(cfg)
        steps, start = cfg.distilled_steps, cfg.distilled_from
        if steps < 1:
            raise MRNetError(f"distilled_steps={steps} must be at least 1 for process 'distilled'",
                             parameter="distilled_steps")
        if not 2 * steps <= start <= cfg.timesteps or math.log2(start / steps) % 1:
            raise MRNetError(f"distilled_from={start} must be distilled_steps={steps} times a power of two, at least "
                             f"twice it and at most timesteps={cfg.timesteps}", parameter="distilled_from")

    @classmethod
    def default_sampler(cls, cfg: DiffusionConfig) -> SamplerChoice:
        return "ddim", cfg.distilled_steps

    @classmethod
    def check_sampler(cls, cfg: DiffusionConfig, sampler: SamplerChoice) -> None:
        super().check_sampler(cfg, sampler)
        if sampler[1] != cfg.distilled_steps:
            raise MRNetError(f"a student distilled to {cfg.distilled_steps} steps samples in exactly that many, "
                             f"not {sampler[1]}", parameter="steps")

    build_schedule = staticmethod(DDPM.build_schedule)  # its teacher's schedule

    def __init__(self, cfg: DiffusionConfig, device: torch.device | str = "cpu",
                 load_run: Callable[[str, torch.device | str], TrainedStage] | None = None) -> None:
        super().__init__(cfg, device, load_run)
        self.device = device
        steps = cfg.distilled_steps
        self.student_grid = torch.tensor(step_grid(cfg.timesteps, steps), device=device)
        self.teacher_grid = torch.tensor(step_grid(cfg.timesteps, 2 * steps), device=device)

    @cached_property
    def teacher(self) -> TrainedStage:
        """The teacher network (EMA weights), loaded from `cfg.teacher` by `load_run` when training first needs it
        (sampling never does)."""
        if not self.cfg.teacher:
            raise MRNetError("a distilled stage trains from a teacher: set diffusion.teacher to its checkpoint "
                             "(training.distill does)", parameter="teacher")
        if self.load_run is None:
            raise MRNetError("a distilled stage loads its teacher through the training layer: build its process "
                             "with load_run=training.checkpoint.load_stage (training.loop does)")
        teacher = self.load_run(self.cfg.teacher, self.device)
        own = teacher.config.diffusion
        same = {"timesteps", "schedule", "beta_start", "beta_end", "data_range"}
        differ = sorted(key for key in same if getattr(own, key) != getattr(self.cfg, key))
        if differ:
            raise MRNetError(f"teacher {self.cfg.teacher} has other {', '.join(differ)} than its student; a student "
                             "keeps its teacher's schedule", parameter="teacher")
        if own.process not in ("ddpm", self.name):
            raise MRNetError(f"teacher {self.cfg.teacher} is a {own.process} stage; distil a ddpm stage",
                             parameter="teacher")
        if own.process == self.name and own.distilled_steps != 2 * self.cfg.distilled_steps:
            raise MRNetError(f"teacher {self.cfg.teacher} samples in {own.distilled_steps} steps; a student of "
                             f"{self.cfg.distilled_steps} steps learns from one of twice as many", parameter="teacher")
        teacher.model.requires_grad_(False)
        return teacher

    def initial_weights(self) -> dict[str, Tensor]:
        """The student starts as its teacher (Algorithm 2: "initialize student from teacher")."""
        return self.teacher.model.state_dict()

    def _teacher_x0(self, x_t: Tensor, t: Tensor, extra_args: dict[str, Any]) -> Tensor:
        output = self.teacher.model(x_t, t, **extra_args).float()
        return predicted_x0(self.schedule, x_t, t, output, self.teacher.config.diffusion.prediction)

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, extra_args: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """The student's step t (from the batch's timestep), x_t, and x~ from the teacher's two DDIM steps."""
        step = t * self.cfg.distilled_steps // self.cfg.timesteps
        t, s, m = self.student_grid[step], self.student_grid[step + 1], self.teacher_grid[2 * step + 1]
        x_t = q_sample(self.schedule, x0.float(), t, noise.float())
        with torch.no_grad():
            x_m = ddim_step(self.schedule, x_t, self._teacher_x0(x_t, t, extra_args), t, m)
            x_s = ddim_step(self.schedule, x_m, self._teacher_x0(x_m, m, extra_args), m, s)
        return t, x_t, distillation_target(self.schedule, x_t, x_s, t, s)

    def loss(self, model: Model, x0: Tensor, t: Tensor, noise: Tensor, extra_args: dict[str, Any],
             y0: Tensor | None) -> Tensor:
        t, x_t, target = self.target(x0, t, noise, extra_args)
        x0_hat = predicted_x0(self.schedule, x_t, t, model(x_t, t, **extra_args).float())
        weight = snr(self.schedule, t).clamp(min=1.0).float()
        return weight * (x0_hat - target).square().mean(dim=tuple(range(1, x0.ndim)))

    @torch.inference_mode()
    def sample(self, model: Model, sampler: SamplerChoice, noise: Tensor, extra_args: dict[str, Any],
               generators: list[torch.Generator] | None, y0: Tensor | None, progress: bool = False) -> Tensor:
        x = noise
        grid = self.student_grid.tolist()
        for t, s in track(list(zip(grid[:-1], grid[1:])), desc="distilled ddim", enabled=progress):
            t_batch, s_batch = (torch.full((len(x),), value, dtype=torch.long, device=x.device) for value in (t, s))
            x = ddim_step(self.schedule, x, predicted_x0(self.schedule, x, t_batch, model(x, t_batch, **extra_args)),
                          t_batch, s_batch)
        return x.clamp(-1, 1)
