"""The generation experiment: samples from each generator of the study, timed, written and read back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet_utils import pipeline
from mrnet_utils.data.samples import SIDE, Samples
from mrnet_utils.data.slices import SliceDataset, to_unit
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics, tables
from mrnet_utils.presets import default_sampler
from mrnet_utils.study.data import held_out
from mrnet_utils.study.layout import (
    GENERATORS,
    Generator,
    StudyPaths,
    write_record,
)
from mrnet_utils.study.training import find_run
from mrnet_utils.training import checkpoint
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT
from mrnet_utils.training.distill import lineage_seconds


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

    Each stage samples with its default (presets.default_sampler), recorded in `samplers`.
    """
    stages = [checkpoint.load_stage(find_run(paths, *run), device) for run in generator.stages]
    samplers = {stage.config.stage: default_sampler(stage.config) for stage in stages}
    seeds = list(range(count))
    start = time.perf_counter()
    images = pipeline.sample_cascade(stages, seeds, samplers, batch_size=batch_size, progress=progress)
    record = " + ".join(f"{name} {steps}" for name, steps in samplers.values())
    return Generated(images, (time.perf_counter() - start) / count, seeds, record)


TIMING_FILE = "timing.json"


def save_generated(generated: Generated, folder: str | Path) -> Path:
    """The 256x256 images (pipeline.write_samples: PNGs, grid, samples.npy), their sampling time and samplers."""
    folder = pipeline.write_samples(generated.images[256], folder, generated.seeds, overwrite=True)
    record = {"seconds_per_image": generated.seconds_per_image, "seeds": generated.seeds, "samplers": generated.samplers}
    write_record(folder / TIMING_FILE, record)
    return folder


def _timing(folder: Path) -> dict:
    if not (folder / TIMING_FILE).is_file():
        raise MRNetError(
            f"no generated samples in {folder}; generate them first (save_generated, which notebooks/02_pipeline.ipynb runs)"
        )
    timing = json.loads((folder / TIMING_FILE).read_text())
    if "samplers" not in timing:
        raise MRNetError(
            f"the samples in {folder} were written before their samplers were recorded; generate them again"
        )
    return timing


def load_generated(folder: str | Path) -> Generated:
    """What `save_generated` wrote: the 256x256 images, their sampling time and samplers."""
    folder = Path(folder)
    timing = _timing(folder)
    images = torch.from_numpy(np.load(folder / "samples.npy", allow_pickle=False))
    return Generated({256: images}, timing["seconds_per_image"], timing["seeds"], timing["samplers"])


def generation_times(paths: StudyPaths) -> pd.DataFrame:
    """Per generator: training seconds over its stages (final checkpoints; a distilled stage's include its rounds
    and the run it learned from, training.distill.lineage_seconds), its samplers, sampling seconds per image."""
    rows = {}
    for generator in GENERATORS:
        seconds = [lineage_seconds(find_run(paths, *run) / FINAL_CHECKPOINT) for run in generator.stages]
        timing = _timing(paths.samples(generator))
        rows[generator.label] = {
            "train_seconds": sum(seconds),
            "samplers": timing["samplers"],
            "sample_seconds_per_image": timing["seconds_per_image"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def memorisation_examples(samples: torch.Tensor, train_images: torch.Tensor, count: int = 6) -> tuple[torch.Tensor, list[str]]:
    """The first `count` samples (top row) above their most correlated training slice, labelled with the correlation."""
    nearest = metrics.memorisation(to_unit(samples[:count]), to_unit(train_images))
    labels = [f"sample {i}" for i in range(len(nearest.correlation))]
    labels += [f"train #{int(j)}, r={float(r):.3f}" for j, r in zip(nearest.nearest_index, nearest.correlation)]
    return torch.cat([samples[:count], train_images[nearest.nearest_index]]), labels


def score_samples(
    samples: dict[str, Samples], cache_path: str | Path, train_cache: str | Path | None = None,
    tuning_exams: int = 0, feature_weights: str | Path | None = None,
) -> pd.DataFrame:
    """The generation table for each named set of samples, against the real held-out slices of `cache_path`
    (its valid exams less `tuning_exams`), memorisation against the train slices of `train_cache`
    (default: the same cache). A `conversion` column says how each set was read."""
    real = held_out(cache_path, None, tuning=tuning_exams)
    train = SliceDataset(train_cache or cache_path, "train", SIDE).images
    table = tables.evaluate_generation(
        {name: s.images for name, s in samples.items()}, real.images, real.exam_ids, train, feature_weights
    )
    table["conversion"] = pd.Series({name: s.conversion for name, s in samples.items()})
    return table
