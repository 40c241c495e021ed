"""Volumes in medical formats (data.volumes): orientation, formats, splits, errors, and the same cache as MRNet's."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torchio as tio

from mrnet_utils import cli
from mrnet_utils.data import volumes
from mrnet_utils.data.mrnet import PLANES, SPLITS, TASKS
from mrnet_utils.data.preprocess import preprocess
from mrnet_utils.data.slices import load_cache
from mrnet_utils.errors import MRNetError

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = Path(os.environ.get("MRNET_SAMPLE", ROOT.parent / "shared/mrnet-sample/MRNet-v1.0"))
needs_real_sample = pytest.mark.skipif(not REAL_SAMPLE.is_dir(), reason=f"real MRNet sample {REAL_SAMPLE} is absent "
                                       "(not part of a clone; set MRNET_SAMPLE to use another copy)")


def write_dicom_series(image: tio.ScalarImage, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.1") -> Path:
    """Write a TorchIO image as a DICOM series, one file per slice along its third axis, in reverse order."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.Cast(image.as_sitk(), sitk.sitkInt16)
    direction = volume.GetDirection()  # columns of the 3 x 3 direction matrix, row-major
    orientation = "\\".join(f"{value:.6f}" for value in (*direction[0::3], *direction[1::3]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in reversed(range(volume.GetDepth())):  # file order must not matter: the reader sorts by position
        plane = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.9", "0020|000e": series_uid,
                "0020|0013": str(k + 1), "0020|0032": "\\".join(f"{value:.6f}" for value in position),
                "0020|0037": orientation}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}.{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


def write_as_dicom(nifti_folder: Path, out: Path, orientation: str = "LPS") -> Path:
    """Each volume of a folder as a DICOM series folder (stored in `orientation`), the exam table copied."""
    out.mkdir()
    for path in sorted(nifti_folder.glob("*.nii*")):
        image = tio.ToOrientation(orientation)(tio.ScalarImage(path))
        write_dicom_series(image, out / volumes.exam_name(path))
    shutil.copy(nifti_folder / volumes.EXAM_TABLE, out)
    return out


def arrays(cache_path: Path) -> dict:
    cache = load_cache(cache_path)
    return {split: cache[split] for split in SPLITS} | {"digest": cache["digest"], "metadata": cache["metadata"]}


def assert_same_cache(a: dict, b: dict) -> None:
    for split in SPLITS:
        for field, array in a[split].items():
            np.testing.assert_array_equal(array, b[split][field], err_msg=f"{split}_{field}")
    assert a["digest"] == b["digest"]


# ---------------------------------------------------------------------------
# Orientation: where each patient direction lands, whatever the storage order
# ---------------------------------------------------------------------------

MARKERS = {"centre": 10, "R": 20, "A": 30, "S": 40}  # values of four small blocks in an otherwise empty volume


def marked_volume() -> tio.ScalarImage:
    """A RAS+ volume (1 mm voxels, 30 x 40 x 50) with a block at its centre and one towards the patient's
    right, front and top: asymmetric, so that any flip or transposition moves a block."""
    data = np.zeros((30, 40, 50), np.int16)
    data[13:17, 18:22, 23:27] = MARKERS["centre"]
    data[25:29, 18:22, 23:27] = MARKERS["R"]
    data[13:17, 34:38, 23:27] = MARKERS["A"]
    data[13:17, 18:22, 43:47] = MARKERS["S"]
    return tio.ScalarImage(tensor=torch.from_numpy(data)[None], affine=np.diag([1.0, 1.0, 1.0, 1.0]))


def position(series: np.ndarray, marker: str) -> np.ndarray:
    """Mean (slice, row, column) of a marker block."""
    return np.argwhere(series == MARKERS[marker]).mean(axis=0)


@pytest.mark.parametrize("plane, expected", [
    # (axis of the series, sign of the marker's offset from the centre) for the R, A and S blocks
    ("coronal", {"R": (2, -1), "A": (0, +1), "S": (1, -1)}),  # right on the image's left; slices to the front
    ("sagittal", {"R": (0, -1), "A": (2, -1), "S": (1, -1)}),  # slices from right to left; front on the left
    ("axial", {"R": (2, -1), "A": (1, -1), "S": (0, +1)}),  # seen from the feet: front at the top
])
def test_each_patient_direction_lands_where_mrnets_layout_has_it(tmp_path, plane, expected):
    marked_volume().save(tmp_path / "knee.nii.gz")
    series, spacing = volumes.read_volume(tmp_path / "knee.nii.gz", plane)
    assert series.shape[1:] == (256, 256) and spacing == (1.0, 1.0, 1.0)
    centre = position(series, "centre")
    for marker, (axis, sign) in expected.items():
        offset = position(series, marker) - centre
        assert np.sign(offset[axis]) == sign and abs(offset[axis]) >= 10, (marker, offset)
        assert np.count_nonzero(offset) == 1, (marker, offset)  # moved along that axis only


@pytest.mark.parametrize("orientation", ["LPS", "PIR", "SLA", "RAS"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", "dicom"])
def test_the_series_does_not_depend_on_how_the_volume_is_stored(tmp_path, orientation, suffix):
    image = marked_volume()
    reference = {plane: volumes.read_volume(save(image, tmp_path / "ras", ".nii.gz"), plane)[0] for plane in PLANES}
    stored = save(tio.ToOrientation(orientation)(image), tmp_path / "stored", suffix)
    for plane in PLANES:
        np.testing.assert_array_equal(volumes.read_volume(stored, plane)[0], reference[plane], err_msg=plane)


def save(image: tio.ScalarImage, stem: Path, suffix: str) -> Path:
    if suffix == "dicom":
        return write_dicom_series(image, stem)
    path = stem.with_name(stem.name + suffix)
    image.save(path)
    return path


def test_display_affine_places_an_mrnet_series_as_display_says():
    for plane in PLANES:
        affine = volumes.display_affine(plane, 0.5, 3.0)
        image = tio.ScalarImage(tensor=torch.zeros(1, 2, 2, 2), affine=affine)
        assert "".join(image.orientation) == volumes.DISPLAY[plane]
        assert np.allclose(np.abs(affine[:3, :3]).sum(axis=0), [3.0, 0.5, 0.5])


# ---------------------------------------------------------------------------
# The same cache as the MRNet path, from every format
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("plane", PLANES)
def test_nifti_volumes_of_the_phantom_give_the_mrnet_paths_cache(tiny_phantom, tmp_path, plane):
    folder = volumes.write_volumes(tiny_phantom, plane, tmp_path / "nifti", ".nii", max_exams=2)
    expected = arrays(preprocess(tiny_phantom, plane, tmp_path / "mrnet.npz", max_exams=2, progress=False))
    got = arrays(volumes.preprocess_volumes(folder, plane, tmp_path / "volumes.npz", progress=False))
    assert_same_cache(expected, got)
    assert got["metadata"]["labelled"] and got["metadata"]["orientation"] == volumes.DISPLAY[plane]
    assert got["metadata"]["pixel_size"] == pytest.approx(0.6) and not got["metadata"]["resampled"]


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", "dicom"])
def test_other_formats_of_the_phantom_give_the_mrnet_paths_cache(tiny_phantom, tmp_path, suffix):
    """One task's positives (seed 0 has meniscus positives in both splits), as DICOM, NRRD and MHA."""
    nifti = volumes.write_volumes(tiny_phantom, "coronal", tmp_path / "nifti", ".nii")
    if suffix == "dicom":
        folder = write_as_dicom(nifti, tmp_path / "dicom")
    else:
        folder = volumes.write_volumes(tiny_phantom, "coronal", tmp_path / "other", suffix=suffix)
    expected = arrays(preprocess(tiny_phantom, "coronal", tmp_path / "mrnet.npz", "meniscus", progress=False))
    got = arrays(volumes.preprocess_volumes(folder, "coronal", tmp_path / "volumes.npz", selection="meniscus",
                                            progress=False))
    assert_same_cache(expected, got)


@needs_real_sample
def test_real_exams_written_as_volumes_give_the_mrnet_paths_cache(tmp_path):
    """Three real exams of each split (never committed: written to a temporary folder) through both paths."""
    nifti = volumes.write_volumes(REAL_SAMPLE, "coronal", tmp_path / "nifti", ".nii", max_exams=3)
    dicom = write_as_dicom(nifti, tmp_path / "dicom", "LIP")
    expected = arrays(preprocess(REAL_SAMPLE, "coronal", tmp_path / "mrnet.npz", max_exams=3, progress=False))
    for folder in (nifti, dicom):
        got = arrays(volumes.preprocess_volumes(folder, "coronal", tmp_path / "volumes.npz", progress=False))
        assert_same_cache(expected, got)


# ---------------------------------------------------------------------------
# Pixel size
# ---------------------------------------------------------------------------


def square_phantom(spacing: tuple[float, float, float], side_mm: float = 42.0, field_mm: float = 84.0) -> tio.ScalarImage:
    """A RAS+ volume holding a bright block `side_mm` wide in R and S (the coronal plane) on a dark field."""
    shape = [round(field_mm / s) for s in spacing]
    data = np.full(shape, 5, np.float32)
    inside = [slice(round((field_mm - side_mm) / 2 / s), round((field_mm + side_mm) / 2 / s)) for s in spacing]
    data[tuple(inside)] = 100
    return tio.ScalarImage(tensor=torch.from_numpy(data)[None], affine=np.diag([*spacing, 1.0]))


def block_width(series: np.ndarray) -> tuple[int, int]:
    """Pixels of the block along the rows and the columns of the middle slice (above half its height)."""
    middle = series[len(series) // 2]
    bright = middle > (middle.max() + middle.min()) / 2
    return int(bright.any(axis=1).sum()), int(bright.any(axis=0).sum())


def test_pixel_size_resamples_in_plane_and_keeps_the_slices(tmp_path):
    path = tmp_path / "fine.nii.gz"
    square_phantom((0.25, 4.0, 0.25)).save(path)  # 0.25 mm pixels, 4 mm slices along A
    series, spacing = volumes.read_volume(path, "coronal")
    assert spacing == (4.0, 0.25, 0.25) and block_width(series) == (168, 168)  # 336 pixels cropped to 256
    coarse, _ = volumes.read_volume(path, "coronal", pixel_size=0.5)
    assert block_width(coarse) == (84, 84) and len(coarse) == len(series) == 21
    assert coarse.shape[1:] == (256, 256)
    padding = coarse[len(coarse) // 2, 0, 0]  # the field of view (168 pixels) padded to 256 with the minimum
    assert padding == pytest.approx(5, abs=1)


def test_downsampling_filters_what_the_new_pixels_cannot_hold(tmp_path):
    """Stripes 0.75 mm apart (one bright 0.25 mm pixel in three) sampled at 0.75 mm: unfiltered, every new
    pixel falls on the same phase of the stripes (here all dark: TorchIO without antialiasing gives 0);
    filtered, they blur to the stripes' mean, a third of the bright value."""
    data = np.zeros((96, 8, 96), np.float32)
    data[::3] = 100  # stripes along R
    path = tmp_path / "stripes.nii"
    tio.ScalarImage(tensor=torch.from_numpy(data)[None], affine=np.diag([0.25, 3.0, 0.25, 1.0])).save(path)
    series, _ = volumes.read_volume(path, "coronal", pixel_size=0.75)
    middle = series[4, 128 - 8:128 + 8, 128 - 8:128 + 8]  # inside the 32 x 32 pixels of the field of view
    assert abs(middle.mean() - 100 / 3) < 4 and middle.std() < 4


def test_non_square_pixels_need_a_pixel_size(tmp_path):
    path = tmp_path / "oblong.nii.gz"
    square_phantom((0.5, 3.0, 1.0)).save(path)
    with pytest.raises(MRNetError, match=r"1 x 0.5 mm pixels in its coronal slices; give pixel_size \(--pixel-size"):
        volumes.read_volume(path, "coronal")  # rows run along S (1 mm), columns along R (0.5 mm)
    series, _ = volumes.read_volume(path, "coronal", pixel_size=0.5)
    assert block_width(series) == (84, 84)  # square again: the rows upsampled twice


def test_volumes_with_different_pixel_sizes_need_a_pixel_size(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, pixel in (("a", 1.0), ("b", 1.0), ("c", 0.75)):
        square_phantom((pixel, 3.0, pixel)).save(folder / f"{name}.nii")
    with pytest.raises(MRNetError, match=r"c.nii has 0.75 mm pixels, .*a.nii 1 mm; give pixel_size"):
        volumes.preprocess_volumes(folder, "coronal", tmp_path / "c.npz", progress=False)
    assert not (tmp_path / "c.npz").exists()
    cache = arrays(volumes.preprocess_volumes(folder, "coronal", tmp_path / "c.npz", pixel_size=1.0, progress=False))
    assert cache["metadata"]["pixel_size"] == 1.0 and cache["metadata"]["resampled"]


# ---------------------------------------------------------------------------
# Exams, splits and labels
# ---------------------------------------------------------------------------


@pytest.fixture
def named_volumes(tmp_path) -> Path:
    """Five small volumes named as a hospital might name them (not digits)."""
    folder = tmp_path / "knees"
    folder.mkdir()
    for index, name in enumerate(("knee_b", "knee_a", "knee_e", "knee_c", "knee_d")):
        image = square_phantom((1.0, 3.0, 1.0), side_mm=60.0 + 3 * index)
        image.save(folder / f"{name}.nii.gz")
    return folder


def test_without_a_table_the_last_names_are_valid_and_the_cache_is_unlabelled(named_volumes, tmp_path):
    cache = arrays(volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", central_slices=1,
                                              progress=False))
    metadata = cache["metadata"]
    assert metadata["exams"] == {"0": "knee_a", "1": "knee_b", "2": "knee_c", "3": "knee_d", "4": "knee_e"}
    assert cache["train"]["exam_ids"].tolist() == [0, 1, 2, 3] and cache["valid"]["exam_ids"].tolist() == [4]
    assert not metadata["labelled"] and not cache["train"]["labels"].any()
    assert "the last 0.2 of the exam names" in metadata["split_rule"]
    with pytest.raises(MRNetError, match="selection 'acl' needs labels; give an exam table"):
        volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "d.npz", selection="acl", progress=False)


def test_an_exam_table_gives_splits_and_labels(named_volumes, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("exam,split,abnormal,acl,meniscus\nknee_a,valid,1,1,0\nknee_b,train,1,0,1\n"
                     "knee_c,train,0,0,0\nknee_d,valid,1,0,1\nknee_e,train,1,1,1\n", encoding="utf-8")
    cache = arrays(volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", exams=table,
                                              central_slices=1, selection="acl", progress=False))
    assert cache["train"]["exam_ids"].tolist() == [4] and cache["valid"]["exam_ids"].tolist() == [0]
    assert cache["train"]["labels"].tolist() == [[1, 1, 1]] and cache["valid"]["labels"].tolist() == [[1, 1, 0]]
    assert cache["metadata"]["labelled"]


def test_splits_alone_in_a_table(named_volumes, tmp_path):
    (named_volumes / volumes.EXAM_TABLE).write_text(
        "exam,split\nknee_a,train\nknee_b,valid\nknee_c,train\nknee_d,train\nknee_e,valid\n", encoding="utf-8")
    cache = arrays(volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", central_slices=1,
                                              progress=False))
    assert cache["valid"]["exam_ids"].tolist() == [1, 4] and not cache["metadata"]["labelled"]


def test_digit_names_keep_their_numbers():
    assert volumes.exam_ids(["1121", "0042"]) == {"1121": 1121, "0042": 42}
    assert volumes.exam_ids(["7", "007"]) == {"007": 0, "7": 1}  # the same number twice: numbered in order
    assert volumes.exam_ids(["b2", "a1"]) == {"a1": 0, "b2": 1}


def test_split_rule():
    assert volumes.split_by_rule(list("edcba"), 0.2) == {"a": "train", "b": "train", "c": "train", "d": "train",
                                                         "e": "valid"}
    assert volumes.split_by_rule(["x", "y"], 0.01) == {"x": "train", "y": "valid"}  # never an empty split
    with pytest.raises(MRNetError, match="valid_fraction must be between 0 and 1"):
        volumes.split_by_rule(["x", "y"], 1.0)
    with pytest.raises(MRNetError, match="1 exam cannot be split"):
        volumes.split_by_rule(["x"], 0.2)


@pytest.mark.parametrize("text, message", [
    ("exam;split\n", "must start with the header exam,split"),
    ("exam,split\nknee_a,test\n", "line 2: split must be one of train, valid"),
    ("exam,split,abnormal,acl,meniscus\nknee_a,train,1,2,0\n", "line 2: labels must be 0 or 1"),
    ("exam,split\nknee_a,train\nknee_a,valid\n", "line 3: exam 'knee_a' is listed twice"),
    ("exam,split\nknee_a,train,1\n", "line 2: 3 columns, expected 2"),
    ("exam,split\nknee_a,train\n", "exam 'knee_b' has a volume but no row in exam table"),
    ("exam,split\n" + "".join(f"knee_{c},train\n" for c in "abcde") + "knee_z,valid\n",
     "exam 'knee_z' of exam table .* has no volume"),
    ("exam,split\n" + "".join(f"knee_{c},train\n" for c in "abcde"), "no exam of .* is in the valid split"),
])
def test_bad_exam_tables(named_volumes, tmp_path, text, message):
    table = tmp_path / "table.csv"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(MRNetError, match=message):
        volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", exams=table, progress=False)


# ---------------------------------------------------------------------------
# What is not a volume
# ---------------------------------------------------------------------------


def test_a_file_of_another_kind_is_named(named_volumes, tmp_path):
    (named_volumes / "notes.txt").write_text("not an image", encoding="utf-8")
    (named_volumes / ".DS_Store").write_bytes(b"hidden files are skipped")
    with pytest.raises(MRNetError, match=r"notes.txt is not a volume \(.nii.gz, .nii, .nrrd, .mha or a DICOM series "
                                         r"folder\); move it out of"):
        volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", progress=False)


def test_a_broken_volume_is_named(named_volumes, tmp_path):
    (named_volumes / "knee_c.nii.gz").write_bytes(b"junk")
    with pytest.raises(MRNetError, match="knee_c.nii.gz cannot be read as a volume"):
        volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", progress=False)
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("shape, message", [
    ((1, 64, 64, 1), "is a 2-D image \\(shape 64x64x1\\); give 3-D volumes"),
    ((2, 16, 16, 16), "holds 2 channels or volumes; give one 3-D volume per exam"),
])
def test_not_one_3d_volume_is_refused(tmp_path, shape, message):
    tio.ScalarImage(tensor=torch.rand(shape)).save(tmp_path / "odd.nii.gz")
    with pytest.raises(MRNetError, match=message):
        volumes.read_volume(tmp_path / "odd.nii.gz", "coronal")


def test_a_png_is_not_a_volume(tmp_path):
    (tmp_path / "slice.png").write_bytes(b"\x89PNG")
    with pytest.raises(MRNetError, match="slice.png is not a volume"):
        volumes.list_volumes(tmp_path)


def test_a_dicom_folder_with_two_series_is_refused(tmp_path):
    folder = write_dicom_series(marked_volume(), tmp_path / "exam", series_uid="1.2.3.1")
    write_dicom_series(marked_volume(), folder, series_uid="1.2.3.2")
    with pytest.raises(MRNetError, match="exam mixes 2 DICOM series; give each series a folder of its own"):
        volumes.read_volume(folder, "coronal")


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    folder = write_dicom_series(marked_volume(), tmp_path / "exam")
    sorted(folder.iterdir())[20].unlink()
    with pytest.raises(MRNetError, match=r"exam has uneven slice spacing \(1 to 2 mm: missing or irregular slices\)"):
        volumes.read_volume(folder, "coronal")


def test_a_folder_without_dicom_is_named(tmp_path):
    (tmp_path / "exam").mkdir()
    (tmp_path / "exam" / "readme.txt").write_text("no images", encoding="utf-8")
    with pytest.raises(MRNetError, match="folder .*exam holds no DICOM series"):
        volumes.read_volume(tmp_path / "exam", "coronal")


def test_bad_settings(named_volumes, tmp_path):
    with pytest.raises(MRNetError, match="pixel_size must be a positive number of mm"):
        volumes.preprocess_volumes(named_volumes, "coronal", tmp_path / "c.npz", pixel_size=0, progress=False)
    with pytest.raises(MRNetError, match="plane must be one of"):
        volumes.preprocess_volumes(named_volumes, "oblique", tmp_path / "c.npz", progress=False)
    with pytest.raises(MRNetError, match="volume folder .*missing does not exist"):
        volumes.preprocess_volumes(tmp_path / "missing", "coronal", tmp_path / "c.npz", progress=False)


def test_plane_examples_keep_the_anatomys_proportions(tmp_path):
    """A 2-D acquisition (thick slices) shown in the planes it was not acquired in: pixels made square."""
    square_phantom((1.0, 3.0, 1.0)).save(tmp_path / "a.nii")
    examples = volumes.plane_examples(tmp_path, 1)
    for plane in PLANES:
        series = volumes.read_volume(tmp_path / "a.nii", plane, pixel_size=1.0)[0]
        np.testing.assert_allclose(examples[plane][0], series[len(series) // 2], atol=1e-3, err_msg=plane)
    assert block_width(examples["coronal"][0][None]) == (42, 42)
    assert block_width(examples["axial"][0][None]) == (42, 42)  # A (3 mm) resampled to 1 mm


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def test_the_command_line_reads_volumes(tiny_phantom, tmp_path, capsys):
    folder = volumes.write_volumes(tiny_phantom, "sagittal", tmp_path / "nifti")
    out = tmp_path / "cache.npz"
    code = cli.main(["preprocess", "--volumes", str(folder), "--plane", "sagittal", "--out", str(out),
                     "--central-slices", "2", "--max-exams", "1", "--selection", "abnormal"])
    assert code == 0 and f"wrote slice cache {out}" in capsys.readouterr().out
    expected = arrays(preprocess(tiny_phantom, "sagittal", tmp_path / "mrnet.npz", "abnormal", central_slices=2,
                                 max_exams=1, progress=False))
    assert_same_cache(expected, arrays(out))


def test_the_command_line_wants_one_source(tmp_path, capsys):
    code = cli.main(["preprocess", "--volumes", str(tmp_path), "--mrnet-root", str(tmp_path), "--out", "c.npz"])
    assert code == 2 and "not allowed with argument" in capsys.readouterr().err
    code = cli.main(["preprocess", "--mrnet-root", str(tmp_path), "--pixel-size", "0.5", "--out", "c.npz"])
    assert code == 2 and "--pixel-size, --exams and --valid-fraction read volumes: give --volumes" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# run_all.sh --volumes
# ---------------------------------------------------------------------------


def run_all(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "MRNET_ROOT"}
    return subprocess.run(["bash", str(ROOT / "run_all.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=1200)


@pytest.mark.slow
def test_run_all_sh_preprocesses_a_folder_of_nifti_volumes(tiny_phantom, tmp_path):
    """The study's preprocessing notebook, run by run_all.sh on NIfTI volumes written from the phantom,
    writes the cache that the MRNet path writes from the phantom with the same settings."""
    folder = volumes.write_volumes(tiny_phantom, "coronal", tmp_path / "nifti")
    study = tmp_path / "study"
    result = run_all("--preset", "smoke", "--only", "preprocess", "--volumes", str(folder), "--out", str(study))
    assert result.returncode == 0, f"run_all.sh failed:\n{result.stdout}\n{result.stderr}"
    (cache_path,) = (study / "data").rglob("slices_coronal.npz")
    got = arrays(cache_path)
    assert got["metadata"]["source"] == str(folder.resolve()) and got["metadata"]["format"] == "volumes"
    settings = {key: got["metadata"][key] for key in ("selection", "central_slices", "normalisation")}
    expected = arrays(preprocess(tiny_phantom, "coronal", tmp_path / "mrnet.npz", progress=False, **settings))
    assert_same_cache(expected, got)
    assert (study / "runs" / "smoke" / "00_preprocess.html").is_file()


def test_run_all_sh_takes_one_source_of_exams(tmp_path):
    result = run_all("--volumes", str(tmp_path), "--mrnet-root", str(tmp_path), "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --volumes and --mrnet-root are two sources of exams; give one")
    assert not (tmp_path / "runs").exists()
