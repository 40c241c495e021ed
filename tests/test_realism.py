"""The realism statistics on small synthetic inputs with known answers."""

import numpy as np
import pandas as pd
import pytest
import torch

from mrnet_utils.data.slices import to_unit
from mrnet_utils.evaluation import metrics, realism
from mrnet_utils.errors import MRNetError


def _series(seed, slices=4, side=32):
    """A raw uint8 series and its normalisation to [-1, 1] (0 -> -1, 255 -> 1, as on MRNet)."""
    raw = np.random.default_rng(seed).integers(0, 256, (slices, side, side), dtype=np.uint8)
    return raw, raw.astype(np.float32) / 127.5 - 1


def _summaries(count, slices=4, offset=0):
    return [realism.summarise_series(*_series(offset + i, slices), exam_id=offset + i) for i in range(count)]


def test_background_fraction_of_a_half_empty_image_is_one_half():
    raw = np.zeros((2, 8, 8), np.uint8)
    raw[:, :, 4:] = 200
    assert realism.background_fraction(raw, realism.RAW_BACKGROUND) == 0.5
    normalised = np.where(raw == 0, -1.0, 0.5)
    assert realism.background_fraction(normalised, realism.NORMALISED_BACKGROUND) == 0.5


def test_background_thresholds_agree_on_mrnet_scaling():
    """On a series spanning 0..255, raw <= 15 and normalised <= -0.88 pick the same pixels."""
    raw = np.arange(256, dtype=np.uint8)
    normalised = raw.astype(np.float32) / 127.5 - 1
    assert (raw <= realism.RAW_BACKGROUND).tolist() == (normalised <= realism.NORMALISED_BACKGROUND).tolist()


def test_contrast_is_the_spread_of_the_foreground_only():
    raw = np.zeros((1, 4, 4), np.uint8)
    raw[0, :2] = 100
    raw[0, 2:3] = 200
    raw[0, 3:] = 200  # foreground: eight pixels at 100, eight at 200; no air left here
    assert realism.exam_contrast(raw) == pytest.approx(50 / 255)
    raw[0, 3:] = 0  # air is left out: four pixels at 200 against eight at 100
    assert realism.exam_contrast(raw) == pytest.approx(np.std([100] * 8 + [200] * 4) / 255)
    assert realism.exam_contrast(np.zeros((2, 4, 4), np.uint8)) == 0.0


def test_slice_change():
    assert realism.slice_change(np.full((5, 8, 8), 0.3)) == 0.0
    alternating = np.stack([np.zeros((8, 8)), np.ones((8, 8))] * 2)
    assert realism.slice_change(alternating) == pytest.approx(1.0)
    ramp = np.stack([np.full((8, 8), 0.1 * i) for i in range(4)])
    assert realism.slice_change(ramp) == pytest.approx(0.1)
    with pytest.raises(MRNetError, match="at least 2 slices"):
        realism.slice_change(np.zeros((1, 8, 8)))


def test_diversity_slices_are_spread_along_the_series():
    assert realism.diversity_indices(21).tolist() == [5, 10, 15]
    assert realism.diversity_indices(2).tolist() == [0, 1]


def test_cross_exam_pairs_never_pair_an_exam_with_itself():
    exam_ids = [7, 7, 7, 8, 8, 9]
    pairs = realism.cross_exam_pairs(exam_ids)
    assert len(pairs) == 15 - 3 - 1  # all pairs less those within exam 7 (3) and exam 8 (1)
    assert all(exam_ids[i] != exam_ids[j] and i < j for i, j in pairs)
    some = realism.cross_exam_pairs(exam_ids, per_exam_pair=2, seed=1)
    exams = [(exam_ids[i], exam_ids[j]) for i, j in some]
    assert sorted(exams) == [(7, 8)] * 2 + [(7, 9)] * 2 + [(8, 9)] * 2  # two per pair of exams
    assert len({tuple(p) for p in some}) == 6 and {tuple(p) for p in some} <= {tuple(p) for p in pairs}
    np.testing.assert_array_equal(some, realism.cross_exam_pairs(exam_ids, per_exam_pair=2, seed=1))
    fewer = realism.cross_exam_pairs(exam_ids, per_exam_pair=1, max_exam_pairs=2, seed=0)
    assert len({(exam_ids[i], exam_ids[j]) for i, j in fewer}) == len(fewer) == 2
    with pytest.raises(MRNetError, match="at least two exams"):
        realism.cross_exam_pairs([3, 3, 3])


def test_diversity_of_identical_images_is_one_and_ignores_same_exam_pairs():
    image = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    other = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    # Exams 0 and 1 hold copies of one image; exam 2 holds two copies of another, which a
    # same-exam pair would score 1.
    images = torch.cat([image, image, other, other])
    pairs = realism.cross_exam_ms_ssim(images, [0, 1, 2, 2])
    assert len(pairs) == 5 and not (pairs["exam_a"] == pairs["exam_b"]).any()
    assert realism.diversity(pairs, [0, 1]) == pytest.approx(1.0, abs=1e-5)
    across = float(metrics.ms_ssim(image, other))
    assert realism.diversity(pairs, [1, 2]) == pytest.approx(across, abs=1e-6)
    assert realism.diversity(pairs) == pytest.approx((1 + 4 * across) / 5, abs=1e-6)
    with pytest.raises(MRNetError, match="no cross-exam pair"):
        realism.diversity(pairs, [2])


