"""One frozen config type for every stage, and its named presets.

A `StageConfig` says everything needed to rebuild a model and continue its
training: the network (`UNetConfig`), the noise process (`DiffusionConfig`),
super-resolution conditioning (`ConditioningConfig`) and the optimisation
(`TrainConfig`). Checkpoints store `StageConfig.to_dict()`; `StageConfig.from_dict`
rebuilds it with no other input.

Presets are named constructors in one registry (`PRESETS`), as in DiT:
- `smoke`: tiny networks, a few steps; what the tests run, seconds on a CPU.
- `demo`: small networks that learn something in minutes on a 2-core CPU; used by
  `run_all.sh` on the synthetic phantom.
- `paper`: the reference study's settings (../shared/REFERENCE.md), for a GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from mrnet_utils.errors import MRNetError

# The samplers of samplers.py by name (kept here so that configs validate without importing diffusers).
SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp", "dpmpp_sde")

STAGES = ("base64", "sr1", "sr2", "single256")
# Output side length and, for super-resolution stages, the side of the low-res input.
STAGE_RESOLUTION = {"base64": 64, "sr1": 128, "sr2": 256, "single256": 256}
STAGE_LOW_RESOLUTION = {"base64": None, "sr1": 64, "sr2": 128, "single256": None}

# Each stage's default (sampler, steps): the fewest network evaluations whose quality stays within
# the stated margin of the full ancestral chain on trained demo checkpoints (benchmarks/RESULTS.md,
# "Samplers: ..." sections, GPU runs). SR stages: the deterministic DPM-Solver++(2M). Generating
# stages: the deterministic solvers came out smoother than the chain, the stochastic
# SDE-DPM-Solver++(2M) did not: 25 steps for base64 (on the demo network and on one trained 10x
# longer), 100 for single256.
DEFAULT_SAMPLERS = {
    "base64": ("dpmpp_sde", 25),
    "sr1": ("dpmpp", 20),
    "sr2": ("dpmpp", 10),
    "single256": ("dpmpp_sde", 100),
}


@dataclass(frozen=True)
class UNetConfig:
    """The one UNet family used by every stage (see networks.py)."""

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

    @property
    def bottleneck_resolution(self) -> int:
        return self.resolution // 2 ** len(self.channels)

    def validate(self) -> None:
        """Raise MRNetError naming the parameter when the network cannot be built."""
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
    """The forward noise process and the training objective (see diffusion.py)."""

    timesteps: int = 1000
    schedule: str = "linear"  # "linear" (beta_start..beta_end) or "cosine" (Nichol & Dhariwal 2021)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction: str = "epsilon"  # "epsilon" or "v" (Salimans & Ho 2022)
    min_snr_gamma: float = 0.0  # >0: min-SNR-gamma loss weighting (Hang et al. 2023); 0 = plain MSE

    def validate(self) -> None:
        if self.schedule not in ("linear", "cosine"):
            raise MRNetError(f"schedule must be 'linear' or 'cosine', not {self.schedule!r}")
        if self.prediction not in ("epsilon", "v"):
            raise MRNetError(f"prediction must be 'epsilon' or 'v', not {self.prediction!r}")
        if self.timesteps < 2:
            raise MRNetError(f"timesteps must be at least 2, not {self.timesteps}")


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
    """Optimisation, logging and checkpointing (see training.py)."""

    steps: int = 1000
    batch_size: int = 16  # global batch; split across ranks under torchrun
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA
    mixed_precision: bool = True  # bf16 autocast, used on CUDA only
    label_dropout: float = 0.1  # classifier-free guidance: share of labels dropped (label-conditional only)
    log_every: int = 10
    sample_every: int = 0  # 0: a sample grid at the end only
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    on_nonfinite: str = "stop"  # "stop" or "skip" the batch
    seed: int = 0


@dataclass(frozen=True)
class StageConfig:
    stage: str
    preset: str
    unet: UNetConfig
    diffusion: DiffusionConfig
    conditioning: ConditioningConfig
    train: TrainConfig
    sampler: str = "dpmpp"  # default sampler for this stage: one of SAMPLER_NAMES
    sample_steps: int = 25

    @property
    def resolution(self) -> int:
        return self.unet.resolution

    @property
    def low_resolution(self) -> int | None:
        return STAGE_LOW_RESOLUTION[self.stage]

    @property
    def is_super_resolution(self) -> bool:
        return self.low_resolution is not None

    @property
    def name(self) -> str:
        """A run name such as `sr1_swin` or `base64_noswin`."""
        return f"{self.stage}_{'swin' if self.unet.use_swin else 'noswin'}"

    def validate(self) -> "StageConfig":
        if self.stage not in STAGES:
            raise MRNetError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        if self.unet.resolution != STAGE_RESOLUTION[self.stage]:
            raise MRNetError(
                f"stage {self.stage} works at {STAGE_RESOLUTION[self.stage]}x{STAGE_RESOLUTION[self.stage]}, "
                f"not {self.unet.resolution}"
            )
        if self.sampler not in SAMPLER_NAMES:
            raise MRNetError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}, not {self.sampler!r}")
        self.unet.validate()
        self.diffusion.validate()
        return self

    def replace(self, **changes: Any) -> "StageConfig":
        """A copy with changed fields; nested ones as `unet=dict(...)` or `train=dict(...)`."""
        for key in ("unet", "diffusion", "conditioning", "train"):
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings) for checkpoints and logs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageConfig":
        try:
            unet = dict(data["unet"])
            for key in ("channels", "attention_resolutions"):
                unet[key] = tuple(unet[key])
            return cls(
                stage=data["stage"],
                preset=data["preset"],
                unet=UNetConfig(**unet),
                diffusion=DiffusionConfig(**data["diffusion"]),
                conditioning=ConditioningConfig(**data["conditioning"]),
                train=TrainConfig(**data["train"]),
                sampler=data["sampler"],
                sample_steps=data["sample_steps"],
            ).validate()
        except (KeyError, TypeError) as error:
            raise MRNetError(f"stored config is not a StageConfig of this version: {error}") from None


def _smoke(stage: str, use_swin: bool) -> StageConfig:
    super_res = STAGE_LOW_RESOLUTION[stage] is not None
    return StageConfig(
        stage=stage,
        preset="smoke",
        unet=UNetConfig(
            resolution=STAGE_RESOLUTION[stage],
            channels=(8, 16, 16),
            bottleneck_channels=16,
            attention_resolutions=(16,) if stage == "base64" else (),
            use_swin=use_swin,
            swin_heads=2,
            swin_window=4,
            time_embed_dim=16,
            cond_channels=1 if super_res else 0,
            norm_groups=4,
        ),
        diffusion=DiffusionConfig(timesteps=100),
        conditioning=ConditioningConfig(enabled=super_res),
        train=TrainConfig(
            steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9, log_every=2, checkpoint_every=3
        ),
        sampler="dpmpp",
        sample_steps=5,
    )


def _demo(stage: str, use_swin: bool) -> StageConfig:
    super_res = STAGE_LOW_RESOLUTION[stage] is not None
    resolution = STAGE_RESOLUTION[stage]
    # Sized so that all seven models of the study train in about 16 minutes on a 2-core CPU
    # (benchmarks/RESULTS.md): narrower first levels and smaller batches at higher resolution.
    channels = {64: (16, 32, 64), 128: (16, 32, 64), 256: (8, 16, 32)}[resolution]
    batch_size = {64: 16, 128: 8, 256: 4}[resolution]
    steps = {64: 240, 128: 150, 256: 150}[resolution]
    return StageConfig(
        stage=stage,
        preset="demo",
        unet=UNetConfig(
            resolution=resolution,
            channels=channels,
            bottleneck_channels=64,
            # single256 has no 16x16 level; its Swin bottleneck is its only global mixing
            attention_resolutions=(16,) if stage == "base64" else (),
            use_swin=use_swin,
            swin_heads=4,
            swin_window=4,
            time_embed_dim=64,
            cond_channels=1 if super_res else 0,
            norm_groups=8,
        ),
        diffusion=DiffusionConfig(timesteps=1000, schedule="cosine", prediction="v", min_snr_gamma=5.0),
        conditioning=ConditioningConfig(enabled=super_res),
        train=TrainConfig(
            steps=steps,
            batch_size=batch_size,
            lr=1e-3,
            warmup_steps=20,
            ema_decay=0.98,
            log_every=10,
            checkpoint_every=50,
        ),
        sampler=DEFAULT_SAMPLERS[stage][0],
        sample_steps=DEFAULT_SAMPLERS[stage][1],
    )


# The reference trained for 600 epochs (base) and 100-200 epochs (SR stages) at batch 16
# on 7,590 coronal slices (the positives of three tasks x 5 central slices):
# 475 steps per epoch.
_PAPER_STEPS = {"base64": 600 * 475, "sr1": 150 * 475, "sr2": 150 * 475, "single256": 600 * 475}


def _paper(stage: str, use_swin: bool) -> StageConfig:
    super_res = STAGE_LOW_RESOLUTION[stage] is not None
    return StageConfig(
        stage=stage,
        preset="paper",
        unet=UNetConfig(
            resolution=STAGE_RESOLUTION[stage],
            channels=(64, 128, 256),
            bottleneck_channels=512,
            # full-resolution self-attention after every encoder stage, in the base model only
            attention_resolutions=(64, 32, 16) if stage == "base64" else (),
            use_swin=use_swin,
            swin_heads=8,
            swin_window=4,
            swin_depth=1,  # one block, no shift
            time_embed_dim=128,
            cond_channels=1 if super_res else 0,
        ),
        diffusion=DiffusionConfig(
            timesteps=1000 if super_res else 2000, schedule="linear", beta_start=0.00085, beta_end=0.012
        ),
        conditioning=ConditioningConfig(enabled=False),
        train=TrainConfig(
            steps=_PAPER_STEPS[stage],
            batch_size=16,
            lr=1e-4,
            weight_decay=1e-2,
            warmup_steps=0,
            ema_decay=0.0,
            checkpoint_every=5000,
        ),
        sampler="ddpm",
        sample_steps=1000 if super_res else 2000,
    )


PRESETS: dict[str, Callable[[str, bool], StageConfig]] = {"smoke": _smoke, "demo": _demo, "paper": _paper}


def stage_config(stage: str, preset: str = "demo", use_swin: bool = True) -> StageConfig:
    """The named preset for a stage, with or without the Swin bottleneck."""
    if preset not in PRESETS:
        raise MRNetError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if stage not in STAGES:
        raise MRNetError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return PRESETS[preset](stage, use_swin).validate()


__all__ = [
    "STAGES",
    "SAMPLER_NAMES",
    "DEFAULT_SAMPLERS",
    "UNetConfig",
    "DiffusionConfig",
    "ConditioningConfig",
    "TrainConfig",
    "StageConfig",
    "PRESETS",
    "stage_config",
]
