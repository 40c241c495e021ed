"""Training the study's stages: each trained once, its run folder found again, its log, grids and cost read back."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mrnet_utils.config import StageConfig
from mrnet_utils.data.degradation import Degradation
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.presets import stage_config
from mrnet_utils.data.slices import load_cache
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import build_network, forward_flops
from mrnet_utils.study.layout import StudyPaths, study_runs
from mrnet_utils.training import checkpoint
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT
from mrnet_utils.training.distill import distill
from mrnet_utils.training.log import read_train_log
from mrnet_utils.training.loop import steps_for_epochs, train


def training_config(
    stage: str, preset: str, use_swin: bool, sample_grids: int, process: str | None = None,
    cache_path: str | Path | None = None, degradation: Degradation = Degradation(),
) -> StageConfig:
    """The preset's config (presets.stage_config) with the study's `degradation`, writing `sample_grids` sample
    grids during training besides the final one.

    Grids fall every steps // (sample_grids + 1) + 1 steps: evenly spaced and before the
    last step, whose grid `samples_final.png` is written anyway (runs of fewer than about
    sample_grids**2 steps get fewer grids, or one on the last step). A preset that counts
    epochs (train.epochs) gets its steps from the training slices of `cache_path`.
    """
    cfg = stage_config(stage, preset, use_swin, process).replace(degradation=degradation)
    if cache_path is not None:
        cfg = steps_for_epochs(cfg, _train_slices(cache_path))
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
    cfg: StageConfig, cache_path: str | Path, run_dir: str | Path, retrain: bool = False, progress: bool = True,
    device: str | None = None, teacher: str | Path | None = None,
) -> StageRun:
    """Train `cfg` into `run_dir`, unless its final checkpoint already holds the config's steps.

    An interrupted run continues from its last checkpoint (training.loop.train with resume).
    `retrain` deletes the run folder first (checkpoints, log, sample grids), so that the
    new run's log and grids are not mixed with the old ones. `device`: None trains on the
    GPU if there is one. A process trained from a teacher (the distilled generator) learns
    from the run folder `teacher`, round by round (training.distill), every finished round kept.
    """
    if cfg.train.epochs:  # the steps its epochs make on this cache, which the final checkpoint must hold
        cfg = steps_for_epochs(cfg, _train_slices(cache_path))
    run_dir = Path(run_dir)
    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    if process_class(cfg.diffusion.process).from_teacher:
        if teacher is None:
            raise MRNetError(f"{cfg.name} learns from a trained run of its stage: give its run folder as teacher",
                             parameter="teacher")
        rounds = distill(cfg, teacher, cache_path, run_dir, resume=True, progress=progress, device=device)
        trained = [r for r in rounds if r.trained_steps]
        rate = trained[-1].images_per_second if trained else math.nan
        return StageRun(cfg.name, run_dir, bool(trained), rounds[-1].steps, sum(r.seconds for r in rounds), rate)
    final = run_dir / FINAL_CHECKPOINT
    if final.exists():
        payload = checkpoint.load_checkpoint(final)
        if payload["step"] >= cfg.train.steps:
            checkpoint.check_compatible(payload, cfg, path=final)
            print(f"{cfg.name}: {final} holds step {payload['step']}; training skipped (retrain=True retrains)")
            return StageRun(cfg.name, run_dir, False, payload["step"], payload["log"]["seconds"], math.nan)
    result = train(cfg, cache_path, run_dir, resume=True, progress=progress, device=device)
    return StageRun(cfg.name, run_dir, True, result.steps, result.seconds, result.images_per_second)


def _train_slices(cache_path: str | Path) -> int:
    return len(load_cache(cache_path)["train"]["images"])


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


def find_run(paths: StudyPaths, stage: str, use_swin: bool, process: str | None = None) -> Path:
    """The run folder of a trained stage; an error naming how to train it when its final checkpoint is missing."""
    run_dir = paths.run(stage, use_swin, process)
    if not (run_dir / FINAL_CHECKPOINT).is_file():
        raise MRNetError(
            f"no final checkpoint in {run_dir}: {run_dir.name} of the {paths.preset} study is not trained yet; "
            "train it first (train_stage, which notebooks/01_train_stage.ipynb runs)"
        )
    return run_dir


def trained_runs(paths: StudyPaths) -> dict[str, Path]:
    """{run name: folder} of every run of the preset with a final checkpoint, e.g. 'sr1_swin'."""
    found = sorted(paths.savepoints.glob(f"*/{FINAL_CHECKPOINT}"))
    return {path.parent.name: path.parent for path in found}


def loss_logs(paths: StudyPaths) -> dict[str, dict[str, pd.DataFrame]]:
    """{stage: {variant: training log}} of the study's trained runs (layout.study_runs), for a loss figure with
    one panel per stage and its variants (Swin, no Swin, a baseline process) as lines."""
    panels: dict[str, dict[str, pd.DataFrame]] = {}
    for stage, use_swin, process in study_runs():
        run_dir = paths.run(stage, use_swin, process)
        if (run_dir / FINAL_CHECKPOINT).is_file():
            variant = ("Swin" if use_swin else "no Swin") + (f", {process}" if process else "")
            panels.setdefault(stage, {})[variant] = read_train_log(run_dir)
    return panels


def training_flops(cfg: StageConfig, steps: int | None = None) -> float:
    """The floating-point operations of training `cfg` for `steps` (default: its own) steps: three forward passes'
    worth per image (the forward pass and a backward pass of twice its cost, Kaplan et al. 2020, sec. 2.1), plus
    the two forward passes of the teacher for a process trained from one."""
    passes = 3 + (2 if process_class(cfg.diffusion.process).from_teacher else 0)
    return float(passes * forward_flops(cfg.unet) * cfg.train.batch_size * (cfg.train.steps if steps is None else steps))


def training_table(paths: StudyPaths) -> pd.DataFrame:
    """One row per trained run: size, steps, training seconds (from the final checkpoint), images/s, training
    compute (`training_flops`, in TFLOP), last logged loss."""
    rows = {}
    for name, run_dir in trained_runs(paths).items():
        payload = checkpoint.load_checkpoint(run_dir / FINAL_CHECKPOINT)
        cfg = StageConfig.from_dict(payload["config"])
        seconds = payload["log"]["seconds"]
        rows[name] = {
            "parameters": sum(p.numel() for p in build_network(cfg.unet).parameters()),
            "steps": payload["step"],
            "batch_size": cfg.train.batch_size,
            "train_seconds": seconds,
            "images_per_s": payload["step"] * cfg.train.batch_size / seconds,
            "train_tflop": training_flops(cfg, payload["step"]) / 1e12,
            "final_loss": float(read_train_log(run_dir)["loss"].iloc[-1]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    return table
