"""The noise processes, one module each, and their registry.

- ddpm: denoising diffusion from pure noise (Ho et al. 2020; SR3 conditioning for super-resolution stages).
- resshift: residual shifting from the upsampled low-res image in a handful of steps (Yue et al. 2023).
- regression: one forward pass, no noise: the learned baseline of the super-resolution tables.
- distilled: a generating stage distilled to a few DDIM steps (progressive distillation, Salimans & Ho 2022).

A new process is one module with a `base.Process` subclass and one entry in `PROCESSES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from mrnet_utils.diffusion.processes.base import Process, SamplerChoice
from mrnet_utils.diffusion.processes.ddpm import DDPM
from mrnet_utils.diffusion.processes.distilled import Distilled
from mrnet_utils.diffusion.processes.regression import Regression
from mrnet_utils.diffusion.processes.resshift import ResShift
from mrnet_utils.errors import MRNetError

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig

PROCESSES: dict[str, type[Process]] = {process.name: process for process in (DDPM, ResShift, Regression, Distilled)}


def process_class(name: str) -> type[Process]:
    """The process called `name`, or an error listing them."""
    if name not in PROCESSES:
        raise MRNetError(f"process must be one of {', '.join(PROCESSES)}, not {name!r}", parameter="process")
    return PROCESSES[name]


def build_process(cfg: DiffusionConfig, device: torch.device | str = "cpu",
                  load_run: Callable[[str, torch.device | str], Any] | None = None) -> Process:
    """`cfg`'s process, with its schedule on `device`; `load_run` loads the trained run a process trains from
    (Process.__init__), for training."""
    return process_class(cfg.process)(cfg, device, load_run)


def sampler_names() -> tuple[str, ...]:
    """Every sampler some process takes, each once."""
    return tuple(dict.fromkeys(name for process in PROCESSES.values() for name in process.samplers))


__all__ = ["PROCESSES", "Process", "SamplerChoice", "process_class", "build_process", "sampler_names"]
