"""One frozen config type for every stage: everything needed to rebuild a model and continue its training.

A `StageConfig` holds the network (`UNetConfig`), the noise process (`DiffusionConfig`),
super-resolution conditioning (`ConditioningConfig`), the optimisation (`TrainConfig`) and how the
low-resolution images it learns from are made (`data.degradation.Degradation`).
Checkpoints store `StageConfig.to_dict()`; `StageConfig.from_dict` rebuilds it with no other
input. What a stage is (its resolution, its input) is the stage table's (`mrnet_utils.stages`);
the named presets that fill these configs are `mrnet_utils.presets`; each process checks its own
settings (`mrnet_utils.diffusion.processes`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from mrnet_utils.data.degradation import Degradation
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.diffusion.schedules import DATA_RANGES
from mrnet_utils.errors import MRNetError
from mrnet_utils.stages import StageSpec, stage_spec

UNET_FAMILIES = ("project", "reference")  # networks.FAMILIES
LR_SCHEDULES = ("warmup", "plateau")
SWIN_TOKEN_ORDERS = ("spatial", "reference")
SECTIONS = ("unet", "diffusion", "conditioning", "train", "degradation")  # the nested configs of a StageConfig


@dataclass(frozen=True)
class UNetConfig:
    """The network of a stage (mrnet_utils/networks/)."""

    resolution: int
    channels: tuple[int, ...] = (64, 128, 256)  # one encoder level each; a 2x downsample after each
    bottleneck_channels: int = 512
    num_res_blocks: int = 1  # residual blocks per level
    attention_resolutions: tuple[int, ...] = ()  # self-attention at these feature-map sides
    use_swin: bool = True  # Swin-transformer blocks in the bottleneck
    swin_heads: int = 8
    swin_window: int = 4
    swin_depth: int = 2  # alternating regular / shifted-window blocks
    time_embed_dim: int = 128  # sinusoidal embedding width; the MLP widens it 4x
    cond_channels: int = 0  # channels of the upsampled low-res condition (SR stages: 1)
    num_labels: int = 0  # >0: embed the MRNet labels (abnormal, acl, meniscus); off by default
    norm_groups: int = 32
    dropout: float = 0.0
    # "project": networks.unet.UNet; "reference": the reference study's networks (networks/reference.py).
    family: str = "project"
    # Swin token order of the reference family: "spatial" (true windows over the feature map) or
    # "reference" (the notebooks' scrambled order, reproduced exactly; see networks/reference.py).
    swin_token_order: str = "spatial"

    @property
    def bottleneck_resolution(self) -> int:
        return self.resolution // 2 ** len(self.channels)

    def validate(self) -> None:
        """Raise MRNetError naming the parameter when the network cannot be built."""
        if self.family not in UNET_FAMILIES:
            raise MRNetError(f"family must be one of {', '.join(UNET_FAMILIES)}, not {self.family!r}")
        if self.swin_token_order not in SWIN_TOKEN_ORDERS:
            raise MRNetError(
                f"swin_token_order must be one of {', '.join(SWIN_TOKEN_ORDERS)}, not {self.swin_token_order!r}"
            )
        if self.swin_token_order == "reference" and self.family != "reference":
            raise MRNetError(
                "swin_token_order='reference' reproduces the reference study's Swin block and exists only in "
                "family='reference'; the project UNet's Swin bottleneck is always spatial"
            )
        levels = len(self.channels)
        if self.resolution % 2**levels:
            raise MRNetError(
                f"resolution {self.resolution} is not divisible by 2**{levels} "
                f"(one halving per entry of channels={self.channels}); use a multiple of {2**levels}"
            )
        level_sides = [self.resolution // 2**level for level in range(levels)]
        for side in self.attention_resolutions:
            if side not in level_sides:
                raise MRNetError(
                    f"attention_resolutions holds {side}, but the encoder levels are {level_sides}; "
                    "self-attention can only sit at one of those sides"
                )
        if self.family == "project":  # the reference family has no group normalisation
            for width in (*self.channels, self.bottleneck_channels):
                if width % self.norm_groups:
                    raise MRNetError(f"channel width {width} is not divisible by norm_groups={self.norm_groups}")
        if self.use_swin:
            side = self.bottleneck_resolution
            if side % self.swin_window:
                raise MRNetError(
                    f"swin_window={self.swin_window} does not divide the {side}x{side} bottleneck "
                    f"(resolution {self.resolution} / 2**{levels}); choose a window that divides {side}"
                )
            if self.bottleneck_channels % self.swin_heads:
                raise MRNetError(
                    f"bottleneck_channels={self.bottleneck_channels} is not divisible by swin_heads={self.swin_heads}"
                )


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise process and the training objective (mrnet_utils/diffusion/processes/)."""

    process: str = "ddpm"  # a name in diffusion.processes.PROCESSES
    timesteps: int = 1000  # T: the chain's length (resshift: a handful; regression: 1)
    schedule: str = "linear"  # "linear" (beta_start..beta_end) or "cosine" (Nichol & Dhariwal 2021)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # ddpm: "epsilon" or "v" (Salimans & Ho 2022); resshift/regression: "residual" (x_0 = y_0 + output,
    # y_0 the upsampled input) or "x0"
    prediction: str = "epsilon"
    min_snr_gamma: float = 0.0  # ddpm: >0: min-SNR-gamma loss weighting (Hang et al. 2023); 0 = plain MSE
    kappa: float = 1.0  # resshift: the chain's noise scale
    eta_power: float = 0.3  # resshift: p of the eta schedule (Yue et al. 2023, eq. 11)
    loss: str = "l2"  # resshift/regression: "l2" or "l1" on x_0
    data_range: str = "symmetric"  # x_0 in [-1, 1], or the reference's [0, 1] (schedules.DATA_RANGES)
    # distilled (processes/distilled.py): the checkpoint it learns from, its DDIM steps, and the first teacher's
    # DDIM steps, whose halvings are the rounds (training.distill)
    teacher: str = ""
    distilled_steps: int = 0
    distilled_from: int = 0

    def validate(self) -> None:
        if self.data_range not in DATA_RANGES:
            raise MRNetError(f"data_range must be one of {', '.join(DATA_RANGES)}, not {self.data_range!r}")
        if self.schedule not in ("linear", "cosine"):
            raise MRNetError(f"schedule must be 'linear' or 'cosine', not {self.schedule!r}")
        if self.loss not in ("l2", "l1"):
            raise MRNetError(f"loss must be 'l2' or 'l1', not {self.loss!r}")
        process_class(self.process).validate(self)


