"""The study's data: the MRNet folder (or the phantom), the cache's summary, example slices and the held-out set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrnet_utils.config import StudySize
from mrnet_utils.data import mrnet, phantom
from mrnet_utils.data.slices import SliceDataset, downsample, load_cache
from mrnet_utils.diffusion import conditioning
from mrnet_utils.errors import MRNetError
from mrnet_utils.study.layout import StudyPaths


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
