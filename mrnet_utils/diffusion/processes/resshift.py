"""ResShift: super-resolution by shifting the residual (Yue, Wang & Loy, NeurIPS 2023, arXiv 2307.12348).

An SR3-style stage diffuses the high-res image all the way to pure noise and must walk back
through hundreds of noise levels. ResShift builds a short Markov chain between the high-res
image x_0 and the upsampled low-res image y_0 instead: each forward step moves a share of
the residual e_0 = y_0 - x_0 and adds a little noise, so x_T is y_0 plus noise, and sampling
starts there. A handful of steps suffice (the paper: T = 15).

Names in the code and the paper's symbols (equation numbers of the arXiv version):

    etas        eta_t      shifting schedule, 0 < eta_1 < ... < eta_T < 1      (eqs. 10-11)
    alphas      alpha_t    eta_t - eta_{t-1}, with eta_0 = 0 (so alpha_1 = eta_1)
    kappa       kappa      noise scale of the chain
    x0, y0      x_0, y_0   high-res image; low-res image upsampled to the same size
    e0          e_0        y_0 - x_0
    x_t         x_t        q(x_t | x_{t-1}, y_0) = N(x_{t-1} + alpha_t e_0, kappa^2 alpha_t I)  (eq. 1)
                           q(x_t | x_0, y_0)     = N(x_0 + eta_t e_0, kappa^2 eta_t I)          (eq. 2)
    posterior              q(x_{t-1} | x_t, x_0, y_0)
                             = N(eta_{t-1}/eta_t x_t + alpha_t/eta_t x_0, kappa^2 eta_{t-1}/eta_t alpha_t I)  (eq. 6)
    loss                   sum_t ||f_theta(x_t, y_0, t) - x_0||^2, the network predicting x_0 (eq. 8,
                           without its weight w_t, as the paper recommends)

Timesteps are 0-based as in schedules.py: index t in [0, T) holds eta_{t+1}; the clean
image sits at eta = 0, one past the last index.

What the network sees (choices of this module, not the paper's):
- predicted x_0 = y_0 + network output ("residual", the default) or the output itself ("x0").
  The UNet's output layer starts at zero, so an untrained residual network returns y_0: the
  stage degrades to interpolation, never below it.
- its image input is x_t / sqrt(1 + kappa^2 eta_t), about unit variance at every step (as the
  authors' code does), and its time input is 1000 eta_t: a noise level, the same for any T.
- `extra_args` go to the network unchanged: for the project's UNet the (augmented) upsampled
  condition `cond` and its `aug_level` (conditioning.augment applied to y_0).
- y_0 is the bicubic upsampling of the low-res image (conditioning.upsample(..., "bicubic")), not the
  bilinear one of SR3: a starting point closer to the high-res image.
- with conditioning augmentation the chain's y_0 stays the clean upsampled image; only the
  network's `cond` is noised (shifting towards the noised image would make the network denoise it too).

`ResShift` at the end is the process (processes/base.py) that training and sampling call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from mrnet_utils.diffusion.processes.base import Process, SamplerChoice, reconstruction_loss
from mrnet_utils.diffusion.samplers import trailing_timesteps
from mrnet_utils.errors import MRNetError
from mrnet_utils.progress import track

if TYPE_CHECKING:
    from mrnet_utils.config import DiffusionConfig

Model = Callable[..., Tensor]
PREDICTIONS = ("residual", "x0")
LOSSES = ("l2", "l1")
# The network's time input is eta_t stretched to the range of timesteps the UNet's embedding expects.
NETWORK_TIME_SCALE = 1000.0


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields with == is ambiguous
class ResShiftSchedule:
    """The chain's schedule eta_1..eta_T, its noise scale kappa, and what the network predicts."""

    etas: Tensor  # (T,) float64, strictly increasing in (0, 1)
    kappa: float
    prediction: str = "residual"  # predicted x_0 = y_0 + output ("residual") or = output ("x0")

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise MRNetError(f"prediction must be one of {PREDICTIONS}, not {self.prediction!r}")
        if not self.kappa > 0:
            raise MRNetError(f"kappa must be positive, not {self.kappa}")
        etas = self.etas
        if etas.ndim != 1 or len(etas) < 1:
            raise MRNetError(f"etas must be a 1-D tensor of at least one step, got shape {tuple(etas.shape)}")
        if not (0 < float(etas[0]) and float(etas[-1]) < 1 and bool((etas[1:] > etas[:-1]).all())):
            raise MRNetError("etas must increase strictly within (0, 1)")

    @property
    def timesteps(self) -> int:
        return len(self.etas)

    @property
    def alphas(self) -> Tensor:
        """alpha_t = eta_t - eta_{t-1}, eta_0 = 0."""
        return torch.diff(self.etas, prepend=self.etas.new_zeros(1))


