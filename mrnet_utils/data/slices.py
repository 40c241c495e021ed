"""The slice cache as tensors: one data source for every stage and resolution.

`preprocess.preprocess` writes 256x256 slices once; each stage makes its own 64, 128
or 256 resolution here by anti-aliased downsampling of those same slices, so the
low-resolution inputs of a super-resolution stage are exactly the downsampled
targets (as in SR3, Saharia et al. 2021).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mrnet_utils.errors import MRNetError
from mrnet_utils.data.arrays import load_npz, numbers
from mrnet_utils.data.mrnet import SIDE, SPLITS, TASKS, check_choice
from mrnet_utils.data.preprocess import FIELDS, FORMAT_VERSION

RESOLUTIONS = (64, 128, 256)


def _not_a_cache(path: Path, why: str) -> MRNetError:
    return MRNetError(f"{path} is not a slice cache of this version ({why}); write it again with preprocess")


def load_cache(path: Path | str) -> dict[str, Any]:
    """Read and check a cache: {'metadata': dict, 'train': {field: array}, 'valid': {field: array},
    'digest': the SHA-256 of its slices and their ids and labels (each array's name, dtype, shape and bytes)}.

    The digest identifies the data, not the file or where it came from: a cache written again
    from the same exams with the same settings has the same digest (the file's bytes differ, by
    the archive's time stamps), a cache of another plane or selection has another.
    """
    path = Path(path)
    if not path.is_file():
        raise MRNetError(f"cache file {path} does not exist; write it with mrnet_utils.data.preprocess.preprocess")

    def accept(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if name == "metadata":  # one JSON string
            if dtype.kind != "U" or shape != (1,) or dtype.itemsize > 2**22:
                raise _not_a_cache(path, f"metadata is {dtype} {shape}, not one string")
        else:
            numbers(path, name, dtype)

    try:
        with open(path, "rb") as handle:
            if handle.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
                raise _not_a_cache(path, "a single array, not an .npz archive")
        contents = load_npz(path, accept)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MRNetError(f"{path} is corrupt or not an .npz cache ({error}); write it again with preprocess") from None
    if "metadata" not in contents:
        raise _not_a_cache(path, "no metadata")
    try:
        metadata = json.loads(str(contents["metadata"][0]))
    except (IndexError, ValueError):
        raise _not_a_cache(path, "unreadable metadata") from None
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        raise _not_a_cache(path, f"format {metadata.get('format_version') if isinstance(metadata, dict) else '?'}, "
                                 f"expected {FORMAT_VERSION}")
    cache: dict[str, Any] = {"metadata": metadata, "digest": _content_digest(
        {name: array for name, array in contents.items() if name != "metadata"})}
    for split in SPLITS:
        missing = [f"{split}_{field}" for field in FIELDS if f"{split}_{field}" not in contents]
        if missing:
            raise _not_a_cache(path, f"missing {', '.join(missing)}")
        arrays = {field: contents[f"{split}_{field}"] for field in FIELDS}
        count = len(arrays["images"])
        expected = {"images": (count, SIDE, SIDE), "exam_ids": (count,), "slice_index": (count,),
                    "labels": (count, len(TASKS))}
        for field, shape in expected.items():
            if arrays[field].shape != shape:
                raise _not_a_cache(path, f"{split}_{field} has shape {arrays[field].shape}, expected {shape}")
        _check_finite(path, split, arrays)
        cache[split] = arrays
    return cache


def _content_digest(arrays: dict[str, np.ndarray]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        hasher.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        hasher.update(array.view(np.uint8).reshape(-1).data if array.size else b"")
    return hasher.hexdigest()


def _check_finite(path: Path, split: str, arrays: dict[str, np.ndarray]) -> None:
    """Refuse NaN or infinite pixels, which would otherwise surface as a non-finite loss mid-training.

    Checked in chunks, so that the boolean mask stays small for a full MRNet cache.
    """
    images = arrays["images"]
    for start in range(0, len(images), 512):
        finite = np.isfinite(images[start : start + 512]).reshape(-1, SIDE * SIDE).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise MRNetError(
                f"{path}: {split}_images holds NaN or infinite values (exam {int(arrays['exam_ids'][row]):04d}, "
                f"slice {int(arrays['slice_index'][row])}); write the cache again with preprocess"
            )


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased resize of (B, C, H, W) images to (B, C, size, size); size <= H, W.

    Bilinear with antialias=True is a triangle filter as wide as the reduction: what PIL
    and torchvision's Resize do, so the reference's torchvision-resized inputs are
    matched. It suppresses frequencies above the new Nyquist limit better than 'area'
    (a box filter, with strong side lobes), and its weights are non-negative and sum to
    one, so a constant image stays constant and values stay within the input range.
    """
    if images.ndim != 4:
        raise MRNetError(f"downsample expects images of shape (B, C, H, W), not {tuple(images.shape)}")
    if not 1 <= size <= min(images.shape[-2:]):
        raise MRNetError(f"downsample size {size} must be between 1 and the image side {min(images.shape[-2:])}")
    if images.shape[-2:] == (size, size):
        return images
    return resize(images, size)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images to (B, C, size, size) by the same bilinear filter as `downsample`, either way:
    anti-aliased when it shrinks, plain bilinear when it enlarges. For images from elsewhere (scoring
    another model's samples); the study's own resolutions come from `degrade`."""
    if images.ndim != 4:
        raise MRNetError(f"resize expects images of shape (B, C, H, W), not {tuple(images.shape)}")
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def degrade(images: torch.Tensor, size: int) -> torch.Tensor:
    """The one degradation chain of the project: halve with `downsample` until the side is `size`.

    Every lower resolution of a slice comes from here (256 -> 128 -> 64): the base model's
    training images, the super-resolution stages' inputs in training and evaluation, and
    the interpolation baselines' inputs, so the 64x64 image the base model learns is the
    64x64 image SR1 is given.
    """
    side = images.shape[-1]
    if images.ndim != 4 or size > side or side % size or (side // size) & (side // size - 1):
        raise MRNetError(
            f"degrade takes (B, C, S, S) images to S / 2**k; cannot take shape {tuple(images.shape)} to {size}"
        )
    while images.shape[-1] > size:
        images = downsample(images, images.shape[-1] // 2)
    return images


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] to [0, 1], the range of metrics and image files; clamped, as a sampler's output is."""
    return ((images.float() + 1) / 2).clamp(0, 1)


class SliceDataset(Dataset):
    """The slices of one split of a cache at one resolution, as (1, R, R) float32 tensors in [-1, 1].

    All slices are made at `resolution` once here, from the 256x256 slices, by `degradation` (a
    data.degradation.Degradation, the study's setting; None: the halving chain `degrade`, 256 -> 128 -> 64).
    `labels` (N, 3) float (TASKS order), `exam_ids` and `slice_index` (N,) say where item i came from.
    """

    def __init__(self, cache_path: Path | str, split: str, resolution: int, degradation: Any = None):
        check_choice(split, SPLITS, "split")
        if resolution not in RESOLUTIONS:
            raise MRNetError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, not {resolution}")
        cache = load_cache(cache_path)
        arrays = cache[split]
        if not len(arrays["images"]):
            raise MRNetError(f"the {split} split of {cache_path} holds no slices; run preprocess with more exams")
        make = degradation.apply if degradation is not None else degrade
        chunks = [
            make(torch.from_numpy(chunk.astype(np.float32))[:, None], resolution)
            for chunk in np.array_split(arrays["images"], -(-len(arrays["images"]) // 512))  # bounded memory
        ]
        self.images = torch.cat(chunks).clamp_(-1.0, 1.0)  # float rounding only: the filters are convex
        self.labels = torch.from_numpy(arrays["labels"].astype(np.float32))
        self.exam_ids = torch.from_numpy(arrays["exam_ids"].astype(np.int64))
        self.slice_index = torch.from_numpy(arrays["slice_index"].astype(np.int64))
        self.metadata = cache["metadata"]
        self.cache_digest = cache["digest"]  # of the whole cache, both splits: what a checkpoint records
        self.split, self.resolution = split, resolution

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


__all__ = ["RESOLUTIONS", "load_cache", "downsample", "degrade", "resize", "to_unit", "SliceDataset"]
