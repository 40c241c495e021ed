"""The named presets, as data: each builds every stage's config, says how each stage samples by default,
and how large a study it runs (docs/presets.md lists every setting side by side).

- `smoke`: tiny networks, a few steps; what the tests run, seconds on a CPU.
- `demo`: small networks that learn something in minutes on a 2-core CPU; `run_all.sh`'s default.
- `full`: the project's recipe at the reference study's scale, for a GPU.
- `gpu`: the `full` recipe on a thirtieth of its epochs, for one GPU.
- `reference`: the reference study's experiment as its notebooks ran it (../shared/REFERENCE.md, docs/reference.md).

A preset is one `Preset`: settings shared by its stages, then per-stage settings by dotted name. The
project's presets are built from one shared base (`_PROJECT`) by `dataclasses.replace`, as DiT names its
variants in one registry. A new stage in `stages.STAGES` gets each preset's shared settings; a new preset
is one more entry in `PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from mrnet_utils.config import ConditioningConfig, DiffusionConfig, StageConfig, TrainConfig, UNetConfig
from mrnet_utils.diffusion.processes import SamplerChoice, process_class
from mrnet_utils.errors import MRNetError
from mrnet_utils.stages import StageSpec, stage_spec


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
    swin_seeds: int = 3  # the Swin question: training seeds per arm (0, 1, ...)


Settings = Mapping[str, Any]  # dotted setting name ("unet.channels", "train.lr") -> value


@dataclass(frozen=True)
class Preset:
    """A named preset: every stage's config, how each stage samples, and the size of the study run with it."""

    name: str
    network: Settings  # UNetConfig settings of every stage (resolution, use_swin and cond_channels come per stage)
    generating: DiffusionConfig  # the process of the stages that generate from noise
    super_resolution: DiffusionConfig  # the process of the super-resolution stages
    conditioning: ConditioningConfig  # of the super-resolution stages (generating stages take no condition)
    train: TrainConfig
    study: StudySettings
    stages: Mapping[str, Settings] = field(default_factory=dict)  # per stage, over the shared settings
    # Per (stage, use_swin), over the per-stage settings; when given, the preset builds only these runs.
    runs: Mapping[tuple[str, bool], Settings] = field(default_factory=dict)
    # Per (stage, process): the settings of a stage switched to another process (`stage_config`'s `process`)
    # over the stage's own, such as the rounds and budget of its distilled generator.
    switched: Mapping[tuple[str, str], Settings] = field(default_factory=dict)
    # Per stage: (sampler, steps) it samples with unless the caller names one, where its process takes that
    # sampler (steps None: all T); elsewhere the process's own full chain (presets.default_sampler). Only a
    # sampler shown equivalent to that chain on this preset's checkpoints belongs here
    # (benchmarks/bench_samplers.py), so that a default carries its verdict (the smoke preset, which claims
    # nothing, excepted).
    samplers: Mapping[str, tuple[str, int | None]] = field(default_factory=dict)
    # Per stage: a faster sampler for where time counts for more than a claim about the images: the grids that
    # watch training, and the study's own samples where the preset's time cannot hold the chain. Not shown
    # equivalent to the chain; every table made from such samples names its samplers.
    quick_samplers: Mapping[str, tuple[str, int | None]] = field(default_factory=dict)

    def stage_config(self, spec: StageSpec, use_swin: bool) -> StageConfig:
        """The config of stage `spec`, with or without the Swin bottleneck."""
        if self.runs and (spec.name, use_swin) not in self.runs:
            raise MRNetError(f"the {self.name} preset has no run of stage {spec.name} "
                             f"{'with' if use_swin else 'without'} Swin; it cannot build it")
        super_resolution = spec.is_super_resolution
        cfg = StageConfig(
            stage=spec.name,
            preset=self.name,
            unet=UNetConfig(resolution=spec.resolution, use_swin=use_swin, cond_channels=int(super_resolution),
                            **self.network),
            diffusion=self.super_resolution if super_resolution else self.generating,
            conditioning=replace(self.conditioning, enabled=self.conditioning.enabled and super_resolution),
            train=self.train,
        )
        return cfg.with_settings({**self.stages.get(spec.name, {}), **self.runs.get((spec.name, use_swin), {})})


