"""Knee MRI volumes in any medical format, read through TorchIO into the same slice cache as MRNet's.

A volume folder holds one exam per entry: a NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MetaImage
(.mha) file, or a sub-folder holding one DICOM series. The entry's name without its extension
is the exam's name; exams named by digits alone (as MRNet's 0042) keep that number as their id,
others are numbered in the order of their names, and the cache's metadata maps each id to its name.
Which split an exam belongs to, and its labels, come from a CSV (`EXAM_TABLE` in the folder, or
any path) with a header row `exam,split` and, optionally, the three task columns of
`mrnet.TASKS` (0/1); without one, the last `VALID_FRACTION` of the names (sorted) form the
valid split, as MRNet's valid ids follow its train ids, and the cache is unlabelled.

Each volume is reoriented to RAS+ (TorchIO's `ToCanonical`: axes permuted and flipped, never
interpolated, so an oblique acquisition stays on its own grid), resampled in-plane to a stated
pixel size if asked (cubic B-spline with TorchIO's Gaussian antialiasing when it downsamples),
cropped or padded in-plane about its centre to 256 x 256 (padding with the volume's minimum), and
cut into slices of the requested plane laid out as MRNet's are (`DISPLAY`). From there the
series goes through the MRNet path's code (`preprocess.split_arrays`, `preprocess.write_cache`):
the same central slices, normalisation and cache.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from mrnet_utils.data import preprocess
from mrnet_utils.data.mrnet import PLANES, SIDE, SPLITS, TASKS, Exam, check_choice, iter_exams, read_labels
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import path_lock

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats; DICOM is a folder per series
EXAM_TABLE = "exams.csv"  # read from the volume folder when no other table is given
VALID_FRACTION = 0.2  # without a table: the share of exams (the last names) in the valid split
# Where the axes of a series of each plane point (slices, rows downwards, columns rightwards), as
# patient directions: MRNet's layout (coronal slices from posterior to anterior, sagittal slices with the
# front of the knee on the left, axial slices from the foot up; superior and anterior at the top). MRNet
# records no side: the patient's right is on the left of coronal and axial slices, as radiology shows
# them, and sagittal slices run from right to left. The phantom (`phantom.ORIENTATION`) is drawn in the
# same layout, its knees left or right.
DISPLAY = {"coronal": "AIL", "sagittal": "LIP", "axial": "SPL"}
_RAS = "RAS"
_OPPOSITE = dict(zip("RASLPI", "LPIRAS"))
SPACING_TOLERANCE = 0.01  # relative: spacings this close are the same
_DIGITS = re.compile(r"[0-9]+")


def display_axes(plane: str) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each axis of a series of `plane` (slices, rows, columns): the RAS+ axis it runs along and
    whether it runs against it (towards L, P or I)."""
    code = DISPLAY[check_choice(plane, PLANES, "plane")]
    axes = tuple(_RAS.index(letter if letter in _RAS else _OPPOSITE[letter]) for letter in code)
    return axes, tuple(letter not in _RAS for letter in code)


def display_affine(plane: str, pixel_size: float, slice_spacing: float) -> np.ndarray:
    """The RAS+ affine (4 x 4) of an array (slices, rows, columns) of `plane` laid out as `DISPLAY` says:
    what a series in MRNet's layout is, written as a volume (`write_volumes`)."""
    axes, flipped = display_axes(plane)
    affine = np.eye(4)
    affine[:3, :3] = 0
    for column, (axis, flip, step) in enumerate(zip(axes, flipped, (slice_spacing, pixel_size, pixel_size))):
        affine[axis, column] = -step if flip else step
    return affine


def exam_name(path: Path) -> str | None:
    """The exam name of a folder entry (its name without the volume suffix), None for a file of another kind."""
    if path.is_dir():
        return path.name
    lower = path.name.lower()
    suffix = next((suffix for suffix in SUFFIXES if lower.endswith(suffix)), None)
    return path.name[: -len(suffix)] if suffix else None


