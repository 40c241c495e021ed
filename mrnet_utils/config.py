"""One frozen config type for every stage, and its named presets.

A `StageConfig` says everything needed to rebuild a model and continue its
training: the network (`UNetConfig`), the noise process (`DiffusionConfig`),
super-resolution conditioning (`ConditioningConfig`) and the optimisation
(`TrainConfig`). Checkpoints store `StageConfig.to_dict()`; `StageConfig.from_dict`
rebuilds it with no other input. What a stage is (its resolution, its input, its
default sampler) is the stage table's (`mrnet_utils.stages`), not the config's.

Presets are named constructors in one registry (`PRESETS`), as in DiT; each also says
how large a study it runs (`StudySettings`):
- `smoke`: tiny networks, a few steps; what the tests run, seconds on a CPU.
- `demo`: small networks that learn something in minutes on a 2-core CPU; used by
  `run_all.sh` on the synthetic phantom.
- `reference`: the reference study's experiment as its notebooks ran it (../shared/REFERENCE.md), for a GPU.
- `gpu`: the project's recipe on a budget of epochs: 1-2 hours for the whole study on one GPU on MRNet.
- `full`: the project's recipe at the reference study's scale, for a GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from mrnet_utils.errors import MRNetError
from mrnet_utils.stages import BASELINE_PROCESS, StageSpec, run_name, stage_spec

UNET_FAMILIES = ("project", "reference")  # networks.FAMILIES
DATA_RANGES = ("symmetric", "unit")
PROCESSES = ("ddpm", "resshift", "regression")
LR_SCHEDULES = ("warmup", "plateau")
SWIN_TOKEN_ORDERS = ("spatial", "reference")


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
    """The noise process and the training objective (diffusion/processes.py)."""

    # "ddpm": Ho et al. 2020 (SR stages conditioned as in SR3); "resshift": residual shifting (Yue et al.
    # 2023), super-resolution only; "regression": no noise, one forward pass (the learned SR baseline).
    process: str = "ddpm"
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
    # The range of x_0 in the noise process: "symmetric" [-1, 1] (the project's), or "unit" [0, 1]
    # (the reference study's ToTensor images; at a given abar_t the signal is half as strong).
    data_range: str = "symmetric"

    def validate(self) -> None:
        if self.process not in PROCESSES:
            raise MRNetError(f"process must be one of {', '.join(PROCESSES)}, not {self.process!r}")
        if self.data_range not in DATA_RANGES:
            raise MRNetError(f"data_range must be one of {', '.join(DATA_RANGES)}, not {self.data_range!r}")
        if self.schedule not in ("linear", "cosine"):
            raise MRNetError(f"schedule must be 'linear' or 'cosine', not {self.schedule!r}")
        predictions = ("epsilon", "v") if self.process == "ddpm" else ("residual", "x0")
        if self.prediction not in predictions:
            raise MRNetError(
                f"prediction must be one of {', '.join(predictions)} for process {self.process!r}, not {self.prediction!r}"
            )
        shortest = {"ddpm": 2, "resshift": 1, "regression": 1}[self.process]
        if self.timesteps < shortest or (self.process == "regression" and self.timesteps != 1):
            raise MRNetError(f"timesteps={self.timesteps} does not suit process {self.process!r} "
                             f"({'exactly 1' if self.process == 'regression' else f'at least {shortest}'})")
        if self.process != "ddpm" and self.data_range != "symmetric":
            raise MRNetError(f"process {self.process!r} works in the project's [-1, 1] (data_range='symmetric')")
        if self.loss not in ("l2", "l1"):
            raise MRNetError(f"loss must be 'l2' or 'l1', not {self.loss!r}")


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
    preset: str
    unet: UNetConfig
    diffusion: DiffusionConfig
    conditioning: ConditioningConfig
    train: TrainConfig

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
        if self.diffusion.process != "ddpm" and not self.is_super_resolution:
            raise MRNetError(
                f"process {self.diffusion.process!r} turns a low-res image into a high-res one; stage {self.stage} "
                "generates from noise: use process 'ddpm'"
            )
        if self.unet.family == "reference" and self.is_super_resolution and self.conditioning.enabled:
            raise MRNetError(
                "unet.family='reference' has no input for the conditioning-augmentation level (the reference "
                "trained its SR stages on clean low-res images); set conditioning.enabled=False"
            )
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

    def flat_settings(self) -> dict[str, Any]:
        """Every setting under a dotted name, such as "unet.channels" or "train.lr"."""
        return {
            f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in self.to_dict().items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageConfig":
        """Rebuild a stored config; the sampler fields of checkpoints written before 2026-11-30 are ignored
        (a stage's sampler is now the stage table's default, unless the caller names one)."""
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
            ).validate()
        except (KeyError, TypeError) as error:
            raise MRNetError(f"stored config is not a StageConfig of this version: {error}") from None


@dataclass(frozen=True)
class StudySettings:
    """Which data, and how much data, evaluation and sampling a preset's study uses."""

    phantom_train_exams: int  # exams of the synthetic phantom (ignored with real MRNet)
    phantom_valid_exams: int
    central_slices: int | None  # slices kept per series, around its centre (None: all)
    eval_slices: int | None  # held-out slices for super-resolution vs interpolation (None: all)
    samples: int  # generated images per model for the generation table
    batch_size: int  # images per sampling batch
    tuning_exams: int = 0  # valid exams set aside for tuning (benchmarks/bench_samplers.py), never reported
    selection: str = "all"  # exams kept (data.preprocess.SELECTIONS): all, one task's positives, or their union
    normalisation: str = "series"  # data.preprocess.NORMALISATIONS: per series (percentiles) or per slice (min-max)
    label_samples: int = 32  # the label study: guided samples per request and guidance scale
    probe_steps: int = 300  # the label study: training steps of each label probe


