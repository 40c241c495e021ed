"""Reading the cache, anti-aliased downsampling and the slice dataset."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import FORMAT_VERSION, preprocess
from mrnet_utils.data.slices import SliceDataset, degrade, downsample, load_cache
from mrnet_utils.errors import MRNetError
from mrnet_utils.study.data import held_out


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    root = write_phantom(folder / "MRNet", 3, 2, seed=0, progress=False, workers=1)
    return preprocess(root, "coronal", folder / "coronal.npz", central_slices=3, progress=False)


def _save(path, **arrays):
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def _cache_arrays(count):
    arrays = {"metadata": np.array([json.dumps({"format_version": FORMAT_VERSION})])}
    for split in ("train", "valid"):
        arrays |= {f"{split}_images": np.zeros((count, 256, 256), np.float16),
                   f"{split}_exam_ids": np.zeros(count, np.int32), f"{split}_slice_index": np.zeros(count, np.int16),
                   f"{split}_labels": np.zeros((count, 3), np.uint8)}
    return arrays


def test_load_cache(cache_path):
    cache = load_cache(cache_path)
    assert cache["metadata"]["plane"] == "coronal"
    assert len(cache["train"]["images"]) == 9 and len(cache["valid"]["images"]) == 6
    assert set(cache["valid"]["exam_ids"].tolist()) == {3, 4}


def test_load_cache_refuses_what_is_not_a_cache(tmp_path):
    with pytest.raises(MRNetError, match="nothing.npz does not exist"):
        load_cache(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(MRNetError, match="junk.npz is corrupt"):
        load_cache(tmp_path / "junk.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(MRNetError, match="array.npy is not a slice cache .*single array"):
        load_cache(tmp_path / "array.npy")
    with pytest.raises(MRNetError, match="other.npz is not a slice cache .*no metadata"):
        load_cache(_save(tmp_path / "other.npz", weights=np.zeros(3)))
    old = _cache_arrays(2) | {"metadata": np.array([json.dumps({"format_version": 0})])}
    with pytest.raises(MRNetError, match="old.npz is not a slice cache .*format 0, expected"):
        load_cache(_save(tmp_path / "old.npz", **old))
    partial = {k: v for k, v in _cache_arrays(2).items() if k != "valid_labels"}
    with pytest.raises(MRNetError, match="partial.npz .*missing valid_labels"):
        load_cache(_save(tmp_path / "partial.npz", **partial))
    skewed = _cache_arrays(2) | {"train_labels": np.zeros((3, 3), np.uint8)}
    with pytest.raises(MRNetError, match="skewed.npz .*train_labels has shape \\(3, 3\\), expected \\(2, 3\\)"):
        load_cache(_save(tmp_path / "skewed.npz", **skewed))


def test_load_cache_refuses_a_truncated_cache(cache_path, tmp_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(cache_path.read_bytes()[:-1000])
    with pytest.raises(MRNetError, match="truncated.npz is corrupt"):
        load_cache(truncated)


@pytest.mark.parametrize("size", [64, 128])
def test_downsampling_keeps_a_constant_constant(size):
    images = torch.full((2, 1, 256, 256), 0.37)
    torch.testing.assert_close(downsample(images, size), torch.full((2, 1, size, size), 0.37))


def test_nyquist_checkerboard_becomes_mean_grey():
    rows, cols = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    checkerboard = (((rows + cols) % 2) * 2 - 1).float()[None, None]
    grey = downsample(checkerboard, 64)
    assert grey.abs().max() < 0.01 and grey[..., 1:-1, 1:-1].abs().max() < 1e-5  # the edges: a truncated filter
    assert F.interpolate(checkerboard, size=64, mode="nearest").abs().min() == 1  # what aliasing would give


def test_stripes_above_the_new_nyquist_limit_are_filtered_out():
    # 1/3 cycle per pixel, well above the 1/8 that survives a 4x reduction
    stripes = torch.cos(2 * torch.pi * torch.arange(256) / 3).expand(256, 256)[None, None]
    assert downsample(stripes, 64).std() < 0.05
    assert F.interpolate(stripes, size=64, mode="bilinear", antialias=False).std() > 0.3  # aliased


def test_downsample_checks_its_input():
    assert downsample(torch.zeros(1, 1, 64, 64), 64).shape == (1, 1, 64, 64)
    with pytest.raises(MRNetError, match="between 1 and the image side 64"):
        downsample(torch.zeros(1, 1, 64, 64), 128)
    with pytest.raises(MRNetError, match="shape \\(B, C, H, W\\)"):
        downsample(torch.zeros(64, 64), 32)


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_slice_dataset(cache_path, resolution):
    dataset = SliceDataset(cache_path, "train", resolution)
    cache = load_cache(cache_path)["train"]
    assert len(dataset) == 9 and dataset.images.shape == (9, 1, resolution, resolution)
    assert dataset.images.dtype == torch.float32 and dataset[4].shape == (1, resolution, resolution)
    assert dataset.images.min() >= -1 and dataset.images.max() <= 1
    full = torch.from_numpy(cache["images"].astype(np.float32))[:, None]
    halved = [full]
    while halved[-1].shape[-1] > resolution:  # 256 -> 128 -> 64, one halving at a time
        halved.append(downsample(halved[-1], halved[-1].shape[-1] // 2))
    torch.testing.assert_close(dataset.images, halved[-1])
    np.testing.assert_array_equal(dataset.labels.numpy(), cache["labels"])
    np.testing.assert_array_equal(dataset.exam_ids.numpy(), cache["exam_ids"])
    np.testing.assert_array_equal(dataset.slice_index.numpy(), cache["slice_index"])
    assert next(iter(DataLoader(dataset, batch_size=4))).shape == (4, 1, resolution, resolution)


def test_the_base_models_64x64_images_are_sr1s_64x64_inputs(cache_path):
    """One degradation chain: the 64x64 slice the base model learns is the input SR1 is trained on."""
    base64, sr1_targets = SliceDataset(cache_path, "train", 64), SliceDataset(cache_path, "train", 128)
    assert torch.equal(base64.images, degrade(sr1_targets.images, 64))  # what training gives SR1
    held = held_out(cache_path, None)
    assert torch.equal(held.at(64), SliceDataset(cache_path, "valid", 64).images)  # and the SR evaluation


def test_degrade_refuses_what_halving_cannot_reach():
    assert degrade(torch.zeros(2, 1, 256, 256), 64).shape == (2, 1, 64, 64)
    for size in (96, 512):
        with pytest.raises(MRNetError, match=f"cannot take shape \\(2, 1, 256, 256\\) to {size}"):
            degrade(torch.zeros(2, 1, 256, 256), size)


def test_lower_resolutions_are_blurred_versions_of_the_same_slices(cache_path):
    high, low = SliceDataset(cache_path, "valid", 256), SliceDataset(cache_path, "valid", 64)
    assert torch.allclose(high.images.mean(dim=(1, 2, 3)), low.images.mean(dim=(1, 2, 3)), atol=0.01)
    assert (F.avg_pool2d(high.images, 4) - low.images).abs().mean() < 0.05


@pytest.mark.parametrize("split, resolution, message", [
    ("test", 64, "split must be one of train, valid"),
    ("train", 32, "resolution must be one of 64, 128, 256"),
    ("train", 512, "resolution must be one of 64, 128, 256"),
])
def test_slice_dataset_rejects_bad_arguments(cache_path, split, resolution, message):
    with pytest.raises(MRNetError, match=message):
        SliceDataset(cache_path, split, resolution)


def test_slice_dataset_rejects_an_empty_split(tmp_path):
    arrays = _cache_arrays(2)
    arrays |= {name: array[:0] for name, array in arrays.items() if name.startswith("valid")}
    path = _save(tmp_path / "empty_valid.npz", **arrays)
    assert len(SliceDataset(path, "train", 64)) == 2
    with pytest.raises(MRNetError, match="valid split of .*empty_valid.npz holds no slices"):
        SliceDataset(path, "valid", 64)