def list_volumes(folder: Path | str) -> dict[str, Path]:
    """{exam name: path} of the volumes in `folder`, sorted by name; any other file is an error.

    Hidden entries (names starting with '.') and the exam table are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MRNetError(f"volume folder {folder} does not exist; give a folder of NIfTI, NRRD or MHA volumes "
                         "or DICOM series folders")
    volumes: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name == EXAM_TABLE:
            continue
        name = exam_name(path)
        if name is None:
            raise MRNetError(f"{path} is not a volume ({', '.join(SUFFIXES)} or a DICOM series folder); "
                             f"move it out of {folder}")
        if name in volumes:
            raise MRNetError(f"{path} and {volumes[name]} are the same exam {name!r}; keep one")
        volumes[name] = path
    if not volumes:
        raise MRNetError(f"volume folder {folder} holds no volume ({', '.join(SUFFIXES)} or DICOM series folders)")
    return volumes


@contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's console warnings (its non-uniform-sampling warning is checked and raised here instead)."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_series(folder: Path):
    """The one DICOM series in `folder` as a TorchIO image; mixed series or unevenly spaced slices are errors."""
    import SimpleITK as sitk
    import torchio as tio

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise MRNetError(f"folder {folder} holds no DICOM series; a volume folder holds volume files "
                         "and one folder per DICOM series")
    if len(series) > 1:
        raise MRNetError(f"folder {folder} mixes {len(series)} DICOM series; give each series a folder of its own")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each file's tags, for the slice positions
    with _itk_warnings_off():  # ITK warns of any uneven spacing, however small; checked below with a tolerance
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise MRNetError(f"DICOM series in {folder} cannot be read ({str(error).strip().splitlines()[-1]})") from None
    # Where each slice lies along the series' normal (Image Position (Patient), 0020|0032), in the reader's order.
    normal = np.reshape(image.GetDirection(), (3, 3))[:, 2]
    positions = [np.array(reader.GetMetaData(index, "0020|0032").split("\\"), float) @ normal
                 for index in range(len(files)) if reader.HasMetaDataKey(index, "0020|0032")]
    gaps = np.diff(positions)
    if len(gaps) > 1 and np.ptp(gaps) > SPACING_TOLERANCE * abs(gaps.mean()):
        raise MRNetError(f"DICOM series in {folder} has uneven slice spacing ({abs(gaps).min():.3g} to "
                         f"{abs(gaps).max():.3g} mm: missing or irregular slices); give a complete, evenly spaced series")
    return tio.ScalarImage.from_sitk(image)


def _read_image(path: Path):
    """A TorchIO image of one volume entry, checked to be one 3-D volume."""
    import torchio as tio

    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        image = tio.ScalarImage(path)
        try:
            with _itk_warnings_off(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchIO's "trying NiBabel" after SimpleITK fails
                image.load()
        except Exception as error:  # SimpleITK and NiBabel raise several types for a file they cannot parse
            raise MRNetError(f"{path} cannot be read as a volume ({type(error).__name__}); check the file") from None
    channels, *shape = image.shape
    if channels != 1:
        raise MRNetError(f"{path} holds {channels} channels or volumes; give one 3-D volume per exam")
    if min(shape) == 1:
        raise MRNetError(f"{path} is a 2-D image (shape {'x'.join(map(str, shape))}); give 3-D volumes")
    return image


def _canonical(path: Path):
    """The volume at `path` as a TorchIO image in RAS+ (axes permuted and flipped, not interpolated)."""
    import torchio as tio

    return tio.ToCanonical()(_read_image(path))


def _series(image, plane: str, pixel_size: float | None) -> np.ndarray:
    """The slices of `plane` of a RAS+ image, resampled in-plane to `pixel_size` (mm) unless None, cropped or
    padded about their centre to SIDE x SIDE, as an array (slices, rows, columns) laid out as `DISPLAY` says."""
    import torchio as tio

    axes, flipped = display_axes(plane)
    if pixel_size is not None:
        target = list(image.spacing)
        target[axes[1]] = target[axes[2]] = pixel_size
        downsampling = pixel_size > min(image.spacing[axes[1]], image.spacing[axes[2]])
        image = tio.Resample(tuple(target), image_interpolation="bspline", antialias=downsampling)(image)
    shape = list(image.spatial_shape)
    shape[axes[1]] = shape[axes[2]] = SIDE
    image = tio.CropOrPad(tuple(shape), padding_mode=float(image.data.min()))(image)
    series = image.data[0].numpy().transpose(axes)
    return np.ascontiguousarray(np.flip(series, [axis for axis, flip in enumerate(flipped) if flip]))


def _plane_spacing(image, plane: str) -> tuple[float, float, float]:
    """The spacing (mm) of a RAS+ image along the slices, rows and columns of `plane`."""
    return tuple(float(image.spacing[axis]) for axis in display_axes(plane)[0])


def read_volume(path: Path | str, plane: str, pixel_size: float | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """One exam's series of `plane`, (slices, 256, 256) laid out as `DISPLAY` says, and its spacing in mm
    (slices, rows, columns) before any resampling.

    pixel_size: resample in-plane to this pixel size (mm); None keeps the volume's pixels, which must then be
        square. Either way the slices are cropped or padded about their centre to 256 x 256.
    """
    path = Path(path)
    image = _canonical(path)
    spacing = _plane_spacing(image, plane)
    if pixel_size is None and not math.isclose(spacing[1], spacing[2], rel_tol=SPACING_TOLERANCE):
        raise MRNetError(f"{path} has {spacing[1]:.3g} x {spacing[2]:.3g} mm pixels in its {plane} slices; "
                         "give pixel_size (--pixel-size MM) to resample them to square pixels")
    return _series(image, plane, pixel_size), spacing


def write_volumes(mrnet_root: Path | str, plane: str, out: Path | str, suffix: str = ".nii.gz",
                  pixel_size: float = 0.6, slice_spacing: float = 3.0, max_exams: int | None = None) -> Path:
    """Write each exam's series of `plane` in an MRNet folder (or the phantom) as a volume file in `out`
    (at most `max_exams` per split, the lowest ids), with `EXAM_TABLE` giving its split and labels; return `out`.

    The series are placed in space as `DISPLAY` says, so that `preprocess_volumes` on `out` gives the cache
    that `preprocess.preprocess` gives on the MRNet folder. MRNet records no spacing: `pixel_size` and
    `slice_spacing` (mm) are nominal values of a clinical knee protocol (a 15 cm field of view, 3 mm slices).
    """
    import torchio as tio

    check_choice(suffix, SUFFIXES, "suffix")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    affine = display_affine(plane, pixel_size, slice_spacing)
    rows = []
    for split in SPLITS:
        for exam in iter_exams(mrnet_root, split, plane, sorted(read_labels(mrnet_root, split))[:max_exams]):
            tio.ScalarImage(tensor=exam.volume[None], affine=affine).save(out / f"{exam.exam_id:04d}{suffix}")
            rows.append([f"{exam.exam_id:04d}", split, *(exam.labels[task] for task in TASKS)])
    with open(out / EXAM_TABLE, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([["exam", "split", *TASKS], *rows])
    return out


def read_exam_table(path: Path | str, names: list[str]) -> tuple[dict[str, str], dict[str, dict[str, int]] | None]:
    """{name: split} of the exams `names` from an exam table, and {name: labels} if it has the task columns.

    Every exam must have one row, and every row a volume.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: drops Excel's byte-order mark
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise MRNetError(f"exam table {path} cannot be read ({error})") from None
    header = [field.strip() for field in table[0]] if table else []
    if header not in (["exam", "split"], ["exam", "split", *TASKS]):
        raise MRNetError(f"exam table {path} must start with the header exam,split or exam,split,{','.join(TASKS)}")
    splits: dict[str, str] = {}
    labels: dict[str, dict[str, int]] = {}
    for number, row in enumerate(table[1:], start=2):
        fields = [field.strip() for field in row]
        if not any(fields):
            continue
        where = f"exam table {path}, line {number}"
        if len(fields) != len(header):
            raise MRNetError(f"{where}: {len(fields)} columns, expected {len(header)} ({','.join(header)})")
        name, split, *values = fields
        check_choice(split, SPLITS, f"{where}: split")
        if any(value not in ("0", "1") for value in values):
            raise MRNetError(f"{where}: labels must be 0 or 1, not {','.join(values)}")
        if name in splits:
            raise MRNetError(f"{where}: exam {name!r} is listed twice")
        splits[name] = split
        labels[name] = {task: int(value) for task, value in zip(TASKS, values)}
    missing = [name for name in names if name not in splits]
    if missing:
        raise MRNetError(f"exam {missing[0]!r} has a volume but no row in exam table {path} ({len(missing)} such "
                         "exams); add its row or move its volume out")
    unknown = sorted(set(splits) - set(names))
    if unknown:
        raise MRNetError(f"exam {unknown[0]!r} of exam table {path} has no volume ({len(unknown)} such rows)")
    return splits, labels if len(header) > 2 else None


