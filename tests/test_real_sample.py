"""The reader, preprocessing and a few training steps on REAL MRNet exams (the 18-exam sample).

The sample (../shared/mrnet-sample/MRNet-v1.0 beside the repository, or $MRNET_SAMPLE) is
not part of a clone: without it this whole file is skipped, and says where it looked.
Nothing read here is written anywhere but pytest's temporary folders.
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mrnet_utils.presets import stage_config
from mrnet_utils.data.slices import SliceDataset, load_cache
from mrnet_utils.errors import MRNetError
from mrnet_utils.data.mrnet import PLANES, SPLITS, TASKS, iter_exams, labels_path, list_exam_ids, read_labels
from mrnet_utils.data.preprocess import central_slice_indices, normalise, preprocess
from mrnet_utils.training.loop import train
from torch_threads import one_thread

SAMPLE = Path(os.environ.get("MRNET_SAMPLE", Path(__file__).resolve().parents[2] / "shared/mrnet-sample/MRNet-v1.0"))
if not SAMPLE.is_dir():
    pytest.skip(f"real MRNet sample {SAMPLE} is absent (not part of a clone; set MRNET_SAMPLE to use another copy)",
                allow_module_level=True)

EXAM_IDS = {"train": list(range(1120, 1130)), "valid": list(range(1132, 1140))}
FEW = 2  # exams per split in the preprocessing tests, to keep them fast


def _csv_rows(split: str) -> dict[int, dict[str, int]]:
    """The label files read without the project's reader: {exam_id: {task: label}}."""
    rows: dict[int, dict[str, int]] = {}
    for task in TASKS:
        text = labels_path(SAMPLE, split, task).read_bytes().decode("ascii")
        assert "\r" not in text and text.endswith("\n")  # LF lines, as MRNet ships them
        for line in text.splitlines():
            exam_id, label = line.split(",")
            rows.setdefault(int(exam_id), {})[task] = int(label)
    return rows


@pytest.mark.parametrize("split", SPLITS)
def test_labels_are_the_csv_rows(split):
    labels = read_labels(SAMPLE, split)
    assert list(labels) == EXAM_IDS[split]
    assert labels == _csv_rows(split)


@pytest.mark.parametrize("plane", PLANES)
@pytest.mark.parametrize("split", SPLITS)
def test_every_series_reads_as_uint8_with_mrnet_slice_counts(split, plane):
    assert list_exam_ids(SAMPLE, split, plane) == EXAM_IDS[split]
    labels = _csv_rows(split)
    for exam in iter_exams(SAMPLE, split, plane):
        assert exam.volume.dtype == np.uint8 and exam.volume.shape[1:] == (256, 256)
        assert 17 <= len(exam.volume) <= 61
        assert exam.labels == labels[exam.exam_id] and (exam.split, exam.plane) == (split, plane)


def test_slice_counts_vary_per_series():
    counts = {plane: [len(exam.volume) for split in SPLITS for exam in iter_exams(SAMPLE, split, plane)]
              for plane in PLANES}
    assert all(len(set(values)) > 5 for values in counts.values())
    assert min(min(values) for values in counts.values()) == 17  # MRNet's shortest series is in the sample


@pytest.fixture(scope="module", params=PLANES)
def central(request, tmp_path_factory):
    """(plane, cache arrays) of the 5 central slices of the first FEW exams of each split."""
    path = preprocess(SAMPLE, request.param, tmp_path_factory.mktemp("real") / "central.npz", max_exams=FEW,
                      progress=False)
    with np.load(path, allow_pickle=False) as archive:
        return request.param, {name: archive[name] for name in archive.files}


def test_central_slices_labels_and_normalisation(central):
    plane, cache = central
    for split in SPLITS:
        images, exam_ids = cache[f"{split}_images"], cache[f"{split}_exam_ids"]
        assert images.dtype == np.float16 and images.shape == (5 * FEW, 256, 256)
        assert exam_ids.tolist() == np.repeat(EXAM_IDS[split][:FEW], 5).tolist()
        rows = _csv_rows(split)
        np.testing.assert_array_equal(cache[f"{split}_labels"], [[rows[i][t] for t in TASKS] for i in exam_ids])
        assert images.min() >= -1 and images.max() <= 1
        for exam in iter_exams(SAMPLE, split, plane, EXAM_IDS[split][:FEW]):
            keep = central_slice_indices(len(exam.volume), 5)
            mine = exam_ids == exam.exam_id
            assert cache[f"{split}_slice_index"][mine].tolist() == keep.tolist()
            # MRNet windows every slice to 0..255, so the percentile normalisation is x / 127.5 - 1.
            np.testing.assert_allclose(images[mine].astype(np.float32), exam.volume[keep] / 127.5 - 1, atol=1e-3)


def test_all_slices_of_series_of_different_lengths(tmp_path):
    path = preprocess(SAMPLE, "coronal", tmp_path / "all.npz", central_slices=None, max_exams=FEW, progress=False)
    cache = load_cache(path)
    for split in SPLITS:
        lengths = {exam.exam_id: len(exam.volume) for exam in iter_exams(SAMPLE, split, "coronal",
                                                                          EXAM_IDS[split][:FEW])}
        assert len(set(lengths.values())) == FEW  # the chosen exams differ in length
        assert len(cache[split]["images"]) == sum(lengths.values())
        for exam_id, slices in lengths.items():
            assert cache[split]["slice_index"][cache[split]["exam_ids"] == exam_id].tolist() == list(range(slices))
        for resolution in (64, 128, 256):
            dataset = SliceDataset(path, split, resolution)
            assert dataset.images.shape == (sum(lengths.values()), 1, resolution, resolution)
            assert dataset.images.dtype == torch.float32 and -1 <= dataset.images.min() < dataset.images.max() <= 1
            assert dataset.labels.shape == (len(dataset), len(TASKS))


def test_normalise_on_every_real_series_spans_minus_one_to_one():
    for split in SPLITS:
        for exam in iter_exams(SAMPLE, split, "coronal"):
            scaled = normalise(exam.volume, Path(f"{exam.exam_id:04d}.npy"))
            assert scaled.dtype == np.float32 and scaled.min() == -1 and scaled.max() == 1


def test_a_task_without_valid_positives_names_its_label_file(tmp_path):
    """The sample's valid exams are all negative: selecting positives must say so, naming the CSV."""
    assert not any(any(labels.values()) for labels in read_labels(SAMPLE, "valid").values())
    with pytest.raises(MRNetError, match="no valid exam .* positive for 'meniscus'.*valid-meniscus.csv") as error:
        preprocess(SAMPLE, "coronal", tmp_path / "meniscus.npz", "meniscus", progress=False)
    assert "\n" not in str(error.value) and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    """2 central coronal slices of the first 2 exams of each split: 4 train slices, one smoke batch."""
    return preprocess(SAMPLE, "coronal", tmp_path_factory.mktemp("real") / "coronal.npz", central_slices=2,
                      max_exams=2, progress=False)


@pytest.mark.parametrize("stage", ["base64", "sr1"])
def test_smoke_training_runs_on_real_slices(stage, real_cache, tmp_path):
    cfg = stage_config(stage, "smoke").replace(train=dict(steps=3, checkpoint_every=3))
    with one_thread():
        result = train(cfg, real_cache, tmp_path / stage, progress=False)
    assert result.steps == result.trained_steps == 3 and result.checkpoint.is_file()
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(value).all() for value in state["model"].values() if value.is_floating_point())
    assert not math.isnan(result.images_per_second)
