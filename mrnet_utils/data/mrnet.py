"""Reading an MRNet folder (Bien et al., PLoS Medicine 2018), with every check a user needs.

The layout, as unzipped from Stanford's archive (or written by `phantom.write_phantom`):

    ROOT/{train,valid}/{axial,coronal,sagittal}/NNNN.npy   uint8 (slices, 256, 256)
    ROOT/{train,valid}-{abnormal,acl,meniscus}.csv         no header, rows `NNNN,label`, label 0/1

Every exam of a split has one row in each of the three label files of that split and
one volume in each plane folder. Anything else raises `MRNetError` naming the file at
fault, so that a broken download is found here and not as a shape error hours later.
Label files saved by Excel (UTF-8 with a byte-order mark, CRLF line ends) read as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mrnet_utils.data.arrays import load_npy
from mrnet_utils.errors import MRNetError

SPLITS = ("train", "valid")
PLANES = ("axial", "coronal", "sagittal")
TASKS = ("abnormal", "acl", "meniscus")  # also the column order of every label array
SIDE = 256  # MRNet slices are SIDE x SIDE
_VOLUME_NAME = re.compile(r"[0-9]{4}\.npy")  # ASCII digits only: str.isdigit() and int() also take '²' or '٣'
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Exam:
    """One series of one exam: the volume of one plane and the exam's three labels."""

    exam_id: int
    split: str
    plane: str
    volume: np.ndarray  # (slices, 256, 256): uint8 from MRNet, the stored type of other formats (data.volumes)
    labels: dict[str, int]  # keys TASKS


def check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    """Return `value` if it is one of `choices`, else raise MRNetError listing them."""
    if value not in choices:
        raise MRNetError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def labels_path(root: Path | str, split: str, task: str) -> Path:
    return Path(root) / f"{split}-{task}.csv"


def volume_path(root: Path | str, split: str, plane: str, exam_id: int) -> Path:
    return Path(root) / split / plane / f"{exam_id:04d}.npy"


