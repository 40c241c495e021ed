"""The study's bookkeeping, for the notebooks that `run_all.sh` renders with papermill.

One output folder holds the whole study (see `StudyPaths`):

    data/phantom/                            the synthetic MRNet folder (when no MRNet path is given)
    data/<preset>/slices_<plane>.npz         the slice cache
    savepoints/<preset>/<stage>_<swin|noswin>/   one training run folder each (training.train)
    savepoints/<preset>/samples/<model>/     generated images and their sampling time
    evaluation/results/<preset>/             tables (CSV + Markdown), figures (PNG), run records (JSON)
    runs/<preset>/                           the executed notebooks (written by run_all.sh)

Only what the notebooks need and no other module does lives here: where things go,
how large a study is per preset, training a stage unless its final checkpoint exists,
reading what training left behind, and timing super-resolution and generation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from mrnet_utils import checkpoint, conditioning, evaluation, metrics, mrnet, phantom, pipeline, plots
from mrnet_utils.config import PRESETS, StageConfig, stage_config
from mrnet_utils.data import SliceDataset, downsample, load_cache
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import UNet
from mrnet_utils.training import FINAL_CHECKPOINT, LOG_FILE, train


@dataclass(frozen=True)
class StudySize:
    """How much data, evaluation and sampling one preset's study uses (the models are in config.py)."""

    phantom_train_exams: int  # exams of the synthetic phantom (ignored with real MRNet)
    phantom_valid_exams: int
    central_slices: int  # slices kept per series, around its centre
    eval_slices: int | None  # held-out slices for super-resolution vs interpolation (None: all)
    samples: int  # generated images per model for the generation table
    batch_size: int  # images per sampling batch


STUDY_SIZES = {
    "smoke": StudySize(4, 2, 2, eval_slices=2, samples=2, batch_size=2),
    # CPU budget: training takes ~16 of the demo's 25 minutes; this leaves ~5 for sampling and metrics.
    "demo": StudySize(48, 12, 5, eval_slices=16, samples=16, batch_size=8),
    "paper": StudySize(80, 20, 5, eval_slices=None, samples=1000, batch_size=32),
}
# The two network variants of every cascade stage: with and without the Swin bottleneck.
VARIANTS = {"Swin": True, "no Swin": False}


@dataclass(frozen=True)
class Generator:
    """A generative model of the study: its stages (stage, use_swin), sampled in this order."""

    label: str  # row name in tables and figures
    folder: str  # folder of its samples
    stages: tuple[tuple[str, bool], ...]


GENERATORS = (
    Generator("cascade (Swin)", "cascade_swin", (("base64", True), ("sr1", True), ("sr2", True))),
    Generator("cascade (no Swin)", "cascade_noswin", (("base64", False), ("sr1", False), ("sr2", False))),
    Generator("single-stage 256", "single256", (("single256", True),)),
)


@dataclass(frozen=True)
class StudyPaths:
    """Where each part of one preset's study lives under `root` (see the module docstring)."""

    root: Path
    preset: str

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise MRNetError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def phantom(self) -> Path:
        return self.root / "data" / "phantom"

    def cache(self, plane: str) -> Path:
        return self.root / "data" / self.preset / f"slices_{plane}.npz"

    def run(self, stage: str, use_swin: bool) -> Path:
        return self.root / "savepoints" / self.preset / f"{stage}_{'swin' if use_swin else 'noswin'}"

    def samples(self, generator: Generator) -> Path:
        return self.root / "savepoints" / self.preset / "samples" / generator.folder

    @property
    def results(self) -> Path:
        return self.root / "evaluation" / "results" / self.preset


