"""The study's sizes, checked against its slice cache before the first model trains.

Every count the study's notebooks need is known once the cache is written: the valid exams set
aside for tuning (study.data.tuning_count) must leave exams to report on, exam-level intervals
need statistics.MIN_EXAMS reported exams, the generation metrics leave out FID, KID and IS below
their sample-size guards (evaluation.tables), the diversity score needs two samples, and the label
study's AUC intervals need MIN_EXAMS reported exams of each class. `check_sizes` reads only the
cache's exam ids and labels, and its valid exam ids for the tuning exams (seconds), raises one MRNetError naming the
option that fixes a size the study cannot run with, and returns notes on what it will leave out,
so that a run on too little data stops before hours of training rather than after.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrnet_utils.data.arrays import load_npz, numbers
from mrnet_utils.data.mrnet import SPLITS, TASKS
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.statistics import MIN_EXAMS
from mrnet_utils.evaluation.tables import MIN_FID_SAMPLES, MIN_IS_PER_SPLIT, MIN_KID_SAMPLES
from mrnet_utils.study import data


@dataclass(frozen=True)
class StudySizes:
    """The counts the study will work with."""

    train_exams: int
    train_slices: int
    valid_exams: int
    tuning_exams: int  # valid exams set aside for tuning, never reported
    reported_exams: int
    reported_slices: int
    samples: int  # generated images per model


def check_sizes(cache: str | Path, study, tuning_exams: int | None = None, eval_slices: int | None = None,
                samples: int | None = None) -> tuple[StudySizes, list[str]]:
    """The study's sizes on `cache` with the preset's study settings `study` (presets.StudySettings), the
    notebooks' overrides where given, and notes on what the study will leave out; an MRNetError naming the
    option to change where it could not run at all."""
    ids, labels = _read(Path(cache))
    valid = np.unique(ids["valid"])
    if not len(ids["train"]) or not len(valid):
        raise MRNetError(f"slice cache {cache} holds {len(ids['train'])} train and {len(ids['valid'])} valid slices; "
                         "the study needs both: preprocess more exams (--mrnet-root with train/ and valid/ exams)")
    tuning = data.tuning_count(cache, study.tuning_exams, tuning_exams)
    if not 0 <= tuning < len(valid):
        raise MRNetError(f"the study sets aside {tuning} valid exams for tuning, but {cache} has {len(valid)} valid "
                         "exams: none would be left to report on; run with --tuning-exams "
                         f"{max(0, len(valid) - data.MIN_REPORTED_EXAMS)}", parameter="tuning_exams")
    count = study.samples if samples is None else samples
    if count < 2:
        raise MRNetError(f"{count} sample per model: the diversity score compares pairs; generate at least 2 "
                         "(N_SAMPLES in notebooks/02_pipeline.ipynb)", parameter="samples")
    reported = ~np.isin(ids["valid"], data.tuning_exams(cache, tuning))
    sizes = StudySizes(len(np.unique(ids["train"])), len(ids["train"]), len(valid), tuning,
                       len(valid) - tuning, int(reported.sum()), count)
    return sizes, _notes(sizes, labels["valid"][reported], ids["valid"][reported],
                         study.eval_slices if eval_slices is None else eval_slices)


def _notes(sizes: StudySizes, labels: np.ndarray, exam_ids: np.ndarray, eval_slices: int | None) -> list[str]:
    notes = []
    if sizes.reported_exams < MIN_EXAMS:
        fewer = " or fewer --tuning-exams" if sizes.tuning_exams else ""
        notes.append(f"{sizes.reported_exams} reported exams: the exam-bootstrap intervals need {MIN_EXAMS}, so the "
                     f"tables give none (more exams{fewer} give them)")
    if eval_slices is not None and eval_slices > sizes.reported_slices:
        notes.append(f"--eval-slices {eval_slices} asks for more than the {sizes.reported_slices} reported slices: "
                     "all are scored")
    pairs = min(sizes.samples, sizes.reported_slices)
    for metric, need, have, what in (("FID", MIN_FID_SAMPLES, pairs, "samples and real slices"),
                                     ("KID", MIN_KID_SAMPLES, pairs, "samples and real slices"),
                                     ("IS", MIN_IS_PER_SPLIT, sizes.samples, "samples")):
        if have < need:
            notes.append(f"{metric} needs at least {need} {what}, {have} here: not computed")
    for index, task in enumerate(TASKS):
        positive = len(np.unique(exam_ids[labels[:, index] == 1]))
        negative = len(np.unique(exam_ids[labels[:, index] == 0]))
        if min(positive, negative) < MIN_EXAMS:
            notes.append(f"label study, {task}: {positive} positive and {negative} negative reported exams; its AUC "
                         f"interval needs {MIN_EXAMS} of each")
    return notes


def _read(cache: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each split's exam ids and labels, read from the cache without its images."""
    names = tuple(f"{split}_{field}" for split in SPLITS for field in ("exam_ids", "labels"))
    if not cache.is_file():
        raise MRNetError(f"slice cache {cache} does not exist; run the preprocess part first (run_all.sh --only "
                         "preprocess)")
    try:
        arrays = load_npz(cache, lambda name, shape, dtype: numbers(cache, name, dtype), names=names)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MRNetError(f"{cache} is corrupt or not an .npz cache ({error}); write it again with preprocess") from None
    missing = [name for name in names if name not in arrays]
    if missing:
        raise MRNetError(f"{cache} is not a slice cache (it lacks {', '.join(missing)}); write it again with preprocess")
    return ({split: arrays[f"{split}_exam_ids"] for split in SPLITS},
            {split: arrays[f"{split}_labels"] for split in SPLITS})


__all__ = ["StudySizes", "check_sizes"]
