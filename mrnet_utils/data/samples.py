"""Anyone's generated samples, read as the study's model-space 256x256 images.

`read_samples` takes a folder of PNG files or one array file (.npy, or .npz with one array)
and returns model-space images (N, 1, 256, 256) in [-1, 1], saying what it did to them:
colour PNGs are converted to grey with PIL's ITU-R 601-2 luma ("L" mode), and images of
another size are resized with the study's resizing path (`data.slices.resize`), so that
another model's samples can be scored on the study's real slices (study.generation.score_samples).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mrnet_utils.data.slices import resize
from mrnet_utils.errors import MRNetError

SIDE = 256  # the study scores 256x256 images


@dataclass(frozen=True)
class Samples:
    images: torch.Tensor  # (N, 1, 256, 256) in [-1, 1]
    conversion: str  # what was done to the files, for the table


def read_samples(path: str | Path) -> Samples:
    """Generated images from a folder of PNGs (sorted by name) or an array file, as model-space 256x256."""
    path = Path(path)
    if path.is_dir():
        return _read_pngs(path)
    if path.suffix in (".npy", ".npz") and path.is_file():
        return _read_array(path)
    raise MRNetError(f"{path} is neither a folder of PNG files nor an .npy/.npz array file")


def _read_pngs(folder: Path) -> Samples:
    files = sorted(folder.glob("*.png"), key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)])
    if not files:
        raise MRNetError(f"{folder} holds no .png files")
    images, modes, size = [], set(), None
    for file in files:
        try:
            with Image.open(file) as image:
                modes.add(image.mode)
                pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255
        except (UnidentifiedImageError, OSError) as error:
            raise MRNetError(f"{file} is not a readable PNG ({error})") from None
        if size is None:
            size = pixels.shape
        elif pixels.shape != size:
            raise MRNetError(f"{file} is {pixels.shape[1]}x{pixels.shape[0]}, but the first PNG is {size[1]}x{size[0]}; "
                             "give images of one size")
        images.append(pixels)
    unit = torch.from_numpy(np.stack(images))[:, None]
    grey = "grey" if modes <= {"L", "I;16", "I"} else f"converted to grey from {'/'.join(sorted(modes))} (luma)"
    return _to_study(unit * 2 - 1, f"{len(files)} PNGs, {grey}")


def _read_array(path: Path) -> Samples:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if len(loaded.files) != 1:
                    raise MRNetError(f"{path} holds {len(loaded.files)} arrays ({', '.join(loaded.files)}); give one")
                loaded = loaded[loaded.files[0]]
    except (OSError, ValueError) as error:
        raise MRNetError(f"{path} is not a readable array file ({error})") from None
    array = np.asarray(loaded, dtype=np.float32)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] != 1 or array.shape[2] != array.shape[3]:
        raise MRNetError(f"{path} holds shape {array.shape}; give (N, H, W) or (N, 1, H, W) square grey images")
    if not np.isfinite(array).all():
        raise MRNetError(f"{path} holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low >= 0 and 1 < high <= 255:  # 8-bit values
        images, scale = torch.from_numpy(array) / 127.5 - 1, "0-255 mapped to [-1, 1]"
    elif low >= 0 and high <= 1:
        images, scale = torch.from_numpy(array) * 2 - 1, "[0, 1] mapped to [-1, 1]"
    elif low >= -1 and high <= 1:
        images, scale = torch.from_numpy(array), "[-1, 1] as given"
    else:
        raise MRNetError(f"{path} holds values in [{low:.3g}, {high:.3g}]; give [-1, 1], [0, 1] or 0-255")
    return _to_study(images, f"{len(array)} arrays, {scale}")


def _to_study(images: torch.Tensor, conversion: str) -> Samples:
    height, width = images.shape[-2:]
    if height != width:
        raise MRNetError(f"the samples are {width}x{height}; give square images (the study's slices are square)")
    if (height, width) != (SIDE, SIDE):
        images = resize(images, SIDE)
        conversion += f", resized {width}x{height} -> {SIDE}x{SIDE} (data.slices.resize)"
    return Samples(images.clamp(-1, 1), conversion)
