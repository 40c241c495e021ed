"""From an MRNet folder (or, through `data.volumes`, a folder of NIfTI, DICOM, NRRD or MHA
volumes) to one cached file of normalised 256x256 slices.

The reference study kept, for each task, the exams positive for it and their 5 central
coronal slices, rescaled with TorchIO. This does the same in one pass and keeps what
the reference lost: each slice's exam id, slice index and the exam's three labels,
looked up by exam id after filtering (the reference indexed its label table before
filtering, attaching labels of other exams). Train and valid come from MRNet's own
folders and are never mixed.

The cache is one `.npz` readable with `allow_pickle=False`, holding for each split
`{split}_images` float16 (N, 256, 256) in [-1, 1], `{split}_exam_ids` int32 (N,),
`{split}_slice_index` int16 (N,), `{split}_labels` uint8 (N, 3) in TASKS order, and
`metadata`: a one-element string array holding JSON (plane, selection, normalisation,
central_slices, source, labelled, side, tasks, format_version; a cache of volumes adds how they
were read, `data.volumes`). `data.load_cache` reads and checks it. An unlabelled cache
(`labelled` false) holds zeros in `{split}_labels`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from mrnet_utils.errors import MRNetError
from mrnet_utils.data.mrnet import (
    PLANES, SIDE, SPLITS, TASKS, Exam, check_choice, iter_exams, labels_path, read_labels, volume_path,
)
from mrnet_utils.files import path_lock, remove_stale_partials, write_atomically
from mrnet_utils.progress import track

FORMAT_VERSION = 1
FIELDS = ("images", "exam_ids", "slice_index", "labels")
PERCENTILES = (0.5, 99.5)  # robust to a few very bright or dark voxels, as nnU-Net does
# Which exams a cache keeps: every exam, the positives of one task, or the positives of each task
# in turn (an exam positive for two tasks is kept twice, as the reference study's data had it).
SELECTIONS = ("all", *TASKS, "positives")
NORMALISATIONS = ("series", "slice")  # see `normalise` and `normalise_slices`


def central_slice_indices(slices: int, count: int | None) -> np.ndarray:
    """Indices of the `count` central slices of a series of `slices` (all when None or more).

    Centred as the reference study's loader centres them: from slices // 2 - count // 2 (for 5 of an
    even-length series, n/2 - 2 ... n/2 + 2; the older (slices - count) // 2 took one slice lower).
    """
    if count is None or count >= slices:
        return np.arange(slices)
    start = slices // 2 - count // 2
    return np.arange(start, start + count)


def normalise(volume: np.ndarray, source: Path) -> np.ndarray:
    """A volume (uint8 from MRNet; any real type from other formats) rescaled to [-1, 1] by its 0.5th and
    99.5th percentiles (float32).

    The percentiles are taken over the whole series, so the mapping does not depend on
    how many slices are kept.
    """
    if volume.min() == volume.max():  # TorchIO would return it unscaled, with a warning
        raise MRNetError(f"{source} is constant (every voxel {volume.flat[0]}); it holds no image to normalise")
    import torchio as tio  # here, not at the top: it pulls in SimpleITK and nibabel, which only this step needs

    rescale = tio.RescaleIntensity(out_min_max=(-1, 1), percentiles=PERCENTILES)
    image = tio.ScalarImage(tensor=torch.from_numpy(volume).float()[None])  # TorchIO wants (C, W, H, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # TorchIO's "not possible", raised as an error below
        scaled = rescale(image).data[0].numpy()
    if not np.isfinite(scaled).all():
        raise MRNetError(f"normalising {source} gave NaN or infinite values; check the file")
    # Rescaled, the voxels at the two percentiles land exactly on -1 and 1; where the percentiles are
    # equal (over 99 % of the voxels hold one value) TorchIO returns the volume unscaled.
    if scaled.min() != -1 or scaled.max() != 1:
        raise MRNetError(f"{source} is nearly constant (its {PERCENTILES[0]}th and {PERCENTILES[1]}th percentiles are "
                         "equal); it holds no image to normalise")
    return np.clip(scaled, -1.0, 1.0)


def normalise_slices(volume: np.ndarray) -> np.ndarray:
    """The reference study's normalisation: each slice min-max scaled on its own, to 8 bits (its PNG
    round trip), then to [-1, 1] (float32). A constant slice maps to -1."""
    low = volume.min(axis=(1, 2), keepdims=True).astype(np.float32)
    span = volume.max(axis=(1, 2), keepdims=True).astype(np.float32) - low
    unit = np.divide(volume - low, span, out=np.zeros(volume.shape, np.float32), where=span > 0)
    return np.round(unit * 255) / 127.5 - 1


def select_exams(labels: dict[int, dict[str, int]], selection: str, max_exams: int | None) -> list[int]:
    """Exam ids to keep, in order (repeated for "positives"); at most `max_exams` per task or in all."""
    groups = TASKS if selection == "positives" else [None if selection == "all" else selection]
    chosen = []
    for task in groups:
        ids = [exam_id for exam_id, exam in labels.items() if task is None or exam[task] == 1]
        chosen += ids if max_exams is None else ids[:max_exams]
    return chosen


def check_settings(plane: str, selection: str, normalisation: str, central_slices: int | None,
                   max_exams: int | None) -> None:
    """Refuse settings outside PLANES, SELECTIONS, NORMALISATIONS, or counts below 1."""
    check_choice(plane, PLANES, "plane")
    check_choice(selection, SELECTIONS, "selection")
    check_choice(normalisation, NORMALISATIONS, "normalisation")
    if central_slices is not None and central_slices < 1:
        raise MRNetError(f"central_slices must be at least 1, or None for all slices, not {central_slices}")
    if max_exams is not None and max_exams < 1:
        raise MRNetError(f"max_exams must be at least 1, or None for all exams, not {max_exams}")


def check_output(out: Path | str) -> Path:
    """The cache path, checked before any exam is read, with stale temporary files of killed runs removed."""
    out = Path(out)
    if out.suffix != ".npz":
        raise MRNetError(f"cache path {out} must end in .npz")
    if not out.parent.is_dir():
        raise MRNetError(f"output folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):  # say so now rather than after reading every exam
        raise MRNetError(f"cannot write to folder {out.parent}; choose a writable output path")
    remove_stale_partials(out.parent)  # of earlier runs killed while writing (SIGKILL; any other stop removes its own)
    return out


def split_arrays(exams: Iterable[Exam], count: int, description: str, source: Callable[[Exam], Path],
                 central_slices: int | None, normalisation: str, progress: bool) -> dict[str, np.ndarray]:
    """The cache's arrays of one split (FIELDS) from its `count` exams: the central slices of each series,
    normalised as `normalisation` says, with the exam's id, the slice indices and the exam's labels.

    `source(exam)` is the file an error about the exam names; `description` labels the progress bar.
    """
    images, ids, indices, labels = [], [], [], []
    for exam in track(exams, desc=description, total=count, unit="exam", enabled=progress):
        keep = central_slice_indices(len(exam.volume), central_slices)
        if normalisation == "slice":
            normalised = normalise_slices(exam.volume)
        else:
            normalised = normalise(exam.volume, source(exam))
        images.append(normalised[keep].astype(np.float16))
        ids.append(np.full(len(keep), exam.exam_id, np.int32))
        indices.append(keep.astype(np.int16))
        labels.append(np.tile(np.array([exam.labels[t] for t in TASKS], np.uint8), (len(keep), 1)))
    return dict(images=np.concatenate(images), exam_ids=np.concatenate(ids),
                slice_index=np.concatenate(indices), labels=np.concatenate(labels))


def write_cache(out: Path, splits: dict[str, dict[str, np.ndarray]], metadata: dict) -> Path:
    """Write the cache atomically: each split's FIELDS and `metadata` (plus side, tasks and format version)."""
    arrays = {f"{split}_{field}": array for split, fields in splits.items() for field, array in fields.items()}
    metadata = dict(metadata, side=SIDE, tasks=list(TASKS), format_version=FORMAT_VERSION)
    arrays["metadata"] = np.array([json.dumps(metadata)])
    write_atomically(out, lambda handle: np.savez(handle, **arrays), "slice cache")
    return out