@dataclass(frozen=True)
class Preset:
    """A named preset: the config of every stage, and the size of the study run with it."""

    stage: Callable[[StageSpec, bool], StageConfig]  # (stage, use_swin) -> its config
    study: StudySettings
    # How the preset's ddpm stages sample unless a caller names a sampler (diffusion.processes.default_sampler):
    # None, each stage's default (stages.STAGES); else (sampler name, steps), no steps meaning all T steps.
    sampler: tuple[str, int | None] | None = None


def _project_process(spec: StageSpec, generating: DiffusionConfig) -> DiffusionConfig:
    """The project's noise process for a stage: `generating` for stages that generate from noise, and
    for super-resolution stages residual shifting in 4 steps (Yue et al. 2023; README, "Super-resolution")."""
    if not spec.is_super_resolution:
        return generating
    return DiffusionConfig(process="resshift", timesteps=4, prediction="residual", kappa=1.0, eta_power=0.3)


def _smoke(spec: StageSpec, use_swin: bool) -> StageConfig:
    return StageConfig(
        stage=spec.name,
        preset="smoke",
        unet=UNetConfig(
            resolution=spec.resolution,
            channels=(8, 16, 16),
            bottleneck_channels=16,
            attention_resolutions=(16,) if spec.self_attention else (),
            use_swin=use_swin,
            swin_heads=2,
            swin_window=4,
            time_embed_dim=16,
            cond_channels=1 if spec.is_super_resolution else 0,
            norm_groups=4,
        ),
        diffusion=_project_process(spec, DiffusionConfig(timesteps=100)),
        conditioning=ConditioningConfig(enabled=spec.is_super_resolution),
        train=TrainConfig(
            steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9, log_every=2, checkpoint_every=3
        ),
    )


