""".npy and .npz files read with their headers checked first, before a byte of their data is allocated.

A damaged or hostile file can claim any shape in its header (NEP 1, the .npy format): `np.load` then
asks for that much memory and fails with a MemoryError traceback, or takes the machine's memory. Here
each array's header is read on its own and handed to the caller's `accept(name, shape, dtype)`, which
refuses what it does not expect (a dtype, a shape) with one MRNetError line; the array is read only if
its size fits the memory this machine has available. Arrays are never unpickled. A file that is not an
array at all (no .npy header, a torn archive, data shorter than its header says) raises ValueError,
OSError, EOFError or zipfile.BadZipFile, for the caller to name in its own words. In an .npz archive,
compressed (deflated) entries are refused unless asked for: the project's writers store entries
uncompressed (`np.savez`), and a compressed entry can inflate far beyond its file's size.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import psutil

from mrnet_utils.errors import MRNetError

Accept = Callable[[str, tuple[int, ...], np.dtype], None]  # (array name, shape, dtype); raises MRNetError to refuse
NUMBERS = "biuf"  # dtype kinds that hold real numbers: bool, signed and unsigned integers, floats


def load_npy(path: str | Path, accept: Accept) -> np.ndarray:
    """The array of an .npy file, after `accept` and the memory check have passed its header."""
    path = Path(path)
    with open(path, "rb") as handle:
        _check(path, path.stem, handle, accept)
        handle.seek(0)
        return np.lib.format.read_array(handle, allow_pickle=False)


def load_npz(path: str | Path, accept: Accept, compressed: bool = False,
             names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive by name (only `names`, when given), each header passed by `accept`, their
    total size by the memory check, before any is read. Compressed entries are refused unless `compressed`."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        entries = [info for info in archive.infolist() if info.filename.endswith(".npy")]
        if len(entries) != len(archive.infolist()):
            raise ValueError("it holds files that are not .npy arrays")
        if names is not None:
            entries = [info for info in entries if info.filename[:-4] in names]
        total = 0
        for info in entries:
            if info.compress_type != zipfile.ZIP_STORED and not compressed:
                raise MRNetError(f"{path}: array {info.filename[:-4]} is stored compressed, which this file's "
                                 "writer never does; the file is corrupt or was made elsewhere: write it again")
            with archive.open(info) as member:
                total += _check(path, info.filename[:-4], member, accept, total)
        arrays = {}
        for info in entries:
            with archive.open(info) as member:
                arrays[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def numbers(path: Path, name: str, dtype: np.dtype) -> None:
    """Refuse a dtype that does not hold real numbers: strings, objects (pickles), complex numbers, records."""
    if dtype.kind not in NUMBERS or dtype.fields is not None:
        raise MRNetError(f"{path}: array {name} holds {dtype} values, not real numbers; give integers or floats")


def _check(path: Path, name: str, handle: BinaryIO, accept: Accept, before: int = 0) -> int:
    """Read one array's header from `handle`, pass it to `accept` and check its size; return its bytes."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(handle)
    accept(name, shape, dtype)
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = psutil.virtual_memory().available
    if before + size > available:
        raise MRNetError(f"{path}: array {name} claims {dtype} {shape} ({size / 2**30:.1f} GiB), more than the "
                         f"{available / 2**30:.1f} GiB of memory available here; the file is corrupt, or too large "
                         "for this machine")
    return size


__all__ = ["NUMBERS", "load_npy", "load_npz", "numbers"]