# The project's recipe: v-prediction on a cosine schedule with min-SNR weighting for the generating stages,
# ResShift in 4 steps for the super-resolution stages (Yue et al. 2023), conditioning augmentation, EMA.
_PROJECT = Preset(
    name="project",
    network=dict(channels=(64, 128, 256), bottleneck_channels=512, swin_heads=8, swin_window=4, time_embed_dim=128),
    generating=DiffusionConfig(timesteps=1000, schedule="cosine", prediction="v", min_snr_gamma=5.0),
    super_resolution=DiffusionConfig(process="resshift", timesteps=4, prediction="residual", kappa=1.0, eta_power=0.3),
    conditioning=ConditioningConfig(),
    train=TrainConfig(),
    # 10,000 samples per model, the size Heusel et al. (2017) recommend for FID; FID compares them with the training
    # split's slices where the held-out ones are fewer than its 2048 features (MRNet's valid split: 600 central).
    study=StudySettings(phantom_train_exams=80, phantom_valid_exams=20, central_slices=5, eval_slices=None,
                        samples=10_000, batch_size=32, tuning_exams=10),
    # No sampler has a verdict on these presets' checkpoints: every stage defaults to its chain. The generating
    # stages' quick samplers, the stochastic SDE-DPM-Solver++(2M) chosen on point estimates, keep the training
    # grids and the studies' thousands of samples affordable; on the demo checkpoints neither was shown
    # equivalent to the chain (benchmarks/RESULTS.md, "Samplers: base64_swin, demo checkpoints, CPU" and single256).
    quick_samplers={"base64": ("dpmpp_sde", 25), "single256": ("dpmpp_sde", 100)},
    # Progressive distillation of the generating stages to 4 DDIM steps, from their network's 256 (six rounds),
    # each round a twentieth of the teacher's steps at its learning rate (a budget, not a tuned one).
    switched={(stage, "distilled"): {"diffusion.distilled_from": 256, "diffusion.distilled_steps": 4,
                                     "train.steps": 20_000} for stage in ("base64", "single256")},
)

SMOKE = replace(
    _PROJECT,
    name="smoke",
    network=dict(channels=(8, 16, 16), bottleneck_channels=16, swin_heads=2, swin_window=4, time_embed_dim=16,
                 norm_groups=4),
    generating=DiffusionConfig(timesteps=100),
    train=TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9, log_every=2, checkpoint_every=3),
    stages={"base64": {"unet.attention_resolutions": (16,)}},
    study=StudySettings(phantom_train_exams=4, phantom_valid_exams=2, central_slices=2, eval_slices=2, samples=2,
                        batch_size=2, label_samples=2, probe_steps=2, swin_seeds=2),
    # The tests' preset: its images are noise and carry no claim, so its generating stages default to 5 steps
    # (their 100-step chains would take the tests' time at 256x256).
    samplers={"base64": ("dpmpp_sde", 5), "single256": ("dpmpp_sde", 5)},
    quick_samplers={},  # the defaults are quick already
    switched={(stage, "distilled"): {"diffusion.distilled_from": 8, "diffusion.distilled_steps": 2}
              for stage in ("base64", "single256")},
)

