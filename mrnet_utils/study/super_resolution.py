"""The super-resolution experiment: each SR stage and the chain of both on held-out slices, against interpolation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure

from mrnet_utils import pipeline
from mrnet_utils.data.slices import to_unit
from mrnet_utils.evaluation import metrics, plots, tables
from mrnet_utils.stages import CASCADE, STAGES
from mrnet_utils.study.data import HeldOut
from mrnet_utils.study.layout import StudyPaths, study_sampler
from mrnet_utils.study.training import find_run
from mrnet_utils.training import checkpoint


@dataclass(frozen=True)
class Timed:
    images: torch.Tensor  # (N, 1, R, R) in [-1, 1], on the CPU
    seconds_per_image: float


@dataclass(frozen=True)
class SRTask:
    """One super-resolution comparison: the SR stages applied in order, from `low_resolution` to `resolution`."""

    stages: tuple[str, ...]
    low_resolution: int
    resolution: int

    @property
    def model(self) -> str:
        return " + ".join(stage.upper() for stage in self.stages)

    @property
    def title(self) -> str:
        return f"{self.model}: {self.low_resolution} -> {self.resolution}"


def _sr_tasks() -> dict[str, SRTask]:
    """Each SR stage of the cascade alone, then all of them chained, as the cascade runs them."""
    chain = [STAGES[name] for name in CASCADE if STAGES[name].is_super_resolution]
    tasks = {
        f"{spec.name}_{spec.low_resolution}_to_{spec.resolution}": SRTask(
            (spec.name,), spec.low_resolution, spec.resolution
        )
        for spec in chain
    }
    if len(chain) > 1:
        tasks[f"cascade_{chain[0].low_resolution}_to_{chain[-1].resolution}"] = SRTask(
            tuple(spec.name for spec in chain), chain[0].low_resolution, chain[-1].resolution
        )
    return tasks


SR_TASKS = _sr_tasks()  # sr1_64_to_128, sr2_128_to_256, cascade_64_to_256
SR_CHART_METRICS = ("psnr", "ssim", "ms_ssim", "fsim", "lpips", "ag", "vif")
# Average gradient has no better direction: a faithful image has the ground truth's (the table's reference row).
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "fsim": True, "lpips": False, "vif": True}


def super_resolve(
    stage: pipeline.TrainedStage, low_res: torch.Tensor, batch_size: int = 8, progress: bool = True
) -> Timed:
    """Super-resolve each low-res image once (image i with seed i), with the wall time per image."""
    start = time.perf_counter()
    images = pipeline.sample_stage(
        stage.model, stage.config, list(range(len(low_res))), low_res, study_sampler(stage.config),
        batch_size=batch_size, progress=progress,
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

    A chained task feeds each stage's output to the next, as the cascade does; its time
    is the sum of its stages'. A chain reuses the output of its first stage on the same
    input instead of sampling it again.
    """
    loaded = {
        name: checkpoint.load_stage(find_run(paths, name, use_swin), device)
        for name in dict.fromkeys(stage for task in SR_TASKS.values() for stage in task.stages)
    }
    done: dict[tuple[int, tuple[str, ...]], Timed] = {}

    def chain(start: int, stages: tuple[str, ...]) -> Timed:
        if (start, stages) not in done:
            before = chain(start, stages[:-1]) if len(stages) > 1 else Timed(held.at(start), 0.0)
            result = super_resolve(loaded[stages[-1]], before.images, batch_size, progress)
            done[start, stages] = Timed(result.images, before.seconds_per_image + result.seconds_per_image)
        return done[start, stages]

    return {name: chain(task.low_resolution, task.stages) for name, task in SR_TASKS.items()}


def evaluate_sr_task(
    held: HeldOut, outputs: dict[str, dict[str, Timed]], task: str, lpips_weights: dict | None = None
) -> tables.SRScores:
    """tables.evaluate_super_resolution for one of SR_TASKS; `outputs` maps a variant to its super_resolution_outputs."""
    spec = SR_TASKS[task]
    predictions = {f"{spec.model} ({variant})": timed[task].images for variant, timed in outputs.items()}
    timings = {f"{spec.model} ({variant})": timed[task].seconds_per_image for variant, timed in outputs.items()}
    return tables.evaluate_super_resolution(
        held.at(spec.low_resolution), held.at(spec.resolution), predictions, held.exam_ids, held.slice_index,
        lpips_weights, timings,
    )


# What the SR comparisons test: fidelity to the real slice and closeness to its sharpness and spectrum.
COMPARED_METRICS = ("psnr", "ssim", "spectrum_error", "ag_error")
BASELINES = ("lanczos", "bicubic")


def sr_comparisons(scores: tables.SRScores) -> pd.DataFrame:
    """Paired, exam-bootstrapped comparisons: every model against Lanczos and bicubic, and the models
    against each other (e.g. Swin against no Swin), on COMPARED_METRICS."""
    models = [name for name in scores.table.index if name not in (*metrics.INTERPOLATIONS, tables.REFERENCE_ROW)]
    pairs = [(model, baseline) for model in models for baseline in BASELINES]
    pairs += [(a, b) for index, a in enumerate(models) for b in models[index + 1:]]
    return tables.comparison_table([scores.compare(a, b, metric) for a, b in pairs for metric in COMPARED_METRICS])


def sr_candidates(low_res: torch.Tensor, predictions: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Each interpolation baseline of `low_res` at `size`, then the models' predictions: the SR figure's panels."""
    candidates = {method: metrics.interpolate(low_res, size, method) for method in metrics.INTERPOLATIONS}
    return {**candidates, **predictions}


def psnr_scores(candidates: dict[str, torch.Tensor], truth: torch.Tensor) -> dict[str, list[float]]:
    """PSNR (dB, data range 1 on [0, 1]) of every candidate image against its ground truth."""
    return {name: metrics.psnr(to_unit(images), to_unit(truth)).tolist() for name, images in candidates.items()}


def sr_comparison_figure(
    held: HeldOut, outputs: dict[str, dict[str, Timed]], task: str, count: int = 3, zoom_fraction: float = 0.25
) -> Figure:
    """Low-res input | nearest | bilinear | bicubic | Lanczos | each variant | ground truth, PSNR under each panel."""
    spec = SR_TASKS[task]
    low, truth = held.at(spec.low_resolution)[:count], held.at(spec.resolution)[:count]
    predictions = {f"{spec.model} ({variant})": timed[task].images[:count] for variant, timed in outputs.items()}
    candidates = sr_candidates(low, predictions, spec.resolution)
    fig = plots.plot_sr_comparison(
        low, candidates, truth, zoom=plots.centre_zoom(spec.resolution, zoom_fraction), scores=psnr_scores(candidates, truth)
    )
    fig.suptitle(f"{spec.title} on held-out slices (exam / slice {', '.join(_pair_names(held, count))})")
    return fig


def _pair_names(held: HeldOut, count: int) -> list[str]:
    return [f"{exam:04d}/{index}" for exam, index in zip(held.exam_ids[:count], held.slice_index[:count])]
