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
from mrnet_utils.files import check_complete, result_folder, write_atomically
from mrnet_utils.evaluation import metrics, tables
from mrnet_utils.presets import default_sampler
from mrnet_utils.study.data import held_out
from mrnet_utils.study.layout import GENERATORS, Generator, StudyPaths
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

    Each stage samples with its quick default (presets.default_sampler with `quick`: where the preset's time
    cannot hold a chain, a faster sampler not shown equivalent to it), recorded in `samplers`.
    """
    stages = [checkpoint.load_stage(find_run(paths, *run), device) for run in generator.stages]
    samplers = {stage.config.stage: default_sampler(stage.config, quick=True) for stage in stages}
    seeds = list(range(count))
    start = time.perf_counter()
    images = pipeline.sample_cascade(stages, seeds, samplers, batch_size=batch_size, progress=progress)
    record = " + ".join(f"{name} {steps}" for name, steps in samplers.values())
    return Generated(images, (time.perf_counter() - start) / count, seeds, record)


# Arrays of a generator's lower resolutions beside its 256x256 samples: samples_64.npy, samples_128.npy.
GENERATED_FILES = (*pipeline.SAMPLE_FILES, "samples_*.npy")


def save_generated(generated: Generated, folder: str | Path) -> Path:
    """The 256x256 images (pipeline.write_sample_files: PNGs, grid, samples.npy, samples.json holding the seeds,
    the samplers and the sampling time), and each lower resolution a cascade made as samples_<side>.npy, written
    as one set (files.result_folder), replacing an earlier one."""
    timing = {"seconds_per_image": generated.seconds_per_image, "samplers": generated.samplers}
    with result_folder(folder, True, GENERATED_FILES, "samples folder") as out:
        pipeline.write_sample_files(generated.images[SIDE], out, generated.seeds, provenance=timing)
        for side, images in generated.images.items():
            if side != SIDE:
                write_atomically(out / f"samples_{side}.npy", lambda handle, a=images: np.save(handle, a.numpy()),
                                 "sample array")
    return Path(folder)


def _record(folder: Path) -> tuple[dict, list[str]]:
    """The samples.json of a complete samples folder that `save_generated` wrote, and the files it sealed."""
    sealed = check_complete(folder, "samples folder", "generate them again (notebooks/02_pipeline.ipynb)")["files"]
    record = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    if "samplers" not in record:
        raise MRNetError(f"the samples in {folder} were written without their samplers; generate them again")
    return record, list(sealed)


def load_generated(folder: str | Path) -> Generated:
    """What `save_generated` wrote: the images at every resolution (only the arrays the set sealed), their
    sampling time and samplers."""
    folder = Path(folder)
    record, sealed = _record(folder)
    images = {SIDE: torch.from_numpy(np.load(folder / "samples.npy", allow_pickle=False))}
    for name in sealed:
        if name.startswith("samples_") and name.endswith(".npy"):
            images[int(name[len("samples_"):-len(".npy")])] = torch.from_numpy(np.load(folder / name, allow_pickle=False))
    return Generated(images, record["seconds_per_image"], record["seeds"], record["samplers"])


def fid_reference(real: torch.Tensor, train: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """The training split as FID's reference set (tables.evaluate_generation) where the held-out slices are fewer
    than FID needs and the training slices are not, as the reference study computed FID against its training
    images; None (the held-out slices) otherwise."""
    if len(real) < tables.MIN_FID_SAMPLES <= len(train):
        return "training split", train
    return None


def generation_times(paths: StudyPaths) -> pd.DataFrame:
    """Per generator: training seconds over its stages (final checkpoints; a distilled stage's include its rounds
    and the run it learned from, training.distill.lineage_seconds), its samplers, sampling seconds per image."""
    rows = {}
    for generator in GENERATORS:
        seconds = [lineage_seconds(find_run(paths, *run) / FINAL_CHECKPOINT) for run in generator.stages]
        timing, _ = _record(paths.samples(generator))
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
        {name: s.images for name, s in samples.items()}, real.images, real.exam_ids, train, feature_weights,
        fid_reference=fid_reference(real.images, train),
    )
    table["conversion"] = pd.Series({name: s.conversion for name, s in samples.items()})
    return table