# Small enough for a laptop-class CPU: narrower levels and smaller batches at higher resolution.
DEMO = replace(
    _PROJECT,
    name="demo",
    network=dict(channels=(16, 32, 64), bottleneck_channels=64, swin_heads=4, swin_window=4, time_embed_dim=64,
                 norm_groups=8),
    train=TrainConfig(steps=150, batch_size=16, lr=1e-3, warmup_steps=20, ema_decay=0.98, log_every=10,
                      checkpoint_every=50),
    stages={
        "base64": {"unet.attention_resolutions": (16,), "train.steps": 240},
        "sr1": {"train.batch_size": 8},
        "sr2": {"unet.channels": (8, 16, 32), "train.batch_size": 4},
        # single256 has no 16x16 level: its Swin bottleneck is its only global mixing. Its steps give it the
        # training compute of the cascade's three stages (study.training.training_flops; docs/presets.md), so
        # that the generation table compares the two at equal FLOPs.
        "single256": {"unet.channels": (8, 16, 32), "train.batch_size": 4, "train.steps": 580},
    },
    study=StudySettings(phantom_train_exams=48, phantom_valid_exams=12, central_slices=5, eval_slices=None,
                        samples=16, batch_size=8, tuning_exams=6),
    # The SR stages: ResShift's 4-step chain respaced to 3 steps, shown equivalent to it on the demo checkpoints
    # (benchmarks/RESULTS.md, "Samplers: sr1_swin, demo checkpoints, CPU" and sr2). The generating stages' 1000-step
    # chains do not fit the demo study's 30 minutes (their cost: benchmarks/efficiency_demo_swin_cpu2.csv): it
    # samples them with the quick samplers (docs/results.md, "Which sampler").
    samplers={"sr1": ("resshift", 3), "sr2": ("resshift", 3)},
    # Three rounds from 32 DDIM steps to 4, each a third of base64's steps: what fits the demo study's time.
    switched={("base64", "distilled"): {"diffusion.distilled_from": 32, "diffusion.distilled_steps": 4,
                                        "train.steps": 80, "train.lr": 3e-4, "train.warmup_steps": 10,
                                        "train.ema_decay": 0.9, "train.checkpoint_every": 40}},
)


_REFERENCE_STEPS_PER_EPOCH = 475


def _reference_epochs(epochs: int) -> Settings:
    """Training steps of `epochs` passes over the reference's data: 7,590 coronal slices (the positives of
    three tasks x 5 central slices) at batch 16, 475 steps an epoch."""
    return {"train.steps": epochs * _REFERENCE_STEPS_PER_EPOCH}


FULL = replace(
    _PROJECT,
    name="full",
    train=TrainConfig(batch_size=16, lr=1e-4, weight_decay=1e-2, warmup_steps=1000, ema_decay=0.9999,
                      checkpoint_every=5000),
    stages={
        "base64": {"unet.attention_resolutions": (32, 16), **_reference_epochs(600)},
        "sr1": _reference_epochs(150),
        "sr2": _reference_epochs(150),
        "single256": _reference_epochs(600),
    },
)

