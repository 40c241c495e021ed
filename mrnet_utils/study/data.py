"""The study's data: the MRNet folder (or the phantom), the cache's summary, example slices and the held-out set."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet_utils.presets import StudySettings
from mrnet_utils.data import mrnet, phantom
from mrnet_utils.data.degradation import Degradation
from mrnet_utils.data.slices import SliceDataset, load_cache
from mrnet_utils.diffusion import conditioning
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import write_json
from mrnet_utils.study.layout import StudyPaths


def data_source(paths: StudyPaths, mrnet_root: str | Path | None, size: StudySettings, progress: bool = True) -> Path:
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
    """Per split: exams, slices, and the share of slices positive for each MRNet task (NaN when unlabelled)."""
    cache = load_cache(cache_path)
    labelled = cache["metadata"].get("labelled", True)  # volumes without labels (data.volumes) are not
    rows = {}
    for split in mrnet.SPLITS:
        arrays = cache[split]
        row = {"exams": len(np.unique(arrays["exam_ids"])), "slices": len(arrays["images"])}
        row.update({f"{task}_share": float(arrays["labels"][:, i].mean()) if labelled else float("nan")
                    for i, task in enumerate(mrnet.TASKS)})
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
    cache_path: str | Path, resolution: int, count: int, low_resolution: int | None = None, split: str = "train",
    degradation: Degradation = Degradation(),
) -> tuple[torch.Tensor, list[str]]:
    """A few slices of the cache at `resolution` (made by `degradation`), with labels naming exam and slice.

    With `low_resolution` (a super-resolution stage), a first row shows the network's
    condition, the low-res image upsampled back, above the targets.
    """
    dataset = SliceDataset(cache_path, split, resolution, degradation)
    index = torch.from_numpy(_evenly_spaced(len(dataset), count))
    targets = dataset.images[index]
    labels = [f"exam {int(dataset.exam_ids[i]):04d} / {int(dataset.slice_index[i])}" for i in index]
    if low_resolution is None:
        return targets, labels
    low = SliceDataset(cache_path, split, low_resolution, degradation).images[index]
    condition = conditioning.upsample(low, resolution)
    return torch.cat([condition, targets]), [f"input {low_resolution}" for _ in index] + labels


@dataclass(frozen=True)
class HeldOut:
    """Valid-split slices at 256 with their exam ids and slice indices: the ground truth of the SR tables.

    Lower resolutions come from the study's degradation, as training's (data.degradation), so that pairs
    match by exam and slice.
    """

    images: torch.Tensor  # (N, 1, 256, 256) in [-1, 1]
    exam_ids: np.ndarray
    slice_index: np.ndarray
    degradation: Degradation = Degradation()

    def at(self, resolution: int) -> torch.Tensor:
        return self.degradation.apply(self.images, resolution)

    def pairs(self) -> pd.DataFrame:
        return pd.DataFrame({"exam_id": self.exam_ids, "slice_index": self.slice_index})


# The fewest valid exams a study reports on when the preset's tuning exams would leave fewer: the
# smallest exam count at which the study's intervals were shown to keep their coverage
# (benchmarks/bench_coverage.py, docs/statistics.md).
MIN_REPORTED_EXAMS = 6


def tuning_count(cache_path: str | Path, preset_count: int, requested: int | None = None) -> int:
    """How many valid exams to set aside for tuning: `requested` when given, else the preset's count, but
    no more than leaves MIN_REPORTED_EXAMS to report on (a real sample of 8 valid exams: 2 for tuning,
    6 reported; the phantom's 12 at the demo preset: 6 and 6)."""
    if requested is not None:
        return requested
    valid = len(np.unique(load_cache(cache_path)["valid"]["exam_ids"]))
    return max(0, min(preset_count, valid - MIN_REPORTED_EXAMS))


def exam_roles(cache_path: str | Path, tuning: int) -> pd.DataFrame:
    """One row per valid exam: its id, its role ("tuning": set aside, never reported; "reported") and slices."""
    exam_ids = load_cache(cache_path)["valid"]["exam_ids"]
    ids, slices = np.unique(exam_ids, return_counts=True)
    tune = np.isin(ids, tuning_exams(cache_path, tuning))
    return pd.DataFrame({"exam_id": ids, "role": np.where(tune, "tuning", "reported"), "slices": slices})


def tuning_exams(cache_path: str | Path, count: int) -> np.ndarray:
    """The valid exams set aside for tuning (sampler steps, thresholds): `count` of them, spread over the ids.

    Nothing reported is measured on them (`held_out` leaves them out), so that no reported
    number was chosen on the slices it is reported for.
    """
    ids = np.unique(load_cache(cache_path)["valid"]["exam_ids"])
    if not 0 <= count < len(ids):
        raise MRNetError(f"tuning_exams={count} must leave some of the {len(ids)} valid exams to report on")
    return ids[_evenly_spaced(len(ids), count)] if count else ids[:0]


def held_out(cache_path: str | Path, count: int | None, exams: str = "report", tuning: int = 0,
             degradation: Degradation = Degradation()) -> HeldOut:
    """`count` valid slices (None: all) spread over the `tuning` exams set aside for tuning
    (`exams="tune"`) or over the others (`exams="report"`, what the tables report); their lower
    resolutions made by `degradation`."""
    dataset = SliceDataset(cache_path, "valid", 256)
    tune = np.isin(dataset.exam_ids.numpy(), tuning_exams(cache_path, tuning))
    if exams not in ("tune", "report"):
        raise MRNetError(f"exams must be 'tune' or 'report', not {exams!r}")
    rows = np.flatnonzero(tune if exams == "tune" else ~tune)
    if not len(rows):
        raise MRNetError(f"no valid slices to {exams} on: {tuning} of the valid exams are set aside for tuning")
    index = rows[_evenly_spaced(len(rows), count)]
    return HeldOut(dataset.images[index], dataset.exam_ids[index].numpy(), dataset.slice_index[index].numpy(),
                   degradation)


DEGRADATION_FILE = "degradation.json"


def record_degradation(paths: StudyPaths, degradation: Degradation) -> Degradation:
    """Record in the results folder how the study makes its lower resolutions (data.degradation), and refuse a
    folder whose results were made with another: one folder holds the results of one degradation."""
    path = paths.results / DEGRADATION_FILE
    wanted = dataclasses.asdict(degradation)
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            raise MRNetError(f"{paths.results} holds results made with degradation {Degradation(**found).describe()!r}, "
                             f"not {degradation.describe()!r}; give the study its own folder (run_all.sh --out, "
                             "--results)", parameter="degradation")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, wanted, "degradation record")
    return degradation