def pick_device(requested: str | None = None) -> torch.device:
    """`requested`, else the GPU when there is one."""
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def write_record(path: str | Path, record) -> Path:
    """Write a dataclass or dict as JSON (paths as strings, NaN as null), creating the folder."""
    values = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)
    values = {
        key: str(value) if isinstance(value, Path) else None if isinstance(value, float) and math.isnan(value) else value
        for key, value in values.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def data_source(paths: StudyPaths, mrnet_root: str | Path | None, size: StudySize, progress: bool = True) -> Path:
    """The MRNet folder to read: `mrnet_root` when given, else the synthetic phantom.

    The phantom is written once and reused while it holds the exams `size` asks for;
    it is deterministic, so rewriting it gives the same bytes.
    """
    if mrnet_root is not None:
        return Path(mrnet_root)
    wanted = {"train": size.phantom_train_exams, "valid": size.phantom_valid_exams}
    try:
        found = {split: len(mrnet.read_labels(paths.phantom, split)) for split in mrnet.SPLITS}
    except MRNetError:  # absent, or interrupted before its label files were written
        found = None
    if found != wanted:
        phantom.write_phantom(paths.phantom, wanted["train"], wanted["valid"], progress=progress, overwrite=True)
    return paths.phantom


def plane_examples(root: str | Path, count: int, split: str = "train") -> dict[str, list[np.ndarray]]:
    """The central slice of the first `count` exams of `split`, per plane, as stored (uint8)."""
    examples = {}
    for plane in mrnet.PLANES:
        ids = mrnet.list_exam_ids(root, split, plane)[:count]
        volumes = [mrnet.load_volume(mrnet.volume_path(root, split, plane, exam_id)) for exam_id in ids]
        examples[plane] = [volume[len(volume) // 2] for volume in volumes]
    return examples


def cache_summary(cache_path: str | Path) -> pd.DataFrame:
    """Per split: exams, slices, and the share of slices positive for each MRNet task."""
    cache = load_cache(cache_path)
    rows = {}
    for split in mrnet.SPLITS:
        arrays = cache[split]
        row = {"exams": len(np.unique(arrays["exam_ids"])), "slices": len(arrays["images"])}
        row.update({f"{task}_share": float(arrays["labels"][:, i].mean()) for i, task in enumerate(mrnet.TASKS)})
        rows[split] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "split"
    return table


def _evenly_spaced(total: int, count: int | None) -> np.ndarray:
    """`count` indices spread over range(total) (all when None or more), so that many exams are covered."""
    if count is None or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(int))


def slice_examples(
    cache_path: str | Path, resolution: int, count: int, low_resolution: int | None = None, split: str = "train"
) -> tuple[torch.Tensor, list[str]]:
    """A few slices of the cache at `resolution`, with labels naming exam and slice.

    With `low_resolution` (a super-resolution stage), a first row shows the network's
    condition, the low-res image upsampled back, above the targets.
    """
    dataset = SliceDataset(cache_path, split, resolution)
    index = torch.from_numpy(_evenly_spaced(len(dataset), count))
    targets = dataset.images[index]
    labels = [f"exam {int(dataset.exam_ids[i]):04d} / {int(dataset.slice_index[i])}" for i in index]
    if low_resolution is None:
        return targets, labels
    condition = conditioning.upsample(downsample(targets, low_resolution), resolution)
    return torch.cat([condition, targets]), [f"input {low_resolution}" for _ in index] + labels


@dataclass(frozen=True)
class HeldOut:
    """Valid-split slices at 256 with their exam ids and slice indices: the ground truth of the SR tables.

    Lower resolutions are made as training makes a stage's inputs: 256 -> 128 -> 64, each
    an anti-aliased downsampling of the one above, so that pairs match by exam and slice.
    """

    images: torch.Tensor  # (N, 1, 256, 256) in [-1, 1]
    exam_ids: np.ndarray
    slice_index: np.ndarray

    def at(self, resolution: int) -> torch.Tensor:
        images = self.images
        while images.shape[-1] > resolution:
            images = downsample(images, images.shape[-1] // 2)
        if images.shape[-1] != resolution:
            raise MRNetError(f"resolution {resolution} is not 256 / 2**k; use 64, 128 or 256")
        return images

    def pairs(self) -> pd.DataFrame:
        return pd.DataFrame({"exam_id": self.exam_ids, "slice_index": self.slice_index})


def held_out(cache_path: str | Path, count: int | None) -> HeldOut:
    """`count` valid slices spread over the valid split (None: all of them)."""
    dataset = SliceDataset(cache_path, "valid", 256)
    index = _evenly_spaced(len(dataset), count)
    return HeldOut(dataset.images[index], dataset.exam_ids[index].numpy(), dataset.slice_index[index].numpy())


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def training_config(stage: str, preset: str, use_swin: bool, sample_grids: int) -> StageConfig:
    """The preset's config, writing `sample_grids` sample grids during training besides the final one.

    Grids fall every steps // (sample_grids + 1) + 1 steps: evenly spaced and before the
    last step, whose grid `samples_final.png` is written anyway (runs of fewer than about
    sample_grids**2 steps get fewer grids, or one on the last step).
    """
    cfg = stage_config(stage, preset, use_swin)
    if sample_grids < 0:
        raise MRNetError(f"sample_grids={sample_grids} must be 0 (final grid only) or more")
    every = cfg.train.steps // (sample_grids + 1) + 1 if sample_grids else 0
    return cfg.replace(train={"sample_every": every})


@dataclass(frozen=True)
class StageRun:
    """What `train_stage` did: `trained` is False when the final checkpoint already covered the config's steps."""

    name: str
    run_dir: Path
    trained: bool
    steps: int
    seconds: float  # training wall time of the run, over all its segments
    images_per_second: float  # of this call's training; NaN when it did not train


def train_stage(
    cfg: StageConfig, cache_path: str | Path, run_dir: str | Path, retrain: bool = False, progress: bool = True
) -> StageRun:
    """Train `cfg` into `run_dir`, unless its final checkpoint already holds the config's steps.

    An interrupted run continues from its last checkpoint (training.train with resume).
    `retrain` deletes the run folder first (checkpoints, log, sample grids), so that the
    new run's log and grids are not mixed with the old ones.
    """
    run_dir = Path(run_dir)
    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    final = run_dir / FINAL_CHECKPOINT
    if final.exists():
        payload = checkpoint.load_checkpoint(final)
        if payload["step"] >= cfg.train.steps:
            checkpoint.check_compatible(payload, cfg, path=final)
            print(f"{cfg.name}: {final} holds step {payload['step']}; training skipped (RETRAIN=True retrains)")
            return StageRun(cfg.name, run_dir, False, payload["step"], payload["log"]["seconds"], math.nan)
    result = train(cfg, cache_path, run_dir, resume=True, progress=progress)
    return StageRun(cfg.name, run_dir, True, result.steps, result.seconds, result.images_per_second)


def read_train_log(run_dir: str | Path) -> pd.DataFrame:
    """The run's train_log.csv (columns training.LOG_COLUMNS)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise MRNetError(f"no training log at {path}; train the stage first")
    return pd.read_csv(path)


def read_sample_grids(run_dir: str | Path) -> dict[int, np.ndarray]:
    """The sample grids a run wrote, {step: grey image}: samples_step_*.png and samples_final.png."""
    run_dir = Path(run_dir)
    grids = {
        int(re.fullmatch(r"samples_step_(\d+)", path.stem).group(1)): np.asarray(Image.open(path))
        for path in sorted(run_dir.glob("samples_step_*.png"))
    }
    final = run_dir / "samples_final.png"
    if final.exists():  # written after the last step, which the log always records
        grids[int(read_train_log(run_dir)["step"].iloc[-1])] = np.asarray(Image.open(final))
    if not grids:
        raise MRNetError(f"no sample grids in {run_dir}; train the stage first")
    return grids


def find_run(paths: StudyPaths, stage: str, use_swin: bool) -> Path:
    """The run folder of a trained stage; an error naming how to train it when its final checkpoint is missing."""
    run_dir = paths.run(stage, use_swin)
    if not (run_dir / FINAL_CHECKPOINT).is_file():
        raise MRNetError(
            f"no final checkpoint in {run_dir}; train it first: bash run_all.sh --preset {paths.preset} --only {stage} "
            f"(or notebooks/01_train_stage.ipynb with STAGE={stage!r}, USE_SWIN={use_swin})"
        )
    return run_dir


def trained_runs(paths: StudyPaths) -> dict[str, Path]:
    """{run name: folder} of every run of the preset with a final checkpoint, e.g. 'sr1_swin'."""
    found = sorted((paths.root / "savepoints" / paths.preset).glob(f"*/{FINAL_CHECKPOINT}"))
    return {path.parent.name: path.parent for path in found}


def training_table(paths: StudyPaths) -> pd.DataFrame:
    """One row per trained run: size, steps, training seconds (from the final checkpoint), images/s, last logged loss."""
    rows = {}
    for name, run_dir in trained_runs(paths).items():
        payload = checkpoint.load_checkpoint(run_dir / FINAL_CHECKPOINT)
        cfg = StageConfig.from_dict(payload["config"])
        seconds = payload["log"]["seconds"]
        rows[name] = {
            "parameters": sum(p.numel() for p in UNet(cfg.unet).parameters()),
            "steps": payload["step"],
            "batch_size": cfg.train.batch_size,
            "train_seconds": seconds,
            "images_per_s": payload["step"] * cfg.train.batch_size / seconds,
            "final_loss": float(read_train_log(run_dir)["loss"].iloc[-1]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    return table


# ---------------------------------------------------------------------------
# Super-resolution and generation, timed
# ---------------------------------------------------------------------------


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] to the metrics' [0, 1]."""
    return ((images + 1) / 2).clamp(0, 1)


@dataclass(frozen=True)
class Timed:
    images: torch.Tensor  # (N, 1, R, R) in [-1, 1], on the CPU
    seconds_per_image: float


@dataclass(frozen=True)
class SRTask:
    """One super-resolution comparison: a model's (or chain's) name, its input and output sides."""

    model: str
    low_resolution: int
    resolution: int

    @property
    def title(self) -> str:
        return f"{self.model}: {self.low_resolution} -> {self.resolution}"


SR_TASKS = {
    "sr1_64_to_128": SRTask("SR1", 64, 128),
    "sr2_128_to_256": SRTask("SR2", 128, 256),
    "cascade_64_to_256": SRTask("SR1 + SR2", 64, 256),
}
SR_CHART_METRICS = ("psnr", "ssim", "ms_ssim", "fsim", "lpips", "ag", "vif")
# Average gradient has no better direction: a faithful image has the ground truth's (the table's reference row).
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "fsim": True, "lpips": False, "vif": True}


def super_resolve(stage: pipeline.Stage, low_res: torch.Tensor, batch_size: int = 8, progress: bool = True) -> Timed:
    """Super-resolve each low-res image once (image i with seed i), with the wall time per image."""
    start = time.perf_counter()
    images = pipeline.sample_stage(
        stage.model, stage.config, list(range(len(low_res))), low_res, batch_size=batch_size, progress=progress
    )
    return Timed(images, (time.perf_counter() - start) / len(low_res))


def super_resolution_outputs(
    paths: StudyPaths,
    held: HeldOut,
    use_swin: bool,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Timed]:
    """The SR stages of one variant on the held-out slices, for each of SR_TASKS.

    The chained 64 -> 256 task feeds SR1's output on the 64x64 inputs to SR2, as the
    cascade does; its time is the sum of both.
    """
    sr1, sr2 = (pipeline.load_stage(find_run(paths, stage, use_swin), device) for stage in ("sr1", "sr2"))
    first = super_resolve(sr1, held.at(64), batch_size, progress)
    second = super_resolve(sr2, held.at(128), batch_size, progress)
    chained = super_resolve(sr2, first.images, batch_size, progress)
    return {
        "sr1_64_to_128": first,
        "sr2_128_to_256": second,
        "cascade_64_to_256": Timed(chained.images, first.seconds_per_image + chained.seconds_per_image),
    }


def evaluate_sr_task(
    held: HeldOut, outputs: dict[str, dict[str, Timed]], task: str, lpips_weights: str | Path | None = None
) -> pd.DataFrame:
    """evaluation.evaluate_super_resolution for one of SR_TASKS; `outputs` maps a variant to its super_resolution_outputs."""
    spec = SR_TASKS[task]
    predictions = {f"{spec.model} ({variant})": timed[task].images for variant, timed in outputs.items()}
    timings = {f"{spec.model} ({variant})": timed[task].seconds_per_image for variant, timed in outputs.items()}
    return evaluation.evaluate_super_resolution(
        held.at(spec.low_resolution), held.at(spec.resolution), predictions, lpips_weights, timings
    )


def sr_candidates(low_res: torch.Tensor, predictions: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Each interpolation baseline of `low_res` at `size`, then the models' predictions: the SR figure's panels."""
    candidates = {method: metrics.interpolate(low_res, size, method) for method in metrics.INTERPOLATIONS}
    return {**candidates, **predictions}


def psnr_scores(candidates: dict[str, torch.Tensor], truth: torch.Tensor) -> dict[str, list[float]]:
    """PSNR (dB, data range 1 on [0, 1]) of every candidate image against its ground truth."""
    return {name: metrics.psnr(_unit(images), _unit(truth)).tolist() for name, images in candidates.items()}


def centre_zoom(side: int, fraction: float = 0.25) -> tuple[int, int, int]:
    """(y0, x0, size) of a centred square `fraction` of the side wide: the joint, in these images."""
    size = max(1, round(side * fraction))
    return (side - size) // 2, (side - size) // 2, size


def sr_comparison_figure(
    held: HeldOut, outputs: dict[str, dict[str, Timed]], task: str, count: int = 3, zoom_fraction: float = 0.25
) -> Figure:
    """Low-res input | nearest | bilinear | bicubic | Lanczos | each variant | ground truth, PSNR under each panel."""
    spec = SR_TASKS[task]
    low, truth = held.at(spec.low_resolution)[:count], held.at(spec.resolution)[:count]
    predictions = {f"{spec.model} ({variant})": timed[task].images[:count] for variant, timed in outputs.items()}
    candidates = sr_candidates(low, predictions, spec.resolution)
    fig = plots.plot_sr_comparison(
        low, candidates, truth, zoom=centre_zoom(spec.resolution, zoom_fraction), scores=psnr_scores(candidates, truth)
    )
    fig.suptitle(f"{spec.title} on held-out slices (exam / slice {', '.join(_pair_names(held, count))})")
    return fig


def _pair_names(held: HeldOut, count: int) -> list[str]:
    return [f"{exam:04d}/{index}" for exam, index in zip(held.exam_ids[:count], held.slice_index[:count])]


@dataclass(frozen=True)
class Generated:
    images: dict[int, torch.Tensor]  # {resolution: (N, 1, R, R)}; a cascade gives 64, 128 and 256
    seconds_per_image: float  # wall time of the whole pipeline per 256x256 image
    seeds: list[int]
    samplers: str  # how each stage sampled, in order, e.g. "ddpm 250 + dpmpp 20 + dpmpp 20"


def generate(
    paths: StudyPaths,
    generator: Generator,
    count: int,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Generated:
    """`count` images (seeds 0..count-1) from a generator's trained stages, timed end to end.

    Each stage samples with the sampler its checkpoint's config names (config.DEFAULT_SAMPLERS
    when it was trained), recorded in `samplers`.
    """
    stages = [pipeline.load_stage(find_run(paths, stage, use_swin), device) for stage, use_swin in generator.stages]
    samplers = " + ".join(f"{stage.config.sampler} {stage.config.sample_steps}" for stage in stages)
    seeds = list(range(count))
    start = time.perf_counter()
    if len(stages) == 3:
        images = pipeline.sample_cascade(*stages, seeds, batch_size=batch_size, progress=progress)
    else:
        (stage,) = stages
        images = {256: pipeline.sample_stage(stage.model, stage.config, seeds, batch_size=batch_size, progress=progress)}
    return Generated(images, (time.perf_counter() - start) / count, seeds, samplers)


TIMING_FILE = "timing.json"


def save_generated(generated: Generated, folder: str | Path) -> Path:
    """The 256x256 images (pipeline.write_samples: PNGs, grid, samples.npy), their sampling time and samplers."""
    folder = pipeline.write_samples(generated.images[256], folder, generated.seeds)
    record = {"seconds_per_image": generated.seconds_per_image, "seeds": generated.seeds, "samplers": generated.samplers}
    write_record(folder / TIMING_FILE, record)
    return folder


def _timing(folder: Path) -> dict:
    if not (folder / TIMING_FILE).is_file():
        raise MRNetError(f"no generated samples in {folder}; run notebooks/02_pipeline.ipynb first")
    timing = json.loads((folder / TIMING_FILE).read_text())
    if "samplers" not in timing:
        raise MRNetError(
            f"the samples in {folder} were written before their samplers were recorded; "
            "rerun notebooks/02_pipeline.ipynb (bash run_all.sh --only pipeline,evaluation)"
        )
    return timing


def load_generated(folder: str | Path) -> Generated:
    """What `save_generated` wrote: the 256x256 images, their sampling time and samplers."""
    folder = Path(folder)
    timing = _timing(folder)
    images = torch.from_numpy(np.load(folder / "samples.npy", allow_pickle=False))
    return Generated({256: images}, timing["seconds_per_image"], timing["seeds"], timing["samplers"])


def generation_times(paths: StudyPaths) -> pd.DataFrame:
    """Per generator: training seconds over its stages (final checkpoints), its samplers, sampling seconds per image."""
    rows = {}
    for generator in GENERATORS:
        seconds = [
            checkpoint.load_checkpoint(find_run(paths, stage, use_swin) / FINAL_CHECKPOINT)["log"]["seconds"]
            for stage, use_swin in generator.stages
        ]
        timing = _timing(paths.samples(generator))
        rows[generator.label] = {
            "train_seconds": sum(seconds),
            "samplers": timing["samplers"],
            "sample_seconds_per_image": timing["seconds_per_image"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


GENERATION_CHART = {
    "fid": "FID",
    "kid_mean": "KID",
    "is_mean": "IS",
    "diversity_ms_ssim": "diversity MS-SSIM",
    "histogram_w1": "histogram W1",
    "spectrum_distance": "spectrum distance",
    "nearest_train_correlation": "nearest-train correlation",
}


def generation_chart(table: pd.DataFrame) -> Figure:
    """Bars of the generation table's metrics for each model ("not computed" where weights were missing)."""
    models = table.drop(index=evaluation.REAL_ROW, errors="ignore")
    values = models[list(GENERATION_CHART)].rename(columns=lambda column: f"{GENERATION_CHART[column]}_mean")
    directions = {"FID": False, "KID": False, "IS": True, "histogram W1": False, "spectrum distance": False}
    return plots.plot_metric_bars(values, list(GENERATION_CHART.values()), directions, title="Generation (models only; the table holds the real slices' values)")


def memorisation_examples(samples: torch.Tensor, train_images: torch.Tensor, count: int = 6) -> tuple[torch.Tensor, list[str]]:
    """The first `count` samples (top row) above their most correlated training slice, labelled with the correlation."""
    nearest = metrics.memorisation(_unit(samples[:count]), _unit(train_images))
    labels = [f"sample {i}" for i in range(len(nearest.correlation))]
    labels += [f"train #{int(j)}, r={float(r):.3f}" for j, r in zip(nearest.nearest_index, nearest.correlation)]
    return torch.cat([samples[:count], train_images[nearest.nearest_index]]), labels