# A thirtieth of `full`'s epochs, counted over the study's own training slices (training.loop.steps_for_epochs),
# so that the budget follows the data; `train.steps` is what they make on MRNet's 1,130 training exams x 5
# central slices at batch 16 (354 steps an epoch). docs/presets.md works out the GPU time from measured throughput.
_GPU_EPOCHS = {stage: settings["train.steps"] // _REFERENCE_STEPS_PER_EPOCH // 30 for stage, settings in FULL.stages.items()}
_MRNET_STEPS_PER_EPOCH = -(-1130 * 5 // 16)

GPU = replace(
    FULL,
    name="gpu",
    # A short warm-up and an EMA half-life of 69 steps: the shortest runs average over their last steps.
    train=replace(FULL.train, warmup_steps=50, ema_decay=0.99, checkpoint_every=1000),
    study=replace(FULL.study, samples=2048),  # the fewest with which FID is computed at all (its feature width)
    stages={stage: {**FULL.stages[stage], "train.epochs": epochs, "train.steps": epochs * _MRNET_STEPS_PER_EPOCH}
            for stage, epochs in _GPU_EPOCHS.items()},
    switched={run: {**settings, "train.epochs": 0, "train.steps": 1000} for run, settings in FULL.switched.items()},
)

# The reference study's runs, from its notebooks (docs/reference.md gives the notebook and cell of each value):
# epochs, learning rate and ReduceLROnPlateau patience (in epochs) of each (stage, use_swin). Ambiguous ones:
# SR1 with Swin ran in resumed sessions (50 -> 200 epochs, the LR restarting at each); SR2 with Swin: the
# pipeline loads an epoch-225 checkpoint of a T = 1000 run that is not in the repository (the run shown used
# T = 2000 and lr 5e-5); base 64 without Swin resumed at epoch 110; single256 without Swin has no run in the
# notebooks and takes the Swin run's settings.
_REFERENCE_RUNS = {
    ("base64", True): (600, 1e-4, 15),
    ("base64", False): (400, 1e-4, 15),
    ("sr1", True): (200, 1e-4, 10),
    ("sr1", False): (100, 1e-4, 10),
    ("sr2", True): (225, 5e-5, 15),
    ("sr2", False): (100, 1e-5, 10),
    ("single256", True): (200, 1e-4, 15),
    ("single256", False): (200, 1e-4, 15),
}

REFERENCE = Preset(
    name="reference",
    network=dict(channels=(64, 128, 256), bottleneck_channels=512, swin_heads=8, swin_window=4, swin_depth=1,
                 time_embed_dim=128, family="reference", swin_token_order="reference"),
    generating=DiffusionConfig(timesteps=2000, schedule="linear", beta_start=0.00085, beta_end=0.012, data_range="unit"),
    super_resolution=DiffusionConfig(timesteps=1000, schedule="linear", beta_start=0.00085, beta_end=0.012,
                                     data_range="unit"),
    conditioning=ConditioningConfig(enabled=False),
    train=TrainConfig(batch_size=16, weight_decay=1e-2, lr_schedule="plateau", plateau_factor=0.5, grad_clip=0.0,
                      grad_norm_window=(1e-3, 1e3), ema_decay=0.0, mixed_precision=False, checkpoint_every=5000),
    stages={"base64": {"unet.attention_resolutions": (64, 32, 16)}},  # self-attention at every level
    runs={run: {"train.epochs": epochs, "train.lr": lr, "train.plateau_patience": patience}
          for run, (epochs, lr, patience) in _REFERENCE_RUNS.items()},
    # Its data: the positives of each task (exams repeated across tasks), 5 central slices, each slice min-max scaled.
    # 2048 samples: FID's least, since its ancestral chain of 2000 + 1000 + 1000 steps makes each sample costly.
    study=replace(_PROJECT.study, selection="positives", normalisation="slice", samples=2048),
    # Its sampler: the ancestral chain with variance beta_t over all T steps.
    samplers={stage: ("ddpm_large", None) for stage, _ in _REFERENCE_RUNS},
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (SMOKE, DEMO, GPU, FULL, REFERENCE)}


def preset(name: str) -> Preset:
    """The preset called `name`, or an error listing them."""
    if name not in PRESETS:
        raise MRNetError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}", parameter="preset")
    return PRESETS[name]


def stage_config(
    stage: str, preset_name: str = "demo", use_swin: bool = True, process: str | None = None
) -> StageConfig:
    """The named preset's config for a stage, with or without the Swin bottleneck; `process` switches the
    stage to another process (Process.switch_settings), such as "regression" for the learned baseline of a
    super-resolution stage: its network, data, conditioning and training budget, trained without noise, or
    "distilled" for a generating stage's few-step generator, with the preset's settings for the switch
    (`Preset.switched`)."""
    cfg = preset(preset_name).stage_config(stage_spec(stage), use_swin)
    if process is None or process == cfg.diffusion.process:
        return cfg
    switch = {f"diffusion.{key}": value for key, value in process_class(process).switch_settings.items()}
    return cfg.with_settings({"diffusion.process": process, **switch,
                              **preset(preset_name).switched.get((stage, process), {})})


def default_sampler(cfg: StageConfig, quick: bool = False) -> SamplerChoice:
    """The sampler a stage uses wherever the caller names none: its preset's choice for the stage
    (`Preset.samplers`, each shown equivalent to the chain) where the stage's process takes that sampler, else
    the process's own chain over all T steps. `quick` (training grids, the study's own samples) takes the
    preset's `quick_samplers` first, which carry no such claim. The one place a default sampler is decided."""
    process = process_class(cfg.diffusion.process)
    spec, tables = PRESETS.get(cfg.preset), []
    if spec is not None:  # a config whose preset is no longer registered: its process's chain
        tables = [spec.quick_samplers, spec.samplers] if quick else [spec.samplers]
    for table in tables:
        chosen = table.get(cfg.stage)
        if chosen is not None and chosen[0] in process.samplers:
            name, steps = chosen
            return name, steps or cfg.diffusion.timesteps
    return process.default_sampler(cfg.diffusion)
