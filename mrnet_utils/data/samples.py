"""Anyone's generated samples, read as the study's model-space 256x256 images.

`read_samples` takes a folder of PNG files or one array file (.npy, or .npz with one array)
and returns model-space images (N, 1, 256, 256) in [-1, 1], saying what it did to them:
colour PNGs are converted to grey with PIL's ITU-R 601-2 luma ("L" mode), 16-bit PNGs are
read at their full depth (0-65535 mapped to [-1, 1]), and images of another size are resized
with the study's resizing path (`data.slices.resize`), so that another model's samples can be
scored on the study's real slices (study.generation.score_samples).

A folder written by `sample` (pipeline.write_samples) is read only when complete (its
files.COMPLETE_FILE, checked by files.check_complete), and only its `sample_*.png` files (not its
grid). A folder of PNGs from elsewhere has no marker and is read whole; one that holds the
writer's own files (samples.json, samples.npy) without the marker is a torn write and is refused.
Files that cannot be samples are refused in one line before they are decoded: non-regular files
(a FIFO would block), images larger than MAX_SIDE a side (a decompression bomb), arrays whose
header claims more than the memory available (data.arrays), and arrays that are empty or hold
strings, objects or complex numbers.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mrnet_utils.data.arrays import load_npy, load_npz, numbers
from mrnet_utils.data.slices import resize
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import COMPLETE_FILE, check_complete

SIDE = 256  # the study scores 256x256 images
MAX_SIDE = 4096  # larger images are refused before they are decoded
WRITER_FILES = ("samples.json", "samples.npy")  # pipeline.write_samples's, beside its PNGs
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")  # PIL's modes of a 16-bit grey PNG


@dataclass(frozen=True)
class Samples:
    images: torch.Tensor  # (N, 1, 256, 256) in [-1, 1]
    conversion: str  # what was done to the files, for the table


def read_samples(path: str | Path) -> Samples:
    """Generated images from a folder of PNGs (sorted by name) or an array file, as model-space 256x256."""
    path = Path(path)
    if not path.exists() and not path.suffix:  # a missing folder: says why, if a writer left it aside
        check_complete(path, "samples folder", "sample them again")
    if path.is_dir():
        return _read_pngs(path)
    if path.suffix in (".npy", ".npz") and path.is_file():
        return _read_array(path)
    if path.exists() and path.suffix in (".npy", ".npz"):
        raise MRNetError(f"{path} is not a regular file (a FIFO or device); give an .npy/.npz array file")
    raise MRNetError(f"{path} is neither a folder of PNG files nor an .npy/.npz array file")


def _read_pngs(folder: Path) -> Samples:
    if (folder / COMPLETE_FILE).exists():
        check_complete(folder, "samples folder", "sample them again")
        pattern = "sample_*.png"
    elif any((folder / name).exists() for name in WRITER_FILES):
        raise MRNetError(f"samples folder {folder} has no {COMPLETE_FILE}: the `sample` that wrote it did not finish "
                         "(or an older version wrote it); sample again into a new --out, or with --overwrite")
    else:
        pattern = "*.png"
    files = sorted(folder.glob(pattern), key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)])
    if not files:
        raise MRNetError(f"{folder} holds no .png files")
    images, modes, size = [], set(), None
    for file in files:
        pixels, mode = _read_png(file)
        modes.add(mode)
        if size is None:
            size = pixels.shape
        elif pixels.shape != size:
            raise MRNetError(f"{file} is {pixels.shape[1]}x{pixels.shape[0]}, but the first PNG is {size[1]}x{size[0]}; "
                             "give images of one size")
        images.append(pixels)
    unit = torch.from_numpy(np.stack(images))[:, None]
    if modes <= {"L", *_SIXTEEN_BIT}:
        grey = "grey" + (", 16-bit read at full depth" if modes & set(_SIXTEEN_BIT) else "")
    else:
        grey = f"converted to grey from {'/'.join(sorted(modes))} (luma)"
    return _to_study(unit * 2 - 1, f"{len(files)} PNGs, {grey}")


def _read_png(file: Path) -> tuple[np.ndarray, str]:
    """One PNG as grey values in [0, 1] (float32) and its PIL mode; size and kind checked before decoding."""
    if not file.is_file():
        raise MRNetError(f"{file} is not a regular file (a folder, FIFO or device); move it out of {file.parent}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                if max(image.size) > MAX_SIDE:
                    raise MRNetError(f"{file} is {image.size[0]}x{image.size[1]}; samples larger than {MAX_SIDE} "
                                     "pixels a side are refused (a decompression bomb, or not a sample)")
                if image.mode in _SIXTEEN_BIT:
                    return np.asarray(image, dtype=np.float32) / 65535, image.mode
                return np.asarray(image.convert("L"), dtype=np.float32) / 255, image.mode
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MRNetError(f"{file} is not a readable PNG ({error})") from None


def _read_array(path: Path) -> Samples:
    def accept(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        numbers(path, name, dtype)
        if len(shape) not in (3, 4) or not all(shape):
            raise MRNetError(f"{path} holds shape {shape}; give (N, H, W) or (N, 1, H, W) square grey images, N > 0")
        if max(shape[-2:]) > MAX_SIDE:
            raise MRNetError(f"{path} holds {shape[-1]}x{shape[-2]} images; samples larger than {MAX_SIDE} pixels "
                             "a side are refused")

    try:
        if path.suffix == ".npz":
            arrays = load_npz(path, accept, compressed=True)  # np.savez_compressed is a fine way to hand samples over
            if len(arrays) != 1:
                raise MRNetError(f"{path} holds {len(arrays)} arrays ({', '.join(arrays)}); give one")
            loaded = next(iter(arrays.values()))
        else:
            loaded = load_npy(path, accept)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MRNetError(f"{path} is not a readable array file ({error})") from None
    array = np.asarray(loaded, dtype=np.float32)
    if array.ndim == 3:
        array = array[:, None]
    if array.shape[1] != 1 or array.shape[2] != array.shape[3]:
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
