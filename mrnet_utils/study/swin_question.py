"""Does Swin help? The SR stages trained in four arms, several training seeds each, at one budget.

The reference study credits its Swin bottleneck, but its Swin block attends over windows that
are not spatial windows of the feature map (networks/reference.py). This experiment asks the
question at equal budget, on the same data, process and recipe (the preset's SR stages with
conditioning augmentation off, since the reference networks take no augmentation level):

- "ref, ref Swin": the reference's network with its own token order;
- "ref, spatial Swin": the same network with true windowed attention over the feature map;
- "ref, no Swin": the same network without the Swin block;
- "project": the project's UNet with its Swin bottleneck.

Each arm is trained with several seeds (initial weights, data order, noise), and the answer treats
both the training seeds and the exams as random (statistics.seeds_and_exams): an interval for the
architecture's effect that holds for another seed and other exams, with a verdict of "better",
"equivalent within" the margin of evaluation.endpoints, or "inconclusive". These comparisons are
exploratory: the study's primary endpoints are its SR comparisons with interpolation and regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet_utils.config import StageConfig
from mrnet_utils.presets import stage_config
from mrnet_utils.data.degradation import Degradation
from mrnet_utils.data.slices import to_unit
from mrnet_utils.evaluation import metrics, statistics, tables
from mrnet_utils.stages import STAGES
from mrnet_utils.study.data import HeldOut
from mrnet_utils.study.layout import StudyPaths
from mrnet_utils.study.super_resolution import MEAN_DRAWS, check_degradation, super_resolve
from mrnet_utils.study.training import StageRun, train_stage
from mrnet_utils.training import checkpoint


@dataclass(frozen=True)
class Arm:
    label: str
    folder: str
    unet: dict  # changes to the preset's UNetConfig

    def config(self, stage: str, preset: str, seed: int) -> StageConfig:
        """The preset's SR stage as this arm, trained with `seed`, without conditioning augmentation."""
        base = stage_config(stage, preset, use_swin=self.unet.get("use_swin", True))
        unet = dict(self.unet)
        if unet.get("family") == "reference":  # the reference family's fixed choices (networks/reference.py)
            unet |= {"attention_resolutions": (), "swin_depth": 1, "num_res_blocks": 1}
        return base.replace(unet=unet, conditioning={"enabled": False}, train={"seed": seed})


ARMS = (
    Arm("ref, ref Swin", "ref_refswin", {"family": "reference", "swin_token_order": "reference", "use_swin": True}),
    Arm("ref, spatial Swin", "ref_spatialswin", {"family": "reference", "swin_token_order": "spatial", "use_swin": True}),
    Arm("ref, no Swin", "ref_noswin", {"family": "reference", "use_swin": False}),
    Arm("project", "project", {}),
)
COMPARISONS = (  # (A, B): what each pair of arms isolates
    ("ref, ref Swin", "ref, no Swin"),  # the reference's Swin block, as the reference built it
    ("ref, spatial Swin", "ref, no Swin"),  # windowed attention over space
    ("ref, ref Swin", "ref, spatial Swin"),  # the token order alone
    ("project", "ref, spatial Swin"),  # the rest of the project's network
)
METRICS = ("psnr", "ssim")
SR_STAGES = tuple(name for name, spec in STAGES.items() if spec.is_super_resolution)


def run_dir(paths: StudyPaths, stage: str, arm: Arm, seed: int) -> Path:
    return paths.savepoints / "swin_question" / f"{stage}_{arm.folder}_seed{seed}"


def train_arms(paths: StudyPaths, cache: Path, seeds: Sequence[int], stages=SR_STAGES, retrain: bool = False,
               progress: bool = True, degradation: Degradation = Degradation()) -> list[StageRun]:
    """Train every (stage, arm, seed) not yet trained (study.training.train_stage), on low-res inputs made by the
    study's `degradation`."""
    return [
        train_stage(arm.config(stage, paths.preset, seed).replace(degradation=degradation), cache,
                    run_dir(paths, stage, arm, seed), retrain, progress)
        for stage in stages for arm in ARMS for seed in seeds
    ]


