"""The interface every noise process implements: training, the pipeline, the command line, the study and
the benchmarks ask a stage's process, and never branch on its name (DESIGN.md, "Processes").

A process is built from its `config.DiffusionConfig` (checked by `validate`) and holds its schedule on a
device. What it is (its predictions, its samplers, whether it starts from the low-res input) is written on
the class, so that a config can be checked and a sampler chosen without building it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import Tensor

from mrnet_utils.diffusion import conditioning
from mrnet_utils.diffusion.schedules import to_process
from mrnet_utils.errors import MRNetError

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig

Model = Callable[..., Tensor]
SamplerChoice = tuple[str, int]  # (a sampler name the process takes, number of network evaluations)


class Process(ABC):
    """One way a stage learns to make its image, and how it then makes one."""

    name: ClassVar[str]  # DiffusionConfig.process
    predictions: ClassVar[tuple[str, ...]]  # what its network may output (DiffusionConfig.prediction)
    data_ranges: ClassVar[tuple[str, ...]] = ("symmetric",)  # DiffusionConfig.data_range it works in
    samplers: ClassVar[tuple[str, ...]]  # the samplers it takes
    upsampling: ClassVar[str] = "bicubic"  # how a super-resolution stage's low-res input is upsampled
    starts_from_input: ClassVar[bool]  # its chain starts from the upsampled input y_0 (so it only super-resolves)
    baseline: ClassVar[bool] = False  # trained beside a stage's own process: its runs carry its name
    deterministic: ClassVar[bool] = False  # its output does not depend on the noise (one output, no posterior mean)
    # Trained from a trained run of the stage (DiffusionConfig.teacher; training.distill), not from scratch.
    from_teacher: ClassVar[bool] = False
    # The settings a stage of another process takes when switched to this one (presets.stage_config).
    switch_settings: ClassVar[dict[str, Any]]

    def __init__(self, cfg: DiffusionConfig, device: torch.device | str = "cpu",
                 load_run: Callable[[str, torch.device | str], Any] | None = None) -> None:
        """`load_run(path, device)` loads a trained run (training.checkpoint.load_stage), for a process that
        trains from one (`from_teacher`); the training layer passes it, so that this layer never imports it."""
        self.validate(cfg)
        self.cfg = cfg
        self.load_run = load_run
        self.schedule = self.build_schedule(cfg, device)

    @classmethod
    def validate(cls, cfg: DiffusionConfig) -> None:
        """Refuse settings this process cannot run, naming the setting."""
        if cfg.prediction not in cls.predictions:
            raise MRNetError(
                f"prediction must be one of {', '.join(cls.predictions)} for process {cls.name!r}, not {cfg.prediction!r}"
            )
        if cfg.data_range not in cls.data_ranges:
            raise MRNetError(f"process {cls.name!r} works in data_range {' or '.join(map(repr, cls.data_ranges))}, "
                             f"not {cfg.data_range!r}")
        cls.check_timesteps(cfg.timesteps)

    @classmethod
    @abstractmethod
    def check_timesteps(cls, timesteps: int) -> None:
        """Refuse a chain length T this process cannot have."""

    @classmethod
    def default_sampler(cls, cfg: DiffusionConfig) -> SamplerChoice:
        """Its own chain over all T steps: the reference every faster sampler of the stage is held against."""
        return cls.samplers[0], cfg.timesteps

    @classmethod
    def check_sampler(cls, cfg: DiffusionConfig, sampler: SamplerChoice) -> None:
        """Refuse a sampler this process cannot run, or steps its schedule does not have, before sampling anything."""
        name, steps = sampler
        if name not in cls.samplers:
            raise MRNetError(f"a {cls.name} stage samples with {', '.join(cls.samplers)}, not {name!r}",
                             parameter="sampler")
        if not 1 <= steps <= cfg.timesteps:
            raise MRNetError(f"steps={steps} must be between 1 and the schedule's T={cfg.timesteps}", parameter="steps")

    @staticmethod
    @abstractmethod
    def build_schedule(cfg: DiffusionConfig, device: torch.device | str) -> Any:
        """The process's schedule on `device` (None for a process without one)."""

    def condition(
        self, low_res: Tensor, size: int, level: Tensor | float, aug_noise: Tensor
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """From a super-resolution stage's low-res input (in [-1, 1]): the network's `cond` and `aug_level`
        (conditioning.make_condition), and y_0, the clean upsampled input its chain starts from (None where
        the chain starts from noise)."""
        low = to_process(low_res, self.cfg.data_range)
        cond, level = conditioning.make_condition(low, size, level, aug_noise, self.upsampling)
        y0 = conditioning.upsample(low, size, self.upsampling) if self.starts_from_input else None
        return {"cond": cond, "aug_level": level}, y0

    def initial_weights(self) -> dict[str, Tensor] | None:
        """The network's weights before its first training step: None for a fresh initialisation."""
        return None

    @abstractmethod
    def loss(
        self, model: Model, x0: Tensor, t: Tensor, noise: Tensor, extra_args: dict[str, Any], y0: Tensor | None
    ) -> Tensor:
        """Per-sample training loss, shape (B,), at timesteps t ~ Uniform{0..T-1} with `noise` ~ N(0, I)."""

    @abstractmethod
    def sample(
        self, model: Model, sampler: SamplerChoice, noise: Tensor, extra_args: dict[str, Any],
        generators: list[torch.Generator] | None, y0: Tensor | None, progress: bool = False,
    ) -> Tensor:
        """One draw of x_0 in [-1, 1] in exactly `steps` network evaluations, from `noise` (and y_0 where the
        chain starts from the input); `generators`, one per image, draw any later noise."""


def reconstruction_loss(x0_hat: Tensor, x0: Tensor, kind: str) -> Tensor:
    """Per-sample mean squared ("l2") or absolute ("l1") error of an estimate of x_0, shape (B,)."""
    error = x0_hat.float() - x0.float()
    error = error.square() if kind == "l2" else error.abs()
    return error.mean(dim=tuple(range(1, x0.ndim)))
