"""Synthetic slices and a slice cache written by hand: data for tests that need no phantom."""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mrnet_utils.data.preprocess import FORMAT_VERSION


def smooth_slices(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """n distinct smooth images in [-0.9, 0.9]: random 8x8 grids upsampled, so that each slice's
    low-res image differs clearly from every other's."""
    coarse = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9
    return F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def write_cache(path: Path, count: int, seed: int = 3) -> Path:
    """A slice cache as preprocess writes it: `count` smooth 256x256 training slices, 2 valid ones, labels 0..7."""
    images = smooth_slices(count + 2, 256, seed).numpy()[:, 0]
    labels = np.array([[(i >> bit) & 1 for bit in range(3)] for i in range(count + 2)], dtype=np.uint8)
    arrays = {}
    for split, rows in (("train", slice(0, count)), ("valid", slice(count, count + 2))):
        n = len(images[rows])
        arrays |= {f"{split}_images": images[rows], f"{split}_exam_ids": np.arange(n), f"{split}_slice_index": np.zeros(n),
                   f"{split}_labels": labels[rows]}
    arrays["metadata"] = np.array([json.dumps({"format_version": FORMAT_VERSION})])
    np.savez(path, **arrays)
    return path
