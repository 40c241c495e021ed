"""Preprocessing into the slice cache: split hygiene, labels, selection, normalisation, safe writes."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchio as tio

from mrnet_utils.data import preprocess as preprocess_module
from mrnet_utils.data.mrnet import TASKS, read_labels
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import central_slice_indices, normalise, normalise_slices, preprocess
from mrnet_utils.errors import MRNetError

# Seed 0 with 4 train + 2 valid exams: meniscus positives are {0, 2} and {4}; no valid ACL positive.
SPLIT_IDS = {"train": {0, 1, 2, 3}, "valid": {4, 5}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("pre") / "MRNet", 4, 2, seed=0, progress=False, workers=1)


@pytest.fixture(scope="module")
def cache(root, tmp_path_factory):
    path = preprocess(root, "coronal", tmp_path_factory.mktemp("cache") / "coronal.npz", progress=False)
    with np.load(path, allow_pickle=False) as archive:  # loadable without pickle
        return {name: archive[name] for name in archive.files}


def test_splits_come_from_their_own_folders(cache):
    for split, ids in SPLIT_IDS.items():
        assert set(cache[f"{split}_exam_ids"].tolist()) == ids
    assert not set(cache["train_exam_ids"].tolist()) & set(cache["valid_exam_ids"].tolist())


def test_dtypes_and_range(cache):
    for split in SPLIT_IDS:
        images = cache[f"{split}_images"]
        assert images.dtype == np.float16 and images.shape[1:] == (256, 256)
        assert images.min() >= -1 and images.max() <= 1 and images.max() - images.min() > 1.5
        assert cache[f"{split}_exam_ids"].dtype == np.int32 and cache[f"{split}_labels"].dtype == np.uint8


def test_labels_follow_the_exam_ids(root, cache):
    for split in SPLIT_IDS:
        table = read_labels(root, split)
        expected = [[table[exam_id][task] for task in TASKS] for exam_id in cache[f"{split}_exam_ids"].tolist()]
        np.testing.assert_array_equal(cache[f"{split}_labels"], expected)


def test_central_slices_are_the_middle_of_each_series(root, cache):
    for exam_id in (0, 5):
        split = "train" if exam_id < 4 else "valid"
        volume = np.load(root / split / "coronal" / f"{exam_id:04d}.npy")
        rows = cache[f"{split}_exam_ids"] == exam_id
        start = len(volume) // 2 - 2  # the reference's loader: n//2 - 2 ... n//2 + 2
        assert cache[f"{split}_slice_index"][rows].tolist() == list(range(start, start + 5))
        expected = normalise(volume, root)[start:start + 5]
        np.testing.assert_allclose(cache[f"{split}_images"][rows].astype(np.float32), expected, atol=1e-3)


def test_central_slice_indices():
    assert central_slice_indices(10, 4).tolist() == [3, 4, 5, 6]
    assert central_slice_indices(9, 4).tolist() == [2, 3, 4, 5]
    assert central_slice_indices(3, 5).tolist() == [0, 1, 2]
    # 5 of an even series as the reference's loader takes them: np.linspace(n//2 - 2, n//2 + 2, 5)
    assert central_slice_indices(24, 5).tolist() == [10, 11, 12, 13, 14]
    assert central_slice_indices(25, 5).tolist() == [10, 11, 12, 13, 14]
    assert central_slice_indices(4, None).tolist() == [0, 1, 2, 3]


def test_metadata(root, cache):
    metadata = json.loads(str(cache["metadata"][0]))
    assert metadata["plane"] == "coronal" and metadata["selection"] == "all" and metadata["central_slices"] == 5
    assert metadata["normalisation"] == "series"
    assert metadata["source"] == str(root.resolve()) and metadata["format_version"] == preprocess_module.FORMAT_VERSION


def test_task_keeps_only_its_positives_and_all_slices(root, tmp_path):
    path = preprocess(root, "sagittal", tmp_path / "meniscus.npz", "meniscus", central_slices=None, progress=False)
    with np.load(path) as archive:
        assert set(archive["train_exam_ids"].tolist()) == {0, 2} and set(archive["valid_exam_ids"].tolist()) == {4}
        assert np.all(archive["train_labels"][:, TASKS.index("meniscus")] == 1)
        slices = sum(len(np.load(root / "train" / "sagittal" / f"{i:04d}.npy")) for i in (0, 2))
        assert len(archive["train_images"]) == slices
        assert archive["train_slice_index"][archive["train_exam_ids"] == 0].tolist() == list(
            range(len(np.load(root / "train" / "sagittal" / "0000.npy"))))


def test_the_references_selection_repeats_an_exam_for_each_task_it_is_positive_for(root, tmp_path):
    """The reference's training set: the positives of abnormal, then of acl, then of meniscus."""
    labels = read_labels(root, "train")
    expected = [exam for task in TASKS for exam, exam_labels in labels.items() if exam_labels[task]]
    path = preprocess(root, "coronal", tmp_path / "union.npz", "positives", central_slices=2, progress=False)
    with np.load(path) as archive:
        ids = archive["train_exam_ids"].tolist()
    assert ids == [exam for exam in expected for _ in range(2)]  # 2 central slices each, in that order
    assert len(ids) > 2 * len(set(ids))  # some exams are positive for more than one task: repeated


