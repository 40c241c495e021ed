"""The regression baseline: no noise at all, x_0 = y_0 + f(y_0) in one forward pass, trained with the
same loss as ResShift's x_0 prediction. What a network trained on the same slices, degradation and budget
achieves without sampling: the learned baseline of the super-resolution tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mrnet_utils.diffusion.processes.base import Model, Process, SamplerChoice, reconstruction_loss
from mrnet_utils.errors import MRNetError

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig


class Regression(Process):
    name = "regression"
    predictions = ("residual", "x0")  # x_0 = y_0 + output, or the output itself
    samplers = ("regression",)
    starts_from_input = True
    baseline = True
    deterministic = True
    switch_settings = {"timesteps": 1, "prediction": "residual"}

    @classmethod
    def check_timesteps(cls, timesteps: int) -> None:
        if timesteps != 1:
            raise MRNetError(f"timesteps={timesteps} does not suit process 'regression' (exactly 1)")

    @staticmethod
    def build_schedule(cfg: DiffusionConfig, device: torch.device | str) -> None:
        return None

    def predict(self, model: Model, y0: Tensor, extra_args: dict[str, Any]) -> Tensor:
        """x_0-hat: the network's output at t = 0, plus y_0 for prediction "residual"."""
        t = torch.zeros(len(y0), dtype=torch.long, device=y0.device)
        output = model(y0, t, **extra_args).to(y0.dtype)
        return y0 + output if self.cfg.prediction == "residual" else output

    def loss(self, model: Model, x0: Tensor, t: Tensor, noise: Tensor, extra_args: dict[str, Any],
             y0: Tensor | None) -> Tensor:
        return reconstruction_loss(self.predict(model, y0, extra_args), x0, self.cfg.loss)

    @torch.inference_mode()
    def sample(self, model: Model, sampler: SamplerChoice, noise: Tensor, extra_args: dict[str, Any],
               generators: list[torch.Generator] | None, y0: Tensor | None, progress: bool = False) -> Tensor:
        return self.predict(model, y0, extra_args).clamp(-1, 1)