def scores(paths: StudyPaths, held: HeldOut, seeds: Sequence[int], stages=SR_STAGES, batch_size: int = 8,
           device: str | torch.device = "cpu", progress: bool = True) -> pd.DataFrame:
    """Per stage, arm, seed and held-out slice: PSNR and SSIM of the posterior-mean output (MEAN_DRAWS draws)."""
    frames = []
    for stage in stages:
        spec = STAGES[stage]
        truth = to_unit(held.at(spec.resolution))
        for arm in ARMS:
            for seed in seeds:
                trained = checkpoint.load_stage(run_dir(paths, stage, arm, seed), device)
                check_degradation(trained, held)
                images = to_unit(super_resolve(trained, held.at(spec.low_resolution), batch_size, progress,
                                               MEAN_DRAWS).images)
                frames.append(pd.DataFrame({
                    "stage": stage, "arm": arm.label, "seed": seed, "exam_id": held.exam_ids,
                    "slice_index": held.slice_index, "psnr": metrics.psnr(images, truth).numpy(),
                    "ssim": metrics.ssim(images, truth).numpy(),
                }))
    return pd.concat(frames, ignore_index=True)


def answer(per_slice: pd.DataFrame) -> pd.DataFrame:
    """One row per stage, pair of arms and metric: the difference A - B over seeds and exams (seed s of A
    against seed s of B, slice for slice, averaged per exam), its 95% interval with seeds and exams both
    random (statistics.seeds_and_exams), each seed's own difference and their spread (`seed_sd`, to
    read beside the interval), and the tests and verdict of tables.comparison_table (every row exploratory)."""
    comparisons, per_seed = [], []
    for (stage, metric), (a, b) in ((key, pair) for key in _keys(per_slice) for pair in COMPARISONS):
        table = per_slice[per_slice["stage"] == stage].pivot_table(
            index=["exam_id", "slice_index"], columns=["arm", "seed"], values=metric
        )
        by_seed = table[a] - table[b]  # (slices, seeds): the seed-s A against the seed-s B, slice for slice
        by_exam = by_seed.groupby(level="exam_id").mean()  # (exams, seeds)
        estimate = statistics.seeds_and_exams(by_exam.to_numpy().T, slices=len(by_seed))
        comparisons.append(statistics.Comparison(a, b, metric, estimate, higher_is_better=True))
        per_seed.append(by_seed.mean(axis=0))
    result = tables.comparison_table(comparisons)
    result.insert(0, "stage", [stage for stage, _ in _keys(per_slice) for _ in COMPARISONS])
    result.insert(result.columns.get_loc("exams"), "per_seed",
                  [", ".join(f"{value:+.3g}" for value in seeds) for seeds in per_seed])
    result.insert(result.columns.get_loc("exams"), "seed_sd", [seeds.std(ddof=1) for seeds in per_seed])
    result.insert(result.columns.get_loc("exams"), "seeds", [len(seeds) for seeds in per_seed])
    return result.reset_index().set_index(["stage", "a", "b", "metric"])


def _keys(per_slice: pd.DataFrame) -> list[tuple[str, str]]:
    return [(stage, metric) for stage in dict.fromkeys(per_slice["stage"]) for metric in METRICS]


def arm_table(per_slice: pd.DataFrame) -> pd.DataFrame:
    """Per stage and arm: the mean PSNR and SSIM over slices, for each seed and over seeds."""
    means = per_slice.groupby(["stage", "arm", "seed"])[list(METRICS)].mean().unstack("seed")
    means.columns = [f"{metric}_seed{seed}" for metric, seed in means.columns]
    for metric in METRICS:
        seeds = [column for column in means.columns if column.startswith(f"{metric}_seed")]
        means[f"{metric}_mean"] = means[seeds].mean(axis=1)
        means[f"{metric}_seed_sd"] = means[seeds].std(axis=1, ddof=1) if len(seeds) > 1 else np.nan
    return means