def default_eta_1(kappa: float) -> float:
    """The paper's eta_1 = min((0.04 / kappa)^2, 0.001): x_1 is x_0 plus noise of std at most 0.04."""
    return min((0.04 / kappa) ** 2, 0.001)


def resshift_schedule(
    T: int = 15,
    kappa: float = 2.0,
    p: float = 0.3,
    eta_1: float | None = None,
    eta_T: float = 0.99,
    prediction: str = "residual",
) -> ResShiftSchedule:
    """The paper's schedule (eqs. 10-11): sqrt(eta_t) = sqrt(eta_1) b_0^{beta_t}, t = 1..T, with

        beta_t = ((t - 1) / (T - 1))^p (T - 1),   b_0 = exp(log(eta_T / eta_1) / (2 (T - 1))),

    so that eta runs geometrically from eta_1 to eta_T when p = 1; p < 1 shifts faster early on.
    eta_1 defaults to the paper's min((0.04 / kappa)^2, 0.001); eta_T near 1 makes x_T close to
    y_0 plus noise. The paper's image SR settings are T = 15, kappa = 2, p = 0.3. T = 1 gives the
    single level eta_T.
    """
    if not isinstance(T, int) or T < 1:
        raise MRNetError(f"T must be a positive integer, not {T!r}")
    if not kappa > 0:
        raise MRNetError(f"kappa must be positive, not {kappa}")
    if not p > 0:
        raise MRNetError(f"p must be positive, not {p}")
    eta_1 = default_eta_1(kappa) if eta_1 is None else eta_1
    if not 0 < eta_1 < eta_T < 1:
        raise MRNetError(f"need 0 < eta_1 < eta_T < 1, got eta_1={eta_1}, eta_T={eta_T}")
    if T == 1:
        return ResShiftSchedule(torch.tensor([eta_T], dtype=torch.float64), float(kappa), prediction)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    beta = ((t - 1) / (T - 1)) ** p * (T - 1)
    log_b0 = math.log(eta_T / eta_1) / (2 * (T - 1))
    sqrt_etas = math.sqrt(eta_1) * torch.exp(beta * log_b0)
    return ResShiftSchedule(sqrt_etas.square(), float(kappa), prediction)


def _per_sample(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] for each sample, shaped (B, 1, ...) to broadcast against `like`, in like's dtype."""
    return values.to(t.device)[t].to(like.dtype).view(-1, *(1,) * (like.ndim - 1))


def _check_t(schedule: ResShiftSchedule, t: Tensor, batch: int) -> None:
    if t.shape != (batch,) or t.dtype not in (torch.int32, torch.int64):
        raise MRNetError(f"t must be an integer tensor of shape ({batch},), got {t.dtype} {tuple(t.shape)}")
    if bool((t < 0).any()) or bool((t >= schedule.timesteps).any()):
        raise MRNetError(f"timesteps must lie in [0, {schedule.timesteps}), got {t.tolist()}")


def _check_pair(x0: Tensor, y0: Tensor, names: str = "x0 and y0") -> None:
    if x0.ndim != 4 or x0.shape != y0.shape:
        raise MRNetError(
            f"{names} must be (B, C, H, W) tensors of one shape, got {tuple(x0.shape)} and {tuple(y0.shape)}"
        )


