"""The super-resolution experiment: each SR stage and the chain of both on held-out slices, against interpolation."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure

from mrnet_utils import pipeline
from mrnet_utils.data.slices import to_unit
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import endpoints, metrics, plots, tables
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.stages import CASCADE, STAGES
from mrnet_utils.study.data import HeldOut
from mrnet_utils.study.layout import SR_MODELS, SRModel, StudyPaths
from mrnet_utils.study.training import find_run
from mrnet_utils.training import checkpoint


@dataclass(frozen=True)
class Timed:
    images: torch.Tensor  # (N, 1, R, R) in [-1, 1], on the CPU
    seconds_per_image: float
    evaluations: int  # network evaluations per image, as counted


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
# The SR chart: fidelity, then closeness to the real slice's spectrum, then sharpness (average gradient),
# which has no better direction: a faithful image has the ground truth's (the table's reference row).
SR_CHART_METRICS = ("psnr", "ssim", "ms_ssim", "fsim", "vif", "lpips", "spectrum_error", "ag")


def metric_figure(scores: tables.SRScores, task: str) -> Figure:
    """The SR chart of one task: each method's mean and 95% interval per metric, sharpness against the real slices'."""
    table = scores.table
    return plots.plot_metric_intervals(
        table.drop(index=tables.REFERENCE_ROW), SR_CHART_METRICS, tables.SR_HIGHER_IS_BETTER,
        targets={"ag": float(table.loc[tables.REFERENCE_ROW, "ag_mean"])}, target_label="the real slices' value",
        title=SR_TASKS[task].title,
    )


# The two outputs of a diffusion SR stage: one draw, and the mean of `draws` draws (an estimate of
# the posterior mean E[x_0 | low-res], the output to hold against interpolation for fidelity).
# The regression baseline has one output.
OUTPUT_KINDS = ("sample", "mean")
MEAN_DRAWS = 4  # draws averaged for the mean: 4 times a sample's network evaluations


def super_resolve(
    stage: pipeline.TrainedStage, low_res: torch.Tensor, batch_size: int = 8, progress: bool = True, draws: int = 1
) -> Timed:
    """Super-resolve each low-res image (image i with seed i), the mean of `draws` draws, with the wall time
    and the network evaluations per image (the network's calls counted, over the batches)."""
    calls = []
    counter = stage.model.register_forward_pre_hook(lambda *_: calls.append(1))
    start = time.perf_counter()
    try:
        images = pipeline.sample_stage(
            stage.model, stage.config, list(range(len(low_res))), low_res,
            batch_size=batch_size, progress=progress, draws=draws,
        )
    finally:
        counter.remove()
    batches = math.ceil(len(low_res) / batch_size)
    return Timed(images, (time.perf_counter() - start) / len(low_res), len(calls) // batches)


def output_kinds(model: SRModel) -> dict[str, int]:
    """{kind: draws}: a diffusion stage's sample and posterior-mean outputs, or the baseline's one output."""
    if model.process is not None and process_class(model.process).deterministic:
        return {"output": 1}
    return {"sample": 1, "mean": MEAN_DRAWS}


def row_name(task: str, model: SRModel, kind: str) -> str:
    """A table row: "SR1 (Swin), sample", "SR1 + SR2 (no Swin), mean", "SR1 (regression)"."""
    return f"{SR_TASKS[task].model} ({model.label})" + ("" if kind == "output" else f", {kind}")


def super_resolution_outputs(
    paths: StudyPaths,
    held: HeldOut,
    model: SRModel,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, dict[str, Timed]]:
    """{task: {kind: output}}: the SR stages of one model on the held-out slices, for each of SR_TASKS.

    A chained task feeds each stage's output to the next, as the cascade does (samples to a
    sample, means to a mean); its time and network evaluations are the sums of its stages'. A
    chain reuses the output of its first stage on the same input instead of sampling it again.
    """
    loaded = {}
    for name in dict.fromkeys(stage for task in SR_TASKS.values() for stage in task.stages):
        loaded[name] = checkpoint.load_stage(find_run(paths, name, model.use_swin, model.process), device)
        check_degradation(loaded[name], held)
    done: dict[tuple[int, tuple[str, ...], int], Timed] = {}

    def chain(start: int, stages: tuple[str, ...], draws: int) -> Timed:
        if (start, stages, draws) not in done:
            before = chain(start, stages[:-1], draws) if len(stages) > 1 else Timed(held.at(start), 0.0, 0)
            result = super_resolve(loaded[stages[-1]], before.images, batch_size, progress, draws)
            done[start, stages, draws] = Timed(result.images, before.seconds_per_image + result.seconds_per_image,
                                               before.evaluations + result.evaluations)
        return done[start, stages, draws]

    return {
        name: {kind: chain(task.low_resolution, task.stages, draws) for kind, draws in output_kinds(model).items()}
        for name, task in SR_TASKS.items()
    }


def check_degradation(stage: pipeline.TrainedStage, held: HeldOut) -> None:
    """Refuse to score a stage on low-res inputs made otherwise than those it learned from."""
    if stage.config.degradation != held.degradation:
        raise MRNetError(
            f"{stage.path} was trained on low-res images made by degradation {stage.config.degradation.describe()!r}, "
            f"but the study evaluates {held.degradation.describe()!r}; train it with the study's degradation "
            "(run_all.sh --degradation, in its own --out folder)", parameter="degradation")


def evaluate_sr_task(
    held: HeldOut, outputs: dict[SRModel, dict[str, dict[str, Timed]]], task: str, lpips_weights: dict | None = None
) -> tables.SRScores:
    """tables.evaluate_super_resolution for one of SR_TASKS; `outputs` maps each model to its super_resolution_outputs."""
    spec = SR_TASKS[task]
    results = {row_name(task, model, kind): timed for model, by_task in outputs.items()
               for kind, timed in by_task[task].items()}
    scores = tables.evaluate_super_resolution(
        held.at(spec.low_resolution), held.at(spec.resolution), {name: r.images for name, r in results.items()},
        held.exam_ids, held.slice_index, lpips_weights, {name: r.seconds_per_image for name, r in results.items()},
        evaluations={name: r.evaluations for name, r in results.items()},
    )
    scores.table["degradation"] = held.degradation.describe()  # how every low-res input of the table was made
    return scores


# What the SR comparisons test: fidelity to the real slice and closeness to its sharpness and spectrum.
COMPARED_METRICS = ("psnr", "ssim", "spectrum_error", "ag_error")
BASELINES = ("lanczos", "bicubic")


def _row(task: str, label: str, kind: str) -> str:
    """The table row of an SR model's output (by its label) or of an interpolation (by its name)."""
    if label in metrics.INTERPOLATIONS:
        return label
    model = next(model for model in SR_MODELS if model.label == label)
    return row_name(task, model, kind if kind in output_kinds(model) else "output")


def primary_rows(task: str) -> set[tuple[str, str, str]]:
    """The (A, B, metric) rows of `task`'s comparisons that are primary endpoints (endpoints.SR_ENDPOINTS)."""
    return {(_row(task, e.model, e.output), _row(task, e.baseline, "output"), e.metric)
            for e in endpoints.SR_ENDPOINTS if e.task == task}


def sr_comparisons(scores: dict[str, tables.SRScores]) -> dict[str, pd.DataFrame]:
    """Per task: paired comparisons on COMPARED_METRICS (tables.comparison_table): every model output
    against Lanczos and bicubic, Swin against no Swin for each output, and each diffusion output against
    the regression baseline, with the network evaluations per image of A and B (`nfe_a`, `nfe_b`).

    The primary endpoints (endpoints.SR_ENDPOINTS) of all the tasks given form one family, Holm-adjusted
    together; every other row is exploratory."""
    swin, no_swin, regression = SR_MODELS
    keyed, comparisons = [], []
    for task, task_scores in scores.items():
        rows = set(task_scores.table.index)
        outputs = [row_name(task, model, kind) for model in SR_MODELS for kind in output_kinds(model)]
        pairs = [(row, baseline) for row in outputs for baseline in BASELINES]
        for kind in OUTPUT_KINDS:
            pairs.append((row_name(task, swin, kind), row_name(task, no_swin, kind)))
            pairs += [(row_name(task, model, kind), row_name(task, regression, "output")) for model in (swin, no_swin)]
        for a, b in pairs:
            if a in rows and b in rows:
                keyed += [(task, a, b, metric) for metric in COMPARED_METRICS]
                comparisons += [task_scores.compare(a, b, metric) for metric in COMPARED_METRICS]
    primary = {(task, *row) for task in scores for row in primary_rows(task)}
    table = tables.comparison_table(comparisons, primary=[key in primary for key in keyed])
    table.insert(0, "task", [task for task, *_ in keyed])
    result = {}
    for task, task_scores in scores.items():
        part = table[table["task"] == task].drop(columns="task")
        nfe = task_scores.table["nfe"]
        part.insert(part.columns.get_loc("exams"), "nfe_a", nfe.reindex(part.index.get_level_values("a")).to_numpy())
        part.insert(part.columns.get_loc("exams"), "nfe_b", nfe.reindex(part.index.get_level_values("b")).to_numpy())
        result[task] = part
    return result


def sr_candidates(low_res: torch.Tensor, predictions: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Each interpolation baseline of `low_res` at `size`, then the models' predictions: the SR figure's panels."""
    candidates = {method: metrics.interpolate(low_res, size, method) for method in metrics.INTERPOLATIONS}
    return {**candidates, **predictions}


def psnr_scores(candidates: dict[str, torch.Tensor], truth: torch.Tensor) -> dict[str, list[float]]:
    """PSNR (dB, data range 1 on [0, 1]) of every candidate image against its ground truth."""
    return {name: metrics.psnr(to_unit(images), to_unit(truth)).tolist() for name, images in candidates.items()}


def sr_comparison_figure(
    held: HeldOut, outputs: dict[SRModel, dict[str, dict[str, Timed]]], task: str, count: int = 3,
    zoom_fraction: float = 0.25,
) -> Figure:
    """Low-res input | nearest | bilinear | bicubic | Lanczos | each model output | ground truth, PSNR under each panel."""
    spec = SR_TASKS[task]
    low, truth = held.at(spec.low_resolution)[:count], held.at(spec.resolution)[:count]
    predictions = {row_name(task, model, kind): timed.images[:count]
                   for model, by_task in outputs.items() for kind, timed in by_task[task].items()}
    candidates = sr_candidates(low, predictions, spec.resolution)
    fig = plots.plot_sr_comparison(
        low, candidates, truth, zoom=plots.centre_zoom(spec.resolution, zoom_fraction), scores=psnr_scores(candidates, truth)
    )
    fig.suptitle(f"{spec.title} on held-out slices (exam / slice {', '.join(_pair_names(held, count))})")
    return fig


def _pair_names(held: HeldOut, count: int) -> list[str]:
    return [f"{exam:04d}/{index}" for exam, index in zip(held.exam_ids[:count], held.slice_index[:count])]
