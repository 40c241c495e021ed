"""The synthetic knee phantom: MRNet's exact layout, determinism, labels that mean something."""

import errno
import hashlib
import re

import numpy as np
import pytest

from mrnet_utils.data import phantom
from mrnet_utils.data.mrnet import PLANES, SPLITS, TASKS
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import COMPLETE_FILE

TRAIN, VALID = 4, 2


def _hashes(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom") / "MRNet"
    return phantom.write_phantom(folder, TRAIN, VALID, seed=0, progress=False, workers=1)


def test_layout_is_mrnet(root):
    names = {p.name for p in root.iterdir()}
    # MRNet's layout, and the marker of a folder written whole (files.result_folder)
    assert names == {"train", "valid", COMPLETE_FILE} | {f"{split}-{task}.csv" for split in SPLITS for task in TASKS}
    expected_ids = {"train": range(TRAIN), "valid": range(TRAIN, TRAIN + VALID)}
    for split in SPLITS:
        assert {p.name for p in (root / split).iterdir()} == set(PLANES)
        for plane in PLANES:
            files = sorted(p.name for p in (root / split / plane).iterdir())
            assert files == [f"{i:04d}.npy" for i in expected_ids[split]]
        for task in TASKS:
            text = (root / f"{split}-{task}.csv").read_bytes().decode()
            assert text.endswith("\n") and "\r" not in text
            lines = text.splitlines()
            assert all(re.fullmatch(r"\d{4},[01]", line) for line in lines), lines  # no header, padded ids
            assert [int(line[:4]) for line in lines] == list(expected_ids[split])


def test_volumes_are_uint8_series_windowed_like_mrnet(root):
    counts = []
    for path in root.rglob("*.npy"):
        volume = np.load(path, allow_pickle=False)
        assert volume.dtype == np.uint8 and volume.shape[1:] == (256, 256)
        assert phantom.MIN_SLICES <= volume.shape[0] <= phantom.MAX_SLICES
        # MRNet windows every slice: its minimum at 0, its brightest 1 % at 255.
        flat = volume.reshape(len(volume), -1)
        assert (flat.min(axis=1) == 0).all() and (flat.max(axis=1) == 255).all()
        saturated = (flat == 255).mean(axis=1)
        assert ((saturated > 0.005) & (saturated < 0.015)).all()
        counts.append(volume.shape[0])
    assert len(set(counts)) > 3  # slice counts vary per exam and plane


def test_slice_counts_are_drawn_like_mrnet_per_plane():
    rng = np.random.default_rng(0)
    knees = [phantom.draw_knee(rng) for _ in range(400)]
    for plane, (mean, spread) in phantom.SLICES.items():
        counts = np.array([knee.views[plane].slices for knee in knees])
        assert abs(counts.mean() - mean) < 1 and abs(counts.std() - spread) < 1
        assert counts.min() >= phantom.MIN_SLICES and counts.max() <= phantom.MAX_SLICES


def _coronal(root):
    return [np.load(path).astype(float) for path in sorted(root.glob("*/coronal/*.npy"))]


def test_the_leg_lies_in_black_air_inside_a_bright_fat_rim(root):
    for volume in _coronal(root):
        central = volume[len(volume) // 2]
        assert np.median(central[:, :10]) <= 15 and np.median(central[:, -10:]) <= 15  # air both sides
        assert np.median(central[:, 118:138]) > 15
        profile = central[30:80].mean(axis=0)  # across the thigh, above the joint
        for side in (profile, profile[::-1]):
            edge = int(np.argmax(side > 30))  # the skin
            assert side[edge:edge + 5].max() > 1.5 * side[edge + 14:edge + 24].mean()  # fat, then muscle


def test_coronal_anatomy_changes_along_the_series_to_a_nearly_empty_front(root):
    for volume in _coronal(root):
        air = (volume <= 15).mean(axis=(1, 2))
        middle = len(volume) // 2
        # Past the kneecap little is left: much more air than the centre, or so little tissue
        # that the window stretched the noise over the whole slice (as in some MRNet series),
        # which shows as neighbouring pixels that hardly correlate.
        last = volume[-1]
        neighbours = np.corrcoef(last[:, 1:].ravel(), last[:, :-1].ravel())[0, 1]
        assert air[-1] > air[middle] + 0.2 or neighbours < 0.8
        # Posterior, central and anterior slices differ far more than neighbouring ones
        # (8x8 block means, so that the noise does not hide the anatomy).
        coarse = volume.reshape(len(volume), 32, 8, 32, 8).mean(axis=(2, 4))
        step = np.abs(coarse[middle + 1] - coarse[middle]).mean()
        assert np.abs(coarse[2] - coarse[middle]).mean() > 1.5 * step
        assert np.abs(coarse[-3] - coarse[middle]).mean() > 1.5 * step


def test_brightness_varies_between_exams(root):
    medians = [np.median(volume[volume > 15]) for volume in _coronal(root)]
    assert max(medians) - min(medians) > 10


def test_same_seed_same_bytes_whatever_the_workers(root, tmp_path):
    again = phantom.write_phantom(tmp_path / "again", TRAIN, VALID, seed=0, progress=False, workers=2)
    assert _hashes(again) == _hashes(root)


def test_another_seed_gives_other_exams(root, tmp_path):
    for plane in PLANES:
        (tmp_path / "train" / plane).mkdir(parents=True)
    phantom.write_exam(tmp_path, "train", 0, seed=1)
    assert (tmp_path / "train/coronal/0000.npy").read_bytes() != (root / "train/coronal/0000.npy").read_bytes()


def test_planes_look_different(root):
    volumes = {plane: np.load(root / "train" / plane / "0000.npy") for plane in PLANES}
    central = {plane: volume[len(volume) // 2].astype(float) for plane, volume in volumes.items()}
    for a, b in (("axial", "coronal"), ("axial", "sagittal"), ("coronal", "sagittal")):
        assert np.abs(central[a] - central[b]).mean() > 10


def test_label_rates_and_implications():
    rng = np.random.default_rng(0)
    draws = [phantom.draw_labels(rng) for _ in range(4000)]
    rates = {task: np.mean([d[task] for d in draws]) for task in TASKS}
    for task, rate in (("abnormal", 0.8), ("acl", 0.2), ("meniscus", 0.35)):  # MRNet train: 0.81, 0.18, 0.35
        assert abs(rates[task] - rate) < 0.03
    assert all(d["abnormal"] for d in draws if d["acl"] or d["meniscus"])


def test_labels_in_the_files_are_consistent(root):
    for split in SPLITS:
        table = {task: dict(line.split(",") for line in (root / f"{split}-{task}.csv").read_text(encoding="utf-8").splitlines())
                 for task in TASKS}
        for exam in table["abnormal"]:
            if table["acl"][exam] == "1" or table["meniscus"][exam] == "1":
                assert table["abnormal"][exam] == "1"


# A bright finding can move its slice's window (MRNet's per-slice 99th percentile), which
# shifts the rest of that slice by a few grey levels; the finding itself changes by more.
WINDOW_SHIFT = 15


def _finding(knee, plane, task):
    """Voxels that change by more than WINDOW_SHIFT when `task` turns positive (same knee, same noise).

    Returns them (a mask), their changes, and their coordinates; checks that everything
    else changes by about a grey level on average (the window shift, nothing more).
    """
    normal = {"abnormal": 1, "acl": 0, "meniscus": 0} if task != "abnormal" else dict.fromkeys(TASKS, 0)
    finding = dict(normal, **{task: 1})
    before = phantom.render_series(knee, normal, plane, np.random.default_rng(7)).astype(int)
    after = phantom.render_series(knee, finding, plane, np.random.default_rng(7)).astype(int)
    changed = np.abs(after - before) > WINDOW_SHIFT
    assert np.abs(after - before)[~changed].mean() < 2
    grid = phantom._Grid(knee, plane)
    x, y, z = (np.broadcast_to(c, changed.shape)[changed] for c in (grid.x, grid.y, grid.z))
    return changed, (after - before)[changed], x, y, z


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_torn_acl_is_bright_in_the_notch(seed):
    knee = phantom.draw_knee(np.random.default_rng(seed))
    changed, change, x, y, z = _finding(knee, "sagittal", "acl")
    assert 0 < changed.mean() < 0.005
    assert change.mean() > 40  # oedema is bright on the fluid-sensitive sagittal series
    assert np.all(np.abs(x) < 0.2) and np.all((y > -0.3) & (y < 0.15)) and np.all((z > -0.1) & (z < 0.2))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_meniscal_tear_is_a_bright_line_in_the_posterior_horn(seed):
    knee = phantom.draw_knee(np.random.default_rng(seed))
    changed, change, x, y, z = _finding(knee, "sagittal", "meniscus")
    compartment = knee.meniscus_tear[0]
    assert 0 < changed.mean() < 0.001
    assert change.mean() > 40
    assert np.all(x * compartment > 0) and np.all(y < -0.1) and np.all(np.abs(z) < 0.12)


def test_abnormal_knees_have_effusion_or_oedema():
    knee = phantom.draw_knee(np.random.default_rng(4))
    changed, change, *_ = _finding(knee, "sagittal", "abnormal")
    # Bright fluid appears; where it becomes a slice's brightest tissue, the window darkens the rest a little.
    assert 0 < changed.mean() < 0.05 and np.percentile(change, 90) > 100 and change.min() > -2 * WINDOW_SHIFT


def test_refuses_a_non_empty_folder_unless_overwriting(tmp_path):
    (tmp_path / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(MRNetError, match="not empty"):
        phantom.write_phantom(tmp_path, 1, 1, progress=False, workers=1)
    stale = tmp_path / "train" / "axial" / "0042.npy"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    phantom.write_phantom(tmp_path, 1, 1, progress=False, workers=1, overwrite=True)
    assert not stale.exists() and (tmp_path / "notes.txt").exists()
    assert sorted(p.name for p in (tmp_path / "valid" / "axial").iterdir()) == ["0001.npy"]


@pytest.mark.parametrize("kwargs", [dict(train_exams=0), dict(valid_exams=0), dict(seed=-1), dict(workers=0),
                                    dict(train_exams=9999, valid_exams=2)])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(MRNetError):
        phantom.write_phantom(tmp_path / "out", **{"progress": False, **kwargs})


def test_a_full_disk_is_reported_and_leaves_no_label_files(tmp_path, monkeypatch):
    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(phantom.np, "save", full)
    with pytest.raises(MRNetError, match="writing the phantom to .* failed .*No space left"):
        phantom.write_phantom(tmp_path / "out", 1, 1, progress=False)
    assert not list((tmp_path / "out").glob("*.csv"))