def split_by_rule(names: list[str], valid_fraction: float) -> dict[str, str]:
    """{name: split}: the last `valid_fraction` of the sorted names (at least one) valid, the others train."""
    if not 0 < valid_fraction < 1:
        raise MRNetError(f"valid_fraction must be between 0 and 1, not {valid_fraction}")
    if len(names) < 2:
        raise MRNetError(f"{len(names)} exam cannot be split into train and valid; give at least 2")
    valid = max(1, min(len(names) - 1, round(valid_fraction * len(names))))
    ordered = sorted(names)
    return {name: "valid" if index >= len(names) - valid else "train" for index, name in enumerate(ordered)}


def exam_ids(names: list[str]) -> dict[str, int]:
    """{name: id}: the number itself when every name is digits (as MRNet's), else the place in sorted order."""
    if all(_DIGITS.fullmatch(name) for name in names) and len({int(name) for name in names}) == len(names):
        return {name: int(name) for name in names}
    return {name: index for index, name in enumerate(sorted(names))}


def preprocess_volumes(
    folder: Path | str,
    plane: str,
    out: Path | str,
    exams: Path | str | None = None,
    valid_fraction: float = VALID_FRACTION,
    pixel_size: float | None = None,
    selection: str = "all",
    central_slices: int | None = 5,
    max_exams: int | None = None,
    progress: bool = True,
    normalisation: str = "series",
) -> Path:
    """Write the slice cache of one plane of a folder of volumes and return its path.

    exams: the exam table (CSV; default: `EXAM_TABLE` in `folder` if there is one); without one, the split
        follows `valid_fraction` and the cache is unlabelled (selection must then be "all").
    pixel_size: in-plane pixel size to resample to (mm). None keeps the volumes' own, which must then be
        square and the same in every volume: a cache mixes no pixel sizes.
    selection, central_slices, max_exams, normalisation: as `preprocess.preprocess`.
    """
    folder = Path(folder)
    preprocess.check_settings(plane, selection, normalisation, central_slices, max_exams)
    if pixel_size is not None and not pixel_size > 0:
        raise MRNetError(f"pixel_size must be a positive number of mm, or None, not {pixel_size}")
    volumes = list_volumes(folder)
    names = list(volumes)
    split_of, labels_of, split_rule = _splits(folder, names, exams, valid_fraction, selection)
    out = preprocess.check_output(out)
    ids = exam_ids(names)
    name_of = {exam_id: name for name, exam_id in ids.items()}
    no_labels = dict.fromkeys(TASKS, 0)
    spacings: dict[str, tuple[float, ...]] = {}

    def series(split: str, wanted: list[int]) -> Iterator[Exam]:
        """The exams `wanted` of `split`, read in turn; without pixel_size, each with the first one's pixels."""
        for exam_id in wanted:
            name = name_of[exam_id]
            volume, spacings[name] = read_volume(volumes[name], plane, pixel_size)
            first = next(iter(spacings))
            if pixel_size is None and not math.isclose(spacings[name][1], spacings[first][1], rel_tol=SPACING_TOLERANCE):
                raise MRNetError(f"{volumes[name]} has {spacings[name][1]:.3g} mm pixels, {volumes[first]} "
                                 f"{spacings[first][1]:.3g} mm; give pixel_size (--pixel-size MM) to resample them to one")
            yield Exam(exam_id, split, plane, volume, labels_of[name] if labels_of else no_labels)

    with path_lock(out, "out_dir"):  # one writer, as preprocess.preprocess
        splits = {}
        for split in SPLITS:
            members = {ids[name]: labels_of[name] if labels_of else no_labels
                       for name in sorted(names, key=ids.get) if split_of[name] == split}
            if not members:
                raise MRNetError(f"no exam of {folder} is in the {split} split ({split_rule}); every split needs one")
            wanted = preprocess.select_exams(members, selection, max_exams)
            if not wanted:
                raise MRNetError(f"no {split} exam of {folder} is positive for {selection!r}; choose another "
                                 "selection, or 'all'")
            splits[split] = preprocess.split_arrays(series(split, wanted), len(wanted), f"{split} {plane}",
                                                    lambda exam: volumes[name_of[exam.exam_id]],
                                                    central_slices, normalisation, progress)
        metadata = dict(plane=plane, selection=selection, normalisation=normalisation, central_slices=central_slices,
                        source=str(folder.resolve()), labelled=labels_of is not None, format="volumes",
                        orientation=DISPLAY[plane], pixel_size=round(pixel_size or next(iter(spacings.values()))[1], 6),
                        resampled=pixel_size is not None, split_rule=split_rule,
                        exams={str(exam_id): name for exam_id, name in sorted(name_of.items())})
        return preprocess.write_cache(out, splits, metadata)