def q_sample(schedule: ResShiftSchedule, x0: Tensor, y0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = x_0 + eta_t e_0 + kappa sqrt(eta_t) noise, a draw from q(x_t | x_0, y_0) (eq. 2)."""
    _check_pair(x0, y0)
    _check_pair(x0, noise, "x0 and noise")
    _check_t(schedule, t, len(x0))
    eta = _per_sample(schedule.etas, t, x0)
    return x0 + eta * (y0 - x0) + schedule.kappa * eta.sqrt() * noise


def training_target(schedule: ResShiftSchedule, x0: Tensor, y0: Tensor) -> Tensor:
    """What the network learns to output: x_0 - y_0 ("residual") or x_0 ("x0"); either way the loss is on x_0."""
    return x0 - y0 if schedule.prediction == "residual" else x0


def posterior_mean_variance(
    schedule: ResShiftSchedule, x_t: Tensor, x0: Tensor, t: int, s: int | None = None
) -> tuple[Tensor, float]:
    """Mean and variance of q(x_s | x_t, x_0, y_0) for an earlier index s (default t - 1; -1 is the clean image).

    For s = t - 1 this is eq. 6. For any s < t it follows from eq. 2: x_t - x_0 is
    eta e_0 plus kappa times a Brownian motion run for time eta, so
        mean = (eta_s / eta_t) x_t + (1 - eta_s / eta_t) x_0,  variance = kappa^2 eta_s (eta_t - eta_s) / eta_t,
    free of y_0, and exact at eta_s = 0 (mean x_0, variance 0). Samplers with fewer steps than T use it.
    """
    s = t - 1 if s is None else s
    if not -1 <= s < t < schedule.timesteps:
        raise MRNetError(f"need -1 <= s < t < T={schedule.timesteps}, got s={s}, t={t}")
    eta_t = float(schedule.etas[t])
    eta_s = float(schedule.etas[s]) if s >= 0 else 0.0
    ratio = eta_s / eta_t
    return ratio * x_t + (1 - ratio) * x0, schedule.kappa**2 * eta_s * (eta_t - eta_s) / eta_t


def network_inputs(schedule: ResShiftSchedule, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The network's image and time inputs: x_t / sqrt(1 + kappa^2 eta_t) and 1000 eta_t (float, shape (B,))."""
    eta = _per_sample(schedule.etas, t, x_t)
    scaled = x_t / (1 + schedule.kappa**2 * eta).sqrt()
    return scaled, (schedule.etas.to(t.device)[t] * NETWORK_TIME_SCALE).float()


def predict_x0(
    model: Model,
    schedule: ResShiftSchedule,
    x_t: Tensor,
    t: Tensor,
    y0: Tensor,
    extra_args: dict[str, Any] | None = None,
) -> Tensor:
    """f_theta(x_t, y_0, t): the network's estimate of x_0 (y_0 + output, or the output itself)."""
    scaled, time = network_inputs(schedule, x_t, t)
    output = model(scaled, time, **(extra_args or {})).to(x_t.dtype)
    return y0 + output if schedule.prediction == "residual" else output


def resshift_loss(
    model: Model,
    schedule: ResShiftSchedule,
    x0: Tensor,
    y0: Tensor,
    t: Tensor,
    noise: Tensor,
    extra_args: dict[str, Any] | None = None,
    loss: str = "l2",
) -> Tensor:
    """Per-sample loss, shape (B,): mean squared ("l2", eq. 8 unweighted) or absolute ("l1") error of f_theta vs x_0.

    `t` ~ Uniform{0..T-1} (diffusion.sample_timesteps), `noise` ~ N(0, I) shaped like x0.
    """
    if loss not in LOSSES:
        raise MRNetError(f"loss must be one of {LOSSES}, not {loss!r}")
    x_t = q_sample(schedule, x0, y0, t, noise)
    return reconstruction_loss(predict_x0(model, schedule, x_t, t, y0, extra_args), x0, loss)


def _check_sampling(
    schedule: ResShiftSchedule, y0: Tensor, noise: Tensor, steps: int, generators: list[torch.Generator] | None
) -> None:
    if not isinstance(steps, int) or not 1 <= steps <= schedule.timesteps:
        raise MRNetError(f"steps={steps!r} must be an integer between 1 and the schedule's T={schedule.timesteps}")
    _check_pair(y0, noise, "y0 and noise")
    if generators is not None:
        if len(generators) != len(y0):
            raise MRNetError(f"got {len(generators)} generators for a batch of {len(y0)}; give one per image")
        if any(g.device.type != y0.device.type for g in generators):
            raise MRNetError(
                f"generators must be on {y0.device.type}: use samplers.generators_from_seeds(seeds, device)"
            )


def _step_noise(like: Tensor, generators: list[torch.Generator] | None) -> Tensor:
    """N(0, I) shaped like `like`, image i drawn from generators[i] (the global stream without them)."""
    if generators is None:
        return torch.randn_like(like)
    return torch.stack(
        [torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in generators]
    )


@torch.inference_mode()
def sample_resshift(
    model: Model,
    schedule: ResShiftSchedule,
    y0: Tensor,
    noise: Tensor,
    steps: int | None = None,
    extra_args: dict[str, Any] | None = None,
    generators: list[torch.Generator] | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling of p_theta(x_0 | y_0) in `steps` network evaluations (default T); returns x_0 in [-1, 1].

    `noise` (like y0) starts the chain; `generators` (one per image) draw the noise of the
    later steps, so image i depends only on its own generator and noise.
    """
    steps = schedule.timesteps if steps is None else steps
    _check_sampling(schedule, y0, noise, steps, generators)
    indices = trailing_timesteps(schedule.timesteps, steps)
    # 1. start from the prior p(x_T | y_0) = N(y_0, kappa^2 eta_T I)
    x = y0 + schedule.kappa * math.sqrt(float(schedule.etas[-1])) * noise
    for k, t in enumerate(track(indices, desc="resshift", unit="step", enabled=progress)):
        s = indices[k + 1] if k + 1 < len(indices) else -1
        # 2. predict x_0 at (x_t, t)
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        x0_hat = predict_x0(model, schedule, x, t_batch, y0, extra_args)
        # 3. step to x_s through the posterior q(x_s | x_t, x_0 = x0_hat) (eq. 6; no noise at s = -1)
        mean, variance = posterior_mean_variance(schedule, x, x0_hat, t, s)
        x = mean + math.sqrt(variance) * _step_noise(x, generators) if variance > 0 else mean
    return x.clamp(-1, 1)


@torch.inference_mode()
def posterior_mean(
    model: Model,
    schedule: ResShiftSchedule,
    y0: Tensor,
    noise: Tensor,
    steps: int = 1,
    extra_args: dict[str, Any] | None = None,
    generators: list[torch.Generator] | None = None,
) -> Tensor:
    """Estimate of E[x_0 | y_0]: the mean of K draws of `sample_resshift(..., steps)`, K x steps network evaluations.

    `noise` is (K, B, C, H, W), or (B, C, H, W) for K = 1: the starting noise of each draw;
    `generators` (one per image) draw the later steps' noise of all K draws in turn.

    steps = 1 (the default) averages the one-step predictions f_theta(x_T, y_0, T) over x_T =
    y_0 + kappa sqrt(eta_T) noise_k. Trained with the L2 loss, f_theta(x_T, ., T) estimates
    E[x_0 | x_T, y_0], and its average over x_T estimates E[x_0 | y_0] (tower property) with only
    the little spread that x_T's noise adds: the better estimator when f_theta is well trained
    at t = T. With more steps each draw is a posterior sample, so the average carries the whole
    posterior spread and needs more draws, but later steps can correct an f_theta that is still
    poor at t = T, as it can be after a short training.
    (Approximate either way: at training time x_T still holds (1 - eta_T) x_0.)
    """
    draws = noise[None] if noise.ndim == 4 else noise
    if draws.ndim != 5 or draws.shape[1:] != y0.shape:
        raise MRNetError(f"noise must be (K, *y0.shape) or y0's shape {tuple(y0.shape)}, got {tuple(noise.shape)}")
    total = torch.zeros_like(y0)
    for draw in draws:
        total += sample_resshift(model, schedule, y0, draw, steps, extra_args, generators)
    return total / len(draws)


__all__ = [
    "PREDICTIONS",
    "LOSSES",
    "ResShiftSchedule",
    "default_eta_1",
    "resshift_schedule",
    "q_sample",
    "training_target",
    "posterior_mean_variance",
    "network_inputs",
    "predict_x0",
    "resshift_loss",
    "sample_resshift",
    "posterior_mean",
    "ResShift",
]


class ResShift(Process):
    """Residual shifting as a stage's process: `resshift_schedule`, `resshift_loss` and `sample_resshift`."""

    name = "resshift"
    predictions = PREDICTIONS
    samplers = ("resshift",)
    starts_from_input = True
    switch_settings = {"timesteps": 4, "prediction": "residual"}

    @classmethod
    def check_timesteps(cls, timesteps: int) -> None:
        if timesteps < 1:
            raise MRNetError(f"timesteps={timesteps} does not suit process 'resshift' (at least 1)")

    @staticmethod
    def build_schedule(cfg: DiffusionConfig, device: torch.device | str) -> ResShiftSchedule:
        return resshift_schedule(cfg.timesteps, cfg.kappa, cfg.eta_power, prediction=cfg.prediction)

    def loss(self, model: Model, x0: Tensor, t: Tensor, noise: Tensor, extra_args: dict[str, Any],
             y0: Tensor | None) -> Tensor:
        return resshift_loss(model, self.schedule, x0, y0, t, noise, extra_args, self.cfg.loss)

    def sample(self, model: Model, sampler: SamplerChoice, noise: Tensor, extra_args: dict[str, Any],
               generators: list[torch.Generator] | None, y0: Tensor | None, progress: bool = False) -> Tensor:
        return sample_resshift(model, self.schedule, y0, noise, sampler[1], extra_args, generators, progress)