@dataclass(frozen=True)
class ConditioningConfig:
    """Conditioning augmentation for super-resolution stages (Ho et al. 2021, Cascaded Diffusion Models).

    While training, the upsampled low-res condition is noised at a level drawn
    uniformly from [0, max_level] and the level is given to the network; at sampling
    time a fixed `sample_level` is used. `enabled=False` is the reference's setting.
    """

    enabled: bool = True
    max_level: float = 0.5
    sample_level: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpointing (mrnet_utils/training/loop.py)."""

    steps: int = 1000
    epochs: int = 0  # >0: train this many passes over the training slices instead (steps are derived)
    batch_size: int = 16  # global batch; split across ranks under torchrun
    lr: float = 1e-4
    weight_decay: float = 1e-2
    # "warmup": linear warm-up over warmup_steps, then constant; "plateau": ReduceLROnPlateau on the
    # validation loss once per epoch (factor, patience in epochs), as the reference study trained.
    lr_schedule: str = "warmup"
    warmup_steps: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 15
    grad_clip: float = 1.0  # 0: no clipping
    # (low, high): skip a step whose gradient norm lies outside (the reference's rule); () keeps every step
    grad_norm_window: tuple[float, ...] = ()
    ema_decay: float = 0.999  # 0 disables EMA
    mixed_precision: bool = True  # bf16 autocast, used on CUDA only
    label_dropout: float = 0.1  # classifier-free guidance: share of rows, and of each label, dropped (label-conditional only)
    log_every: int = 10
    sample_every: int = 0  # 0: a sample grid at the end only
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    on_nonfinite: str = "stop"  # "stop" or "skip" the batch
    seed: int = 0

    def validate(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise MRNetError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}")
        if self.grad_norm_window and (len(self.grad_norm_window) != 2 or not 0 <= self.grad_norm_window[0] < self.grad_norm_window[1]):
            raise MRNetError(f"grad_norm_window={self.grad_norm_window} must be (low, high) with 0 <= low < high, or ()")


@dataclass(frozen=True)
class StageConfig:
    stage: str  # a row of stages.STAGES
    preset: str  # the preset that made it (presets.PRESETS), which also says how it samples by default
    unet: UNetConfig
    diffusion: DiffusionConfig
    conditioning: ConditioningConfig
    train: TrainConfig
    degradation: Degradation = Degradation()  # the study's: every lower resolution of a slice comes from it

    @property
    def spec(self) -> StageSpec:
        return stage_spec(self.stage)

    @property
    def resolution(self) -> int:
        return self.unet.resolution

    @property
    def low_resolution(self) -> int | None:
        return self.spec.low_resolution

    @property
    def is_super_resolution(self) -> bool:
        return self.spec.is_super_resolution

    @property
    def name(self) -> str:
        """A run name such as `sr1_swin`, `base64_noswin` or `sr1_swin_regression`."""
        return run_name(self.stage, self.unet.use_swin, self.diffusion.process)

    def validate(self) -> "StageConfig":
        spec = stage_spec(self.stage)
        if self.unet.resolution != spec.resolution:
            raise MRNetError(
                f"stage {self.stage} works at {spec.resolution}x{spec.resolution}, not {self.unet.resolution}"
            )
        self.unet.validate()
        self.diffusion.validate()
        self.train.validate()
        self.degradation.validate()
        if process_class(self.diffusion.process).starts_from_input and not self.is_super_resolution:
            raise MRNetError(
                f"process {self.diffusion.process!r} turns a low-res image into a high-res one; stage {self.stage} "
                "generates from noise: use a process that starts from noise, such as 'ddpm'"
            )
        if self.unet.family == "reference" and self.is_super_resolution and self.conditioning.enabled:
            raise MRNetError(
                "unet.family='reference' has no input for the conditioning-augmentation level (the reference "
                "trained its SR stages on clean low-res images); set conditioning.enabled=False"
            )
        return self

    def replace(self, **changes: Any) -> "StageConfig":
        """A copy with changed fields; nested ones as `unet=dict(...)` or `train=dict(...)`."""
        for key in SECTIONS:
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings) for checkpoints and logs."""
        return dataclasses.asdict(self)

    def flat_settings(self) -> dict[str, Any]:
        """Every setting under a dotted name, such as "unet.channels" or "train.lr"."""
        return {
            f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in self.to_dict().items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])
        }

    def with_settings(self, settings: Mapping[str, Any]) -> "StageConfig":
        """A copy with settings changed by dotted name, such as {"train.lr": 1e-4, "unet.channels": (8, 16)};
        values given as text (the command line's --set) are read as the setting's type."""
        known = self.flat_settings()
        changes: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            section, _, field = key.partition(".")
            if section not in SECTIONS or key not in known:
                raise MRNetError(f"unknown setting {key!r}; settings are named like train.lr or unet.channels "
                                 "(docs/presets.md lists them all)", parameter="set")
            kind = typing.get_type_hints(type(getattr(self, section)))[field]
            changes.setdefault(section, {})[field] = _parse(key, value, kind) if isinstance(value, str) else value
        return self.replace(**changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageConfig":
        """Rebuild a stored config; the sampler fields of checkpoints written before 2026-11-30 are ignored
        (a stage's default sampler is its preset's choice, presets.default_sampler)."""
        try:
            unet = dict(data["unet"])
            for key in ("channels", "attention_resolutions"):
                unet[key] = tuple(unet[key])
            train = dict(data["train"])
            train["grad_norm_window"] = tuple(train.get("grad_norm_window", ()))
            return cls(
                stage=data["stage"],
                preset=data["preset"],
                unet=UNetConfig(**unet),
                diffusion=DiffusionConfig(**data["diffusion"]),
                conditioning=ConditioningConfig(**data["conditioning"]),
                train=TrainConfig(**train),
                degradation=Degradation(**data.get("degradation", {})),  # absent before 2026-12-06: "image"
            ).validate()
        except (KeyError, TypeError) as error:
            raise MRNetError(f"stored config is not a StageConfig of this version: {error}") from None


def _parse(key: str, text: str, kind: Any) -> Any:
    """`text` as a value of the setting's type: a number, a word, true/false, or a comma-separated tuple."""
    try:
        if kind in (bool, "bool"):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            return tuple(item(part) for part in text.split(",") if part.strip())
        return kind(text)
    except ValueError:
        raise MRNetError(f"--set {key}={text}: not a value of type {getattr(kind, '__name__', kind)}",
                         parameter="set") from None


def run_name(stage: str, use_swin: bool, process: str | None = None) -> str:
    """The name of a trained variant, such as `sr1_swin`, `base64_noswin` or the baseline `sr1_swin_regression`:
    its run folder and table row. A baseline process (Process.baseline) adds its name."""
    name = f"{stage}_{'swin' if use_swin else 'noswin'}"
    return f"{name}_{process}" if process is not None and process_class(process).baseline else name