def _demo(spec: StageSpec, use_swin: bool) -> StageConfig:
    resolution = spec.resolution
    # Sized for a laptop-class CPU (timings in README, "Results"): narrower first levels and
    # smaller batches at higher resolution.
    return StageConfig(
        stage=spec.name,
        preset="demo",
        unet=UNetConfig(
            resolution=resolution,
            channels=(16, 32, 64) if resolution <= 128 else (8, 16, 32),
            bottleneck_channels=64,
            # single256 has no 16x16 level; its Swin bottleneck is its only global mixing
            attention_resolutions=(16,) if spec.self_attention else (),
            use_swin=use_swin,
            swin_heads=4,
            swin_window=4,
            time_embed_dim=64,
            cond_channels=1 if spec.is_super_resolution else 0,
            norm_groups=8,
        ),
        diffusion=_project_process(
            spec, DiffusionConfig(timesteps=1000, schedule="cosine", prediction="v", min_snr_gamma=5.0)
        ),
        conditioning=ConditioningConfig(enabled=spec.is_super_resolution),
        train=TrainConfig(
            steps=240 if resolution <= 64 else 150,
            batch_size=max(16 * 64 // resolution, 2),  # 16 at 64x64, 8 at 128x128, 4 at 256x256
            lr=1e-3,
            warmup_steps=20,
            ema_decay=0.98,
            log_every=10,
            checkpoint_every=50,
        ),
    )


# An epoch of the reference's data: 7,590 coronal slices (the positives of three tasks x 5 central
# slices) at batch 16.
_REFERENCE_STEPS_PER_EPOCH = 475


def _full(spec: StageSpec, use_swin: bool) -> StageConfig:
    """The project's recipe at the reference's scale: the demo's choices on the reference's network widths."""
    return StageConfig(
        stage=spec.name,
        preset="full",
        unet=UNetConfig(
            resolution=spec.resolution,
            channels=(64, 128, 256),
            bottleneck_channels=512,
            attention_resolutions=(32, 16) if spec.self_attention else (),
            use_swin=use_swin,
            swin_heads=8,
            swin_window=4,
            swin_depth=2,
            time_embed_dim=128,
            cond_channels=1 if spec.is_super_resolution else 0,
        ),
        diffusion=_project_process(
            spec, DiffusionConfig(timesteps=1000, schedule="cosine", prediction="v", min_snr_gamma=5.0)
        ),
        conditioning=ConditioningConfig(enabled=spec.is_super_resolution),
        train=TrainConfig(
            steps=spec.full_epochs * _REFERENCE_STEPS_PER_EPOCH,
            batch_size=16,
            lr=1e-4,
            weight_decay=1e-2,
            warmup_steps=1000,
            ema_decay=0.9999,
            checkpoint_every=5000,
        ),
    )


# The `gpu` preset trains each stage for a thirtieth of the `full` preset's epochs, counted over the
# study's own training slices, so that its budget follows the data: minutes on the phantom or the real
# sample, 1-2 hours for the whole study on full MRNet on one A100-class GPU. The estimate, from the
# training throughput measured on an H200 for these networks (benchmarks/RESULTS.md, "GPU check: NVIDIA
# H200", bf16, batch 16, eager: 403.5 / 436.5 / 148.6 / 166.8 images/s for base64 / sr1 / sr2 /
# single256), on MRNet's 1,130 training exams x 5 central coronal slices = 5,650 slices = 354 steps of
# 16 per epoch:
#   base64     20 epochs = 7,080 steps = 113,280 images: 281 s; x 2 runs (Swin, no Swin)      =  562 s
#   sr1         5 epochs = 1,770 steps =  28,320 images:  65 s; x 3 (Swin, no Swin, baseline) =  195 s
#   sr2         5 epochs = 1,770 steps =  28,320 images: 191 s; x 3                           =  572 s
#   single256  20 epochs = 7,080 steps = 113,280 images: 679 s; x 1                           =  679 s
#   all nine runs: 2,007 s = 33 min on the H200.
# An A100 has a third of the H200's bf16 peak (312 against 989 TFLOP/s) and two fifths of its memory
# bandwidth (2.0 against 4.8 TB/s); taking it 2-3x slower on these batch-16 runs (not measured), the
# study trains in 67-100 min. The phantom (80 training exams: 400 slices, 25 steps per epoch) takes
# 142 s on the H200 by the same arithmetic, the 10 real sample exams with every slice (268 slices) 96 s.
_GPU_EPOCH_FRACTION = 30
_MRNET_TRAIN_SLICES = 1130 * 5  # MRNet's training exams x the study's central coronal slices


def _gpu(spec: StageSpec, use_swin: bool) -> StageConfig:
    """The `full` recipe on a budget of epochs that trains the whole study in 1-2 GPU hours on MRNet."""
    full = _full(spec, use_swin)
    epochs = max(spec.full_epochs // _GPU_EPOCH_FRACTION, 1)
    return dataclasses.replace(
        full,
        preset="gpu",
        train=dataclasses.replace(
            full.train,
            epochs=epochs,
            # What the epochs make on MRNet; on other data, training counts them over its slices.
            steps=epochs * -(-_MRNET_TRAIN_SLICES // full.train.batch_size),
            # A short warm-up and an EMA with a half-life of 69 steps (1,100 images): the shortest run on
            # MRNet (SR, 1,770 steps) averages over its last few percent, and the 125-step SR runs on the
            # phantom keep about a quarter of their initial weights in the EMA (0.99**125 = 0.28).
            warmup_steps=50,
            ema_decay=0.99,
            checkpoint_every=1000,  # at most 1,000 steps lost to a preemption: 40-110 s on the H200
        ),
    )


# The reference study's runs, from its notebooks (REFERENCE.md; notebook and cell for each value in
# README, "Presets"): (stage, use_swin) -> (epochs, learning rate, ReduceLROnPlateau patience in epochs).
# Ambiguous ones: SR1 with Swin ran in resumed sessions (50 -> 200 epochs, the LR restarting at each);
# SR2 with Swin: the pipeline loads an epoch-225 checkpoint of a T = 1000 run that is not in the
# repository (the run shown used T = 2000 and lr 5e-5); base 64 without Swin resumed at epoch 110.
_REFERENCE_RUNS = {
    ("base64", True): (600, 1e-4, 15),
    ("base64", False): (400, 1e-4, 15),
    ("sr1", True): (200, 1e-4, 10),
    ("sr1", False): (100, 1e-4, 10),
    ("sr2", True): (225, 5e-5, 15),
    ("sr2", False): (100, 1e-5, 10),
    ("single256", True): (200, 1e-4, 15),
    ("single256", False): (200, 1e-4, 15),  # no such run in the notebooks; the Swin run's settings
}


def _reference(spec: StageSpec, use_swin: bool) -> StageConfig:
    """The reference study's experiment as its notebooks ran it (README, "Presets", lists every setting)."""
    if (spec.name, use_swin) not in _REFERENCE_RUNS:
        raise MRNetError(f"the reference study has no run of stage {spec.name}; the reference preset cannot build it")
    epochs, lr, patience = _REFERENCE_RUNS[spec.name, use_swin]
    sides = [spec.resolution // 2**level for level in range(3)]
    return StageConfig(
        stage=spec.name,
        preset="reference",
        unet=UNetConfig(
            resolution=spec.resolution,
            channels=(64, 128, 256),
            bottleneck_channels=512,
            attention_resolutions=tuple(sides) if spec.self_attention else (),
            use_swin=use_swin,
            swin_heads=8,
            swin_window=4,
            swin_depth=1,
            time_embed_dim=128,
            cond_channels=1 if spec.is_super_resolution else 0,
            family="reference",
            swin_token_order="reference",
        ),
        diffusion=DiffusionConfig(
            timesteps=spec.reference_steps, schedule="linear", beta_start=0.00085, beta_end=0.012, data_range="unit"
        ),
        conditioning=ConditioningConfig(enabled=False),
        train=TrainConfig(
            epochs=epochs,
            batch_size=16,
            lr=lr,
            weight_decay=1e-2,
            lr_schedule="plateau",
            plateau_factor=0.5,
            plateau_patience=patience,
            grad_clip=0.0,
            grad_norm_window=(1e-3, 1e3),
            ema_decay=0.0,
            mixed_precision=False,
            checkpoint_every=5000,
        ),
    )


PRESETS: dict[str, Preset] = {
    # The SDE solver of the generating stages' defaults, in a few steps: sampling at 256x256 stays cheap.
    "smoke": Preset(_smoke, StudySettings(4, 2, 2, eval_slices=2, samples=2, batch_size=2, label_samples=2,
                                           probe_steps=2), sampler=("dpmpp_sde", 5)),
    # Small enough that sampling and metrics take a few minutes of the CPU study (README, "Results").
    "demo": Preset(_demo, StudySettings(48, 12, 5, eval_slices=None, samples=16, batch_size=8, tuning_exams=6)),
    # The project's recipe on a budget: the whole study in 1-2 hours on one A100-class GPU on MRNet (_gpu).
    "gpu": Preset(_gpu, StudySettings(80, 20, 5, eval_slices=None, samples=1000, batch_size=32, tuning_exams=10)),
    # For a GPU and real MRNet: the project's recipe at the reference's scale.
    "full": Preset(_full, StudySettings(80, 20, 5, eval_slices=None, samples=1000, batch_size=32, tuning_exams=10)),
    # The reference's data: the positives of each task (exams repeated across tasks), 5 central slices,
    # each slice min-max scaled; its sampler: the ancestral chain with variance beta_t over all T steps.
    "reference": Preset(
        _reference,
        StudySettings(80, 20, 5, eval_slices=None, samples=1000, batch_size=32, tuning_exams=10,
                      selection="positives", normalisation="slice"),
        sampler=("ddpm_large", None),
    ),
}


def preset(name: str) -> Preset:
    """The preset called `name`, or an error listing them."""
    if name not in PRESETS:
        raise MRNetError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}", parameter="preset")
    return PRESETS[name]


def stage_config(
    stage: str, preset_name: str = "demo", use_swin: bool = True, process: str | None = None
) -> StageConfig:
    """The named preset for a stage, with or without the Swin bottleneck; `process="regression"` gives the
    learned baseline of a super-resolution stage: its network, data, conditioning and training budget,
    trained without noise to predict the residual over the upsampled input."""
    cfg = preset(preset_name).stage(stage_spec(stage), use_swin).validate()
    if process is None or process == cfg.diffusion.process:
        return cfg
    if process != BASELINE_PROCESS:
        raise MRNetError(f"process={process!r}: a stage's process is its preset's, or {BASELINE_PROCESS!r} for the baseline")
    return cfg.replace(diffusion={"process": process, "timesteps": 1, "prediction": "residual"})
