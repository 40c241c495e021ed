"""The rounds of progressive distillation (Salimans & Ho 2022; diffusion/processes/distilled.py), each a
training run of its own (training.loop.train) whose teacher is the round before.

`cfg` is the distilled stage's config (presets.stage_config(..., process="distilled")): its
diffusion.distilled_from and distilled_steps give the rounds (students of distilled_from / 2, then half
as many steps again, down to distilled_steps) and its train settings each round's budget. The student
of N steps trains in out_dir/rounds/steps_<N>, the last one in out_dir itself, so that out_dir's final
checkpoint is the generator and out_dir is a run folder like any other. A round's teacher is written in
its config, so every round's checkpoint says where it came from; a round whose final checkpoint exists
is not trained again, and a stopped one continues where it stopped (`resume`).
"""

from __future__ import annotations

from pathlib import Path

from mrnet_utils.config import StageConfig
from mrnet_utils.errors import MRNetError
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT, load_checkpoint, rebuild_config
from mrnet_utils.training.loop import TrainResult, train


def rounds(cfg: StageConfig) -> list[int]:
    """The student steps of each round, in order: distilled_from / 2, distilled_from / 4, ..., distilled_steps."""
    steps, last = cfg.diffusion.distilled_from // 2, cfg.diffusion.distilled_steps
    found = [steps]
    while found[-1] > last:
        found.append(found[-1] // 2)
    return found


def round_folder(out_dir: str | Path, cfg: StageConfig, steps: int) -> Path:
    """Where the round with students of `steps` steps trains: out_dir for the last, else under out_dir/rounds."""
    out_dir = Path(out_dir)
    return out_dir if steps == cfg.diffusion.distilled_steps else out_dir / "rounds" / f"steps_{steps:04d}"


def distill(
    cfg: StageConfig, teacher: str | Path, data_path: str | Path, out_dir: str | Path, resume: bool = False,
    progress: bool = True, grids: bool = True, device: str | None = None,
) -> list[TrainResult]:
    """Distil `teacher` (a run folder or checkpoint of the stage's own process) round by round into out_dir.

    The student takes the teacher's network (`cfg`'s is replaced by the teacher's) and trains on the slices
    at `data_path`, as the teacher did. `resume=False` refuses a round folder that already holds a run
    (training.loop.train); `grids` draws the last round's sample grids. Returns each round's result.
    """
    teacher = Path(teacher)
    teacher = (teacher / FINAL_CHECKPOINT if teacher.is_dir() else teacher).resolve()
    if not teacher.is_file():
        raise MRNetError(f"no teacher checkpoint at {teacher}: train the stage first", parameter="teacher")
    teacher_cfg = rebuild_config(load_checkpoint(teacher))
    if (teacher_cfg.stage, teacher_cfg.unet.use_swin) != (cfg.stage, cfg.unet.use_swin):
        raise MRNetError(f"teacher {teacher} is {teacher_cfg.name}, not a run of {cfg.name}'s stage", parameter="teacher")
    cfg = cfg.replace(unet=teacher_cfg.unet)
    results = []
    for steps in rounds(cfg):
        folder = round_folder(out_dir, cfg, steps)
        round_cfg = cfg.replace(diffusion={"teacher": str(teacher), "distilled_steps": steps})
        last = steps == cfg.diffusion.distilled_steps
        results.append(train(round_cfg, data_path, folder, resume=resume or (folder / FINAL_CHECKPOINT).exists(),
                             progress=progress, grids=grids and last, device=device))
        teacher = (folder / FINAL_CHECKPOINT).resolve()
    return results


def lineage_seconds(path: str | Path) -> float:
    """The training seconds behind a checkpoint: its own and, for a distilled generator, those of every round
    before and of the run the first round learned from (each config's diffusion.teacher, followed back)."""
    seconds, path = 0.0, Path(path)
    while True:
        payload = load_checkpoint(path)
        seconds += payload["log"]["seconds"]
        teacher = rebuild_config(payload).diffusion.teacher
        if not teacher:
            return seconds
        path = Path(teacher)