def _splits(folder: Path, names: list[str], exams: Path | str | None, valid_fraction: float, selection: str,
            ) -> tuple[dict[str, str], dict[str, dict[str, int]] | None, str]:
    """Each volume's split and labels (None: unlabelled), and the rule that split them: the exam table
    (`exams`, else `EXAM_TABLE` in `folder` if there is one), else the last `valid_fraction` of the names."""
    table = Path(exams) if exams is not None else folder / EXAM_TABLE
    if exams is not None or table.is_file():
        split_of, labels_of = read_exam_table(table, names)
        split_rule = f"exam table {table.resolve()}"
    else:
        split_of, labels_of = split_by_rule(names, valid_fraction), None
        split_rule = f"the last {valid_fraction:g} of the exam names (sorted) are valid"
    if labels_of is None and selection != "all":
        raise MRNetError(f"selection {selection!r} needs labels; give an exam table with the columns "
                         f"exam,split,{','.join(TASKS)}, or selection 'all'")
    return split_of, labels_of, split_rule


def plane_examples(folder: Path | str, count: int, pixel_size: float | None = None) -> dict[str, list[np.ndarray]]:
    """The central slice of each plane of the first `count` volumes (sorted names), not normalised.

    In-plane pixels are resampled to `pixel_size`, or where a plane's are not square (a plane the volume
    was not acquired in) to the finer of their two sides, so that the anatomy keeps its proportions.
    """
    import torchio as tio

    examples: dict[str, list[np.ndarray]] = {plane: [] for plane in PLANES}
    for path in list(list_volumes(folder).values())[:count]:
        image = _canonical(path)
        for plane in PLANES:
            (axis, *_), (flipped, *_) = display_axes(plane)
            slices = image.spatial_shape[axis]
            centre = slices - 1 - slices // 2 if flipped else slices // 2  # the series' slices // 2, in RAS+
            # Resample only a slab around it (antialiasing filters need 4 voxels along every axis).
            first, last = max(0, centre - 2), min(slices - 1, centre + 2)
            cropping = [0] * 6
            cropping[2 * axis], cropping[2 * axis + 1] = first, slices - 1 - last
            _, rows, columns = _plane_spacing(image, plane)
            square = math.isclose(rows, columns, rel_tol=SPACING_TOLERANCE)
            slab = _series(tio.Crop(tuple(cropping))(image), plane, pixel_size or (None if square else min(rows, columns)))
            examples[plane].append(slab[last - centre if flipped else centre - first])
    return examples


__all__ = ["SUFFIXES", "EXAM_TABLE", "VALID_FRACTION", "DISPLAY", "display_axes", "display_affine", "exam_name",
           "list_volumes", "read_volume", "write_volumes", "read_exam_table", "split_by_rule", "exam_ids",
           "preprocess_volumes", "plane_examples"]