def _check_root(root: Path | str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise MRNetError(
            f"MRNet folder {root} does not exist; give the unzipped MRNet-v1.0 folder "
            "or write a synthetic one with mrnet_utils.data.phantom.write_phantom"
        )
    return root


def _read_label_file(path: Path) -> dict[int, int]:
    """Rows `id,label` of one label CSV as {id: label}."""
    _check_regular(path)
    if not path.is_file():
        raise MRNetError(f"label file {path} is missing; MRNet has one CSV per split and task (id,label rows)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: drops Excel's byte-order mark
    except (OSError, UnicodeDecodeError) as error:
        raise MRNetError(f"label file {path} cannot be read ({error}); restore it from the MRNet archive") from None
    labels: dict[int, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        where = f"label file {path}, line {number}"
        if len(fields) != 2:
            raise MRNetError(f"{where}: {len(fields)} columns, expected 2 (id,label) without a header")
        if not all(_INTEGER.fullmatch(field) for field in fields):
            raise MRNetError(f"{where}: {line.strip()!r} is not two integers id,label")
        exam_id, label = int(fields[0]), int(fields[1])
        if exam_id < 0:
            raise MRNetError(f"{where}: exam id {exam_id} is negative")
        if label not in (0, 1):
            raise MRNetError(f"{where}: label {label} for exam {exam_id:04d} is not 0 or 1")
        if exam_id in labels:
            raise MRNetError(f"{where}: exam {exam_id:04d} is listed twice")
        labels[exam_id] = label
    if not labels:
        raise MRNetError(f"label file {path} is empty; it should list every exam of the split as id,label")
    return labels


def read_labels(root: Path | str, split: str) -> dict[int, dict[str, int]]:
    """{exam_id: {'abnormal': 0/1, 'acl': 0/1, 'meniscus': 0/1}} for one split, checked."""
    root = _check_root(root)
    check_choice(split, SPLITS, "split")
    per_task = {task: _read_label_file(labels_path(root, split, task)) for task in TASKS}
    first = labels_path(root, split, TASKS[0])
    for task in TASKS[1:]:
        differ = set(per_task[task]) ^ set(per_task[TASKS[0]])
        if differ:
            raise MRNetError(
                f"label files {first} and {labels_path(root, split, task)} list different exams "
                f"(e.g. {min(differ):04d}); every exam must appear in all three"
            )
    return {exam_id: {task: per_task[task][exam_id] for task in TASKS} for exam_id in sorted(per_task[TASKS[0]])}


def _volume_files(root: Path, split: str, plane: str) -> dict[int, Path]:
    """{exam_id: path} of the .npy volumes in one plane folder."""
    folder = root / split / plane
    if not folder.is_dir():
        raise MRNetError(f"folder {folder} is missing; MRNet has {split}/{{{','.join(PLANES)}}}/NNNN.npy")
    files: dict[int, Path] = {}
    for path in sorted(folder.glob("*.npy")):
        if not _VOLUME_NAME.fullmatch(path.name):
            raise MRNetError(f"{path} is not named like an MRNet volume (NNNN.npy, four digits); move it out of {folder}")
        _check_regular(path)
        exam_id = int(path.stem)
        if exam_id in files:
            raise MRNetError(f"{path} and {files[exam_id]} are the same exam {exam_id:04d}; keep one")
        files[exam_id] = path
    return files


def list_exam_ids(root: Path | str, split: str, plane: str) -> list[int]:
    """Sorted ids of the volumes of one split and plane (volumes only; labels are not read)."""
    root = _check_root(root)
    check_choice(split, SPLITS, "split")
    check_choice(plane, PLANES, "plane")
    return sorted(_volume_files(root, split, plane))


def load_volume(path: Path | str) -> np.ndarray:
    """One MRNet volume, checked to be uint8 (slices, 256, 256) from its header before it is read; never unpickles."""
    path = Path(path)

    def accept(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype != np.uint8 or len(shape) != 3 or shape[1:] != (SIDE, SIDE) or not shape[0]:
            raise MRNetError(f"{path} holds {dtype} {shape}; an MRNet volume is uint8 (slices, {SIDE}, {SIDE})")

    _check_regular(path)
    try:
        with open(path, "rb") as handle:
            if handle.read(4) == b"PK\x03\x04":  # an .npz archive (a zip file) renamed to .npy
                raise MRNetError(f"{path} is an .npz archive, not one .npy volume; restore it from the MRNet archive")
        return load_npy(path, accept)
    except (OSError, ValueError, EOFError) as error:
        raise MRNetError(f"{path} is not a readable .npy volume ({error}); restore it from the MRNet archive") from None


def _check_regular(path: Path) -> None:
    """Refuse what is not a regular file (a FIFO, a device, a folder), which reading could block on or never end."""
    if path.exists() and not path.is_file():
        raise MRNetError(f"{path} is not a regular file (a folder, FIFO or device); move it out of {path.parent}")


def iter_exams(
    root: Path | str, split: str, plane: str, exam_ids: Iterable[int] | None = None
) -> Iterator[Exam]:
    """Yield the exams of one split and plane (all, or `exam_ids` in the order given), checked.

    Labels and volumes are matched when this is called, before any volume is read: an
    id with a label but no volume, or a volume with no label, is an error naming the
    file. Each volume is loaded and checked as the iterator reaches it.
    """
    root = _check_root(root)
    check_choice(plane, PLANES, "plane")
    labels = read_labels(root, split)
    files = _volume_files(root, split, plane)
    no_volume = sorted(set(labels) - set(files))
    if no_volume:
        raise MRNetError(
            f"{volume_path(root, split, plane, no_volume[0])} is missing but exam {no_volume[0]:04d} is in "
            f"{labels_path(root, split, TASKS[0])} ({len(no_volume)} such exams)"
        )
    no_label = sorted(set(files) - set(labels))
    if no_label:
        raise MRNetError(
            f"{files[no_label[0]]} has no row in {labels_path(root, split, TASKS[0])} "
            f"({len(no_label)} such volumes); add its labels or remove it"
        )
    wanted = sorted(labels) if exam_ids is None else [int(exam_id) for exam_id in exam_ids]
    unknown = [exam_id for exam_id in wanted if exam_id not in labels]
    if unknown:
        raise MRNetError(f"exam id {unknown[0]} is not in the {split} split of {root}")
    # A generator of its own, so that the checks above run when iter_exams is called.
    return (Exam(exam_id, split, plane, load_volume(files[exam_id]), labels[exam_id]) for exam_id in wanted)


__all__ = [
    "SPLITS",
    "PLANES",
    "TASKS",
    "SIDE",
    "Exam",
    "check_choice",
    "labels_path",
    "volume_path",
    "read_labels",
    "list_exam_ids",
    "load_volume",
    "iter_exams",
]
