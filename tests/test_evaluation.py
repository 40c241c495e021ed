"""Evaluation tables: confidence intervals, the two study tables, missing weights, writing."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics
from mrnet_utils.evaluation import tables as evaluation


class PooledFeatures(nn.Module):
    """Stand-in feature network: pooled intensity statistics as 4 features, logits for IS."""

    num_features = 4

    def forward(self, images):
        grey = images[:, :1]
        return torch.cat([grey.mean((1, 2, 3))[:, None], grey.std((1, 2, 3))[:, None], F.avg_pool2d(grey, 8).flatten(1)[:, :2]], 1)


@pytest.fixture(autouse=True)
def no_weights(tmp_path, monkeypatch):
    """No pretrained weights anywhere: the tables must still be produced."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MRNET_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("MRNET_LPIPS_WEIGHTS", raising=False)


def model_space(n, side, seed):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_mean_ci_matches_the_t_interval():
    mean, low, high = evaluation.mean_ci([1, 2, 3, 4, 5])
    # t(0.975, df=4) = 2.776445, sd = sqrt(2.5): half width 1.963243
    assert (mean, low, high) == pytest.approx((3.0, 1.036757, 4.963243), abs=1e-6)
    assert evaluation.mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert evaluation.mean_ci([1, 2, 3, 4, 5], confidence=0.5)[2] < high


def test_mean_ci_drops_infinite_values_and_needs_two_for_an_interval():
    assert evaluation.mean_ci([1, 2, 3, 4, 5, math.inf])[:2] == pytest.approx((3.0, 1.036757), abs=1e-6)
    mean, low, high = evaluation.mean_ci([7.0, math.inf])
    assert mean == 7.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in evaluation.mean_ci([math.inf]))


def test_evaluate_super_resolution_table():
    high_res = F.avg_pool2d(model_space(2, 128, 0), 2)  # a little smoothing, still 64x64
    low_res = F.avg_pool2d(high_res, 2)
    predictions = {"perfect": high_res.clone(), "blurred": F.avg_pool2d(high_res, 3, stride=1, padding=1)}
    table = evaluation.evaluate_super_resolution(low_res, high_res, predictions, timings={"perfect": 0.5})

    assert list(table.index) == [*metrics.INTERPOLATIONS, "perfect", "blurred", evaluation.REFERENCE_ROW]
    for name in ("psnr", "ssim", "ms_ssim", "fsim", "vif", "lpips", "ag"):
        assert {f"{name}_mean", f"{name}_ci_low", f"{name}_ci_high"} <= set(table.columns)
    perfect = table.loc["perfect"]
    assert perfect["psnr_n_inf"] == 2 and math.isnan(perfect["psnr_mean"])  # every pair identical
    assert perfect["ssim_mean"] == pytest.approx(1.0, abs=1e-5) and perfect["vif_mean"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["ag_mean"] == pytest.approx(table.loc[evaluation.REFERENCE_ROW, "ag_mean"])
    assert perfect["seconds_per_image"] == 0.5 and math.isnan(table.loc["blurred", "seconds_per_image"])
    assert (table.loc[list(metrics.INTERPOLATIONS), "seconds_per_image"] > 0).all()
    assert table.loc["blurred", "ssim_ci_low"] < table.loc["blurred", "ssim_mean"] < table.loc["blurred", "ssim_ci_high"]
    # No LPIPS backbone on this machine: the cell says which file is missing, no number is invented.
    assert table.loc["perfect", "lpips_mean"].startswith("not computed:")
    assert "alexnet-owt-7be5be79.pth" in table.loc["perfect", "lpips_mean"]


def test_evaluate_super_resolution_rejects_unmatched_predictions():
    high_res = model_space(2, 16, 0)
    with pytest.raises(MRNetError, match="predictions\\['short'\\]"):
        evaluation.evaluate_super_resolution(F.avg_pool2d(high_res, 2), high_res, {"short": high_res[:1]})


def test_evaluate_generation_with_a_stand_in_feature_network():
    real = F.avg_pool2d(model_space(12, 128, 1), 2)
    train = F.avg_pool2d(model_space(10, 128, 2), 2)
    samples = {"copies": train[:6].clone(), "darker": (real * 0.5 - 0.5)}
    table = evaluation.evaluate_generation(
        samples, real, train, feature_extractor=PooledFeatures(), is_splits=2, diversity_pairs=10
    )

    assert list(table.index) == ["copies", "darker", evaluation.REAL_ROW]
    assert table.loc["copies", "near_copy_share"] == 1.0 and table.loc["darker", "near_copy_share"] == 0.0
    assert table.loc["darker", "histogram_w1"] > table.loc["copies", "histogram_w1"]
    assert table.loc["darker", "spectrum_distance"] > 0
    assert table.loc["darker", "fid"] > table.loc["copies", "fid"] > 0
    assert table.loc["darker", "kid_mean"] > 0
    assert math.isnan(table.loc[evaluation.REAL_ROW, "fid"]) and table.loc[evaluation.REAL_ROW, "is_mean"] >= 1
    assert 0 < table.loc["copies", "diversity_ms_ssim"] < 1


def test_evaluate_generation_without_inception_weights_reports_the_missing_file():
    real, train = model_space(6, 64, 1), model_space(6, 64, 2)
    table = evaluation.evaluate_generation({"model": model_space(6, 64, 3)}, real, train)
    for column in ("fid", "is_mean", "kid_mean"):
        assert table.loc["model", column].startswith("not computed:")
        assert "weights-inception-2015-12-05-6726825d.pth" in table.loc["model", column]
    assert table.loc["model", "histogram_w1"] >= 0 and 0 <= table.loc["model", "near_copy_share"] <= 1


def test_write_table_round_trip(tmp_path):
    table = pd.DataFrame(
        {"psnr_mean": [25.04123, math.nan, 1.0], "lpips_mean": ["not computed: a|b", "x|y", "not computed: a|b"],
         "fid": ["not computed: c", "not computed: a|b", 2.0]},
        index=pd.Index(["bicubic", "ours", "theirs"], name="method"),
    )
    csv_path, md_path = evaluation.write_table(table, tmp_path / "tables", "sr")
    written = pd.read_csv(csv_path, index_col="method", dtype=str)  # the CSV keeps every value and reason in full
    pd.testing.assert_frame_equal(written, table.astype(str).replace("nan", math.nan))
    lines = md_path.read_text().splitlines()
    assert lines[0] == "| method | psnr_mean | lpips_mean | fid |"
    # each distinct reason once, under the table, numbered in order of first appearance
    assert lines[2] == "| bicubic | 25.04 | not computed [1] | not computed [2] |"
    assert lines[3] == "| ours | n/a | x\\|y | not computed [1] |"
    assert lines[4] == "| theirs | 1 | not computed [1] | 2 |"
    assert lines[5:] == ["", "- [1] not computed: a|b", "- [2] not computed: c"]