def preprocess(
    mrnet_root: Path | str,
    plane: str,
    out: Path | str,
    selection: str = "all",
    central_slices: int | None = 5,
    max_exams: int | None = None,
    progress: bool = True,
    normalisation: str = "series",
) -> Path:
    """Write the slice cache for one plane of an MRNet folder and return its path.

    selection: "all" exams, the positives of "abnormal", "acl" or "meniscus", or "positives":
        the positives of each task in turn, an exam repeated for each task it is positive for
        (the reference study's data).
    central_slices: how many central slices of each series to keep (None: all).
    max_exams: keep at most this many exams per split (the lowest ids; per task for "positives").
    normalisation: "series" (`normalise`, the project's) or "slice" (`normalise_slices`, the reference's).
    """
    root = Path(mrnet_root)
    check_settings(plane, selection, normalisation, central_slices, max_exams)
    out = check_output(out)
    with path_lock(out, "out_dir"):  # one writer: a second preprocess into `out` is refused, naming this one
        splits = {}
        for split in SPLITS:
            exam_ids = select_exams(read_labels(root, split), selection, max_exams)
            if not exam_ids:
                tasks = TASKS if selection == "positives" else [selection]
                raise MRNetError(
                    f"no {split} exam of {root} is positive for {selection!r} "
                    f"({', '.join(str(labels_path(root, split, task)) for task in tasks)} has no label 1); "
                    "choose another selection, or 'all'"
                )
            splits[split] = split_arrays(iter_exams(root, split, plane, exam_ids), len(exam_ids), f"{split} {plane}",
                                         lambda exam: volume_path(root, exam.split, plane, exam.exam_id),
                                         central_slices, normalisation, progress)
        metadata = dict(plane=plane, selection=selection, normalisation=normalisation, central_slices=central_slices,
                        source=str(root.resolve()), labelled=True)
        return write_cache(out, splits, metadata)


__all__ = ["FORMAT_VERSION", "FIELDS", "SELECTIONS", "NORMALISATIONS", "central_slice_indices", "normalise",
           "normalise_slices", "select_exams", "check_settings", "check_output", "split_arrays", "write_cache",
           "preprocess"]