def test_slice_normalisation_is_per_slice_min_max_to_8_bits(root, tmp_path):
    path = preprocess(root, "coronal", tmp_path / "slice.npz", central_slices=3, max_exams=1, progress=False,
                      normalisation="slice")
    volume = np.load(root / "train" / "coronal" / "0000.npy").astype(np.float64)
    keep = central_slice_indices(len(volume), 3)
    with np.load(path) as archive:
        images = archive["train_images"].astype(np.float64)
    for image, index in zip(images, keep):
        source = volume[index]
        expected = np.round((source - source.min()) / (source.max() - source.min()) * 255) / 127.5 - 1
        np.testing.assert_allclose(image, expected, atol=1e-3)  # float16 storage
        assert image.min() == -1 and image.max() == 1
    assert np.array_equal(normalise_slices(np.full((1, 4, 4), 7, np.uint8)), np.full((1, 4, 4), -1.0))


def test_max_exams(root, tmp_path):
    path = preprocess(root, "axial", tmp_path / "few.npz", central_slices=1, max_exams=1, progress=False)
    with np.load(path) as archive:
        assert archive["train_exam_ids"].tolist() == [0] and archive["valid_exam_ids"].tolist() == [4]


def test_selection_without_slices_names_split_and_task(root, tmp_path):
    with pytest.raises(MRNetError, match="no valid exam .* positive for 'acl' .*valid-acl.csv has no label 1"):
        preprocess(root, "coronal", tmp_path / "acl.npz", "acl", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(plane="oblique"), "plane must be one of"),
    (dict(selection="cartilage"), "selection must be one of all, abnormal, acl, meniscus, positives"),
    (dict(normalisation="global"), "normalisation must be one of series, slice"),
    (dict(central_slices=0), "central_slices must be at least 1"),
    (dict(max_exams=0), "max_exams must be at least 1"),
])
def test_bad_arguments(root, tmp_path, kwargs, message):
    arguments = {"plane": "coronal", "out": tmp_path / "c.npz", "progress": False, **kwargs}
    with pytest.raises(MRNetError, match=message):
        preprocess(root, **arguments)


def test_bad_output_paths(root, tmp_path):
    with pytest.raises(MRNetError, match="must end in .npz"):
        preprocess(root, "coronal", tmp_path / "cache.pt", progress=False)
    with pytest.raises(MRNetError, match="does not exist; create it first"):
        preprocess(root, "coronal", tmp_path / "missing" / "cache.npz", progress=False)


def test_constant_volume_is_refused(tmp_path):
    with pytest.raises(MRNetError, match="0007.npy is constant"):
        normalise(np.full((3, 256, 256), 9, np.uint8), tmp_path / "0007.npy")
    nearly = np.full((3, 256, 256), 9, np.uint8)
    nearly[0, :2] = 200  # 0.26 % of the voxels: the 99.5th percentile is still 9
    with pytest.raises(MRNetError, match="0008.npy is nearly constant .*percentiles are equal"):
        normalise(nearly, tmp_path / "0008.npy")
    nearly[0, :5] = 200  # 0.65 %: an image to rescale
    assert normalise(nearly, tmp_path / "0008.npy").max() == 1


def test_nan_after_normalisation_names_the_exam_file(root, tmp_path, monkeypatch):
    def nan_rescale(**_):
        return lambda image: tio.ScalarImage(tensor=torch.full_like(image.data, float("nan")))

    monkeypatch.setattr(tio, "RescaleIntensity", nan_rescale)  # preprocess imports torchio where it normalises
    with pytest.raises(MRNetError, match="normalising .*train/coronal/0000.npy gave NaN"):
        preprocess(root, "coronal", tmp_path / "nan.npz", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_leaves_nothing_behind(root, tmp_path, monkeypatch):
    out = tmp_path / "cache.npz"
    out.write_bytes(b"previous cache")

    def savez_until_full(file, **arrays):
        file.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(preprocess_module.np, "savez", savez_until_full)
    with pytest.raises(MRNetError, match="cannot write slice cache cache.npz to .*: No space left on device; free disk"):
        preprocess(root, "coronal", out, max_exams=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"] and out.read_bytes() == b"previous cache"


def test_interrupted_write_leaves_nothing_behind(root, tmp_path, monkeypatch):
    def savez_interrupted(file, **arrays):
        file.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(preprocess_module.np, "savez", savez_interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess(root, "coronal", tmp_path / "cache.npz", max_exams=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_earlier_runs_are_removed_and_live_ones_kept(root, tmp_path):
    """A run killed by SIGKILL cannot clean up; the next run in the folder does, sparing live writers' files."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".cache.npz.{dead.pid}.partial"
    live = tmp_path / f".cache.npz.{os.getppid()}.partial"  # this test's parent process: alive
    for path in (stale, live):
        path.write_bytes(b"PK torn")
    with pytest.raises(MRNetError, match="no valid exam"):  # even a run that fails later cleans up first
        preprocess(root, "coronal", tmp_path / "cache.npz", selection="acl", progress=False)
    assert sorted(tmp_path.iterdir()) == [live]


def test_unwritable_folder_is_named(root, tmp_path, monkeypatch):
    real_open = open

    def refuse(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(MRNetError, match=f"cannot write slice cache cache.npz to {tmp_path}: Permission denied"):
        preprocess(root, "coronal", tmp_path / "cache.npz", max_exams=1, progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_folder_is_named(root, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(MRNetError, match=f"cannot write to folder {locked}"):
        preprocess(root, "coronal", locked / "cache.npz", max_exams=1, progress=False)
    assert list(locked.iterdir()) == []


def test_broken_source_stops_before_writing(root, tmp_path):
    broken = shutil.copytree(root, tmp_path / "broken")
    (broken / "valid" / "coronal" / "0005.npy").write_bytes(b"junk")
    with pytest.raises(MRNetError, match="valid/coronal/0005.npy is not a readable .npy volume"):
        preprocess(broken, "coronal", tmp_path / "cache.npz", progress=False)
    assert not (tmp_path / "cache.npz").exists()