def test_set_distances_match_the_metrics_on_pooled_slices():
    a, b = _summaries(2, offset=0), _summaries(3, offset=10)
    pooled = {name: torch.from_numpy(np.concatenate([to_unit(torch.from_numpy(_series(s.exam_id)[1])).numpy() for s in group]))[:, None]
              for name, group in (("a", a), ("b", b))}
    pairs = realism.diversity_pairs(a + b)
    found = realism.distances(a, b, pairs)
    assert found["histogram_w1"] == pytest.approx(metrics.histogram_distance(pooled["a"], pooled["b"]), rel=1e-9)
    assert found["spectrum_distance"] == pytest.approx(metrics.power_spectrum_distance(pooled["a"], pooled["b"]),
                                                       rel=1e-6)
    assert found["slices"] == 0.0


def test_a_set_against_itself_is_at_distance_zero():
    exams = _summaries(3)
    found = realism.distances(exams, exams, realism.diversity_pairs(exams))
    assert set(found) == set(realism.STATISTICS)
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in found.values())


def test_half_splits_are_seeded_and_the_table_passes_a_copy_of_the_real_set():
    real = _summaries(6)
    split = {s.exam_id: "train" if s.exam_id < 3 else "valid" for s in real}
    pairs = realism.diversity_pairs(real)
    halves = realism.half_split_distances(real, pairs, repeats=5, seed=3)
    assert halves.shape == (5, len(realism.STATISTICS))
    pd.testing.assert_frame_equal(halves, realism.half_split_distances(real, pairs, repeats=5, seed=3))
    table = realism.realism_table(real, split, pairs, real, pairs, repeats=5)
    assert list(table.index) == list(realism.STATISTICS)
    assert (table["phantom_vs_real"].abs() < 1e-12).all() and (table["within_spread"] == "yes").all()
    assert table.loc["slices", "phantom_value"] == 4


def test_a_phantom_unlike_the_real_set_is_outside_the_spread():
    real = _summaries(6)
    split = {s.exam_id: "train" if s.exam_id < 3 else "valid" for s in real}
    dark = [realism.summarise_series(np.zeros((4, 32, 32), np.uint8), np.full((4, 32, 32), -1.0, np.float32), i)
            for i in range(100, 103)]
    dark_pairs = realism.diversity_pairs(dark)
    table = realism.realism_table(real, split, realism.diversity_pairs(real), dark, dark_pairs, repeats=5)
    assert table.loc["background_raw", "phantom_value"] == 1.0
    assert table.loc["histogram_w1", "within_spread"] == "no" and table.loc["background_raw", "within_spread"] == "no"


def _script():
    """scripts/phantom_vs_real.py as a module (scripts/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "phantom_vs_real.py"
    spec = importlib.util.spec_from_file_location("phantom_vs_real", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_says_in_one_line_that_the_real_folder_is_absent(tmp_path, capsys):
    assert _script().main(["--mrnet-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nowhere is absent" in error and not (tmp_path / "out").exists()


def test_script_writes_the_table_and_a_small_figure(tiny_phantom, tmp_path, capsys):
    """Run on the tiny phantom standing in for both sets (the real sample is not needed)."""
    out = tmp_path / "out"
    argv = ["--mrnet-root", str(tiny_phantom), "--phantom-root", str(tiny_phantom), "--out", str(out),
            "--repeats", "5", "--slice-pairs", "1", "--central-slices", "3"]
    assert _script().main(argv) == 0
    table = pd.read_csv(out / "phantom_vs_real.csv", index_col="statistic")
    assert list(table.index) == list(realism.STATISTICS) and (table["within_spread"] == "yes").all()
    central = pd.read_csv(out / "phantom_vs_real_central.csv", index_col="statistic")
    assert list(central.index) == [name for name in realism.STATISTICS if name != "slices"]
    assert (central["phantom_vs_real"].abs() < 1e-12).all()  # the same exams on both sides
    assert not np.allclose(central["real_half_q95"], table.loc[central.index, "real_half_q95"])  # other slices
    text = (out / "phantom_vs_real.md").read_text(encoding="utf-8")
    assert text.count("| histogram_w1 |") == 2 and "## The 3 central slices of each series" in text
    assert sorted(path.name for path in out.iterdir()) == ["phantom_vs_real.csv", "phantom_vs_real.md",
                                                           "phantom_vs_real.png", "phantom_vs_real_central.csv"]
    assert 0 < (out / "phantom_vs_real.png").stat().st_size < 300_000


def test_summaries_of_the_central_slices_see_only_those_slices_normalised_with_their_series(tiny_phantom):
    from mrnet_utils.data.mrnet import load_volume, volume_path
    from mrnet_utils.data.preprocess import central_slice_indices, normalise

    every, central = (realism.summarise_folder(tiny_phantom, normalise, max_exams=1, central_slices=count)[0][0]
                      for count in (None, 3))  # the first train exam, 0000
    volume = load_volume(volume_path(tiny_phantom, "train", "coronal", 0))
    keep = central_slice_indices(len(volume), 3)
    assert every.slices == len(volume) and central.slices == 3
    assert central.histogram.sum() == 3 * 256 * 256
    expected = realism.summarise_series(volume[keep], normalise(volume, tiny_phantom)[keep], 0)
    np.testing.assert_array_equal(central.histogram, expected.histogram)
    assert central.background_raw == expected.background_raw and central.contrast == expected.contrast
