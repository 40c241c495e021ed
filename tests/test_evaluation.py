"""Evaluation tables: confidence intervals, the two study tables, missing weights, writing."""

import errno
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrnet_utils import files
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics, statistics
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
    monkeypatch.delenv("MRNET_LPIPS_VGG_WEIGHTS", raising=False)


def model_space(n, side, seed):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_evaluate_super_resolution_table_with_exam_intervals():
    high_res = F.avg_pool2d(model_space(12, 128, 0), 2)  # a little smoothing, still 64x64
    low_res = F.avg_pool2d(high_res, 2)
    exams = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    predictions = {"perfect": high_res.clone(), "blurred": F.avg_pool2d(high_res, 3, stride=1, padding=1)}
    scores = evaluation.evaluate_super_resolution(low_res, high_res, predictions, exams, timings={"perfect": 0.5},
                                                  evaluations={"perfect": 8})
    table = scores.table

    assert list(table.index) == [*metrics.INTERPOLATIONS, "perfect", "blurred", evaluation.REFERENCE_ROW]
    for name in ("psnr", "ssim", "ms_ssim", "fsim", "vif", "lpips", "lpips_vgg", "ag", "ag_sobel", "ag_error",
                 "spectrum_error"):
        assert {f"{name}_mean", f"{name}_ci_low", f"{name}_ci_high"} <= set(table.columns)
    assert (table["exams"] == 6).all() and (table["slices"] == 12).all()
    perfect = table.loc["perfect"]
    assert perfect["psnr_n_inf"] == 12 and math.isnan(perfect["psnr_mean"])  # every pair identical
    assert perfect["ssim_mean"] == pytest.approx(1.0, abs=1e-5) and perfect["vif_mean"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["ag_mean"] == pytest.approx(table.loc[evaluation.REFERENCE_ROW, "ag_mean"])
    assert perfect["ag_error_mean"] == 0 and perfect["spectrum_error_mean"] == pytest.approx(0, abs=1e-6)
    assert perfect["seconds_per_image"] == 0.5 and math.isnan(table.loc["blurred", "seconds_per_image"])
    assert (table.loc[list(metrics.INTERPOLATIONS), "seconds_per_image"] > 0).all()
    assert perfect["nfe"] == 8 and math.isnan(table.loc["blurred", "nfe"]) and (table.loc["lanczos", "nfe"] == 0)
    assert table.loc["blurred", "ssim_ci_low"] < table.loc["blurred", "ssim_mean"] < table.loc["blurred", "ssim_ci_high"]
    # No LPIPS backbone on this machine: the cell says which file is missing, no number is invented.
    assert "alexnet-owt-7be5be79.pth" in table.loc["perfect", "lpips_mean"]
    assert "vgg16-397923af.pth" in table.loc["perfect", "lpips_vgg_mean"]
    assert table.loc["perfect", "lpips_mean"].startswith("not computed:")

    per_exam = scores.per_exam()
    assert len(per_exam) == 6 * 6 and set(per_exam["slices"]) == {2}
    blurred = scores.per_slice.query("method == 'blurred'")
    first_exam = per_exam.query("method == 'blurred' and exam_id == 0")["ssim"].item()
    assert first_exam == pytest.approx(blurred["ssim"].iloc[:2].mean())
    comparison = scores.compare("blurred", "nearest", "spectrum_error")
    assert comparison.difference.exams == 6 and comparison.b == "nearest"
    assert statistics.verdict(scores.compare("blurred", "perfect", "ssim")) == "perfect better than blurred"
    with pytest.raises(MRNetError, match="not scored on the same slices"):
        SRScores = type(scores)
        SRScores(scores.table, scores.per_slice.drop(index=scores.per_slice.index[-1])).compare(
            "blurred", "perfect", "ssim")


def test_psnr_of_a_known_offset_through_the_table_is_20_db():
    """A constant offset of 0.1 on [0, 1] (0.2 in model space) has MSE 0.01: PSNR 20 dB, exactly."""
    truth = model_space(6, 64, 4) * 0.5  # model space [-0.5, 0.5]: [0.25, 0.75] on the metric scale
    shifted = truth + 0.2
    scores = evaluation.evaluate_super_resolution(F.avg_pool2d(truth, 2), truth, {"shifted": shifted}, range(6))
    assert scores.table.loc["shifted", "psnr_mean"] == pytest.approx(20.0, abs=1e-4)
    assert scores.table.loc["shifted", "psnr_ci_low"] == pytest.approx(20.0, abs=1e-4)
    assert scores.table.loc["shifted", "ag_error_mean"] == pytest.approx(0, abs=1e-6)  # a shift keeps gradients


def test_evaluate_super_resolution_rejects_unmatched_inputs():
    high_res = model_space(2, 16, 0)
    with pytest.raises(MRNetError, match="predictions\\['short'\\]"):
        evaluation.evaluate_super_resolution(F.avg_pool2d(high_res, 2), high_res, {"short": high_res[:1]}, [0, 1])
    with pytest.raises(MRNetError, match="one exam id and slice index per image"):
        evaluation.evaluate_super_resolution(F.avg_pool2d(high_res, 2), high_res, {}, [0])


def test_evaluate_generation_refuses_feature_metrics_on_too_few_samples():
    real = F.avg_pool2d(model_space(12, 128, 1), 2)
    train = F.avg_pool2d(model_space(10, 128, 2), 2)
    exams = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    samples = {"copies": train[:6].clone(), "darker": (real[:6] * 0.5 - 0.5)}
    table = evaluation.evaluate_generation(samples, real, exams, train, feature_extractor=PooledFeatures(),
                                           diversity_pairs=10)

    assert list(table.index) == ["copies", "darker", evaluation.REAL_ROW]
    assert table.loc["copies", "fid"] == ("not computed: FID needs at least 2048 samples and reference slices (its "
                                          "feature width); 6 here")
    assert table.loc["copies", "fid_reference"] == "held-out real slices (12)"
    assert table.loc["copies", "kid_mean"] == "not computed: KID needs at least 100 samples; 6 here"
    assert table.loc["copies", "is_mean"] == "not computed: IS needs at least 50 images (one split); 6 here"
    assert table.loc["copies", "fid_note"].startswith("biased upward below 10000 samples")
    assert (table.loc["copies", "samples"], table.loc[evaluation.REAL_ROW, "exams"]) == (6, 4)
    assert table.loc["copies", "near_copy_share"] == 1.0 and table.loc["darker", "near_copy_share"] == 0.0
    assert table.loc["darker", "histogram_w1"] > table.loc["copies", "histogram_w1"]
    assert table.loc["darker", "spectrum_distance"] > 0
    assert 0 < table.loc["copies", "diversity_ms_ssim"] < 1


def test_real_diversity_counts_only_pairs_from_different_exams():
    """Two exams, each two identical slices: all pairs give MS-SSIM 1 within an exam, less across."""
    a, b = model_space(1, 64, 5), model_space(1, 64, 6)
    real = (torch.cat([a, a, b, b]) + 1) / 2
    across = metrics.diversity_ms_ssim(real, groups=[0, 0, 1, 1])
    every_pair = metrics.diversity_ms_ssim(real)
    assert across == pytest.approx(float(metrics.ms_ssim(real[:1], real[2:3])), abs=1e-6)
    assert every_pair > across  # the two same-exam pairs (MS-SSIM 1) pull it up
    with pytest.raises(MRNetError, match="different groups"):
        metrics.diversity_ms_ssim(real, groups=[0, 0, 0, 0])


def test_evaluate_generation_with_enough_samples_computes_fid_kid_and_is():
    real = model_space(2100, 16, 1) * 0.5
    darker = real * 0.5 - 0.5
    train = model_space(4, 16, 2)
    table = evaluation.evaluate_generation({"darker": darker}, real, torch.arange(2100) // 5, train,
                                           feature_extractor=PooledFeatures(), diversity_pairs=10)
    assert table.loc["darker", "fid"] > 0 and table.loc["darker", "kid_mean"] > 0
    assert table.loc["darker", "kid_ci_low"] < table.loc["darker", "kid_mean"] < table.loc["darker", "kid_ci_high"]
    assert table.loc[evaluation.REAL_ROW, "is_mean"] >= 1
    assert table.loc["darker", "fid_note"].startswith("biased upward")
    # FID against a named reference set (the training split, as the reference study's), KID against the real slices
    on_train = evaluation.evaluate_generation({"darker": darker}, real, torch.arange(2100) // 5, train,
                                              feature_extractor=PooledFeatures(), diversity_pairs=10,
                                              fid_reference=("training split", real[:2050] * 0.9))
    assert on_train.loc["darker", "fid_reference"] == "training split (2050)"
    assert on_train.loc["darker", "fid"] == pytest.approx(
        metrics.fid((darker + 1) / 2, (real[:2050] * 0.9 + 1) / 2, PooledFeatures()), rel=1e-6)
    assert on_train.loc["darker", "fid"] != pytest.approx(table.loc["darker", "fid"], rel=1e-3)
    assert on_train.loc["darker", "kid_mean"] == table.loc["darker", "kid_mean"]
    few = evaluation.evaluate_generation({"darker": darker}, real, torch.arange(2100) // 5, train,
                                         feature_extractor=PooledFeatures(), diversity_pairs=10,
                                         fid_reference=("training split", real[:100]))
    assert few.loc["darker", "fid"].endswith("2048 samples and reference slices (its feature width); 100 here")


def test_evaluate_generation_without_inception_weights_reports_the_missing_file():
    real, train = model_space(120, 32, 1), model_space(6, 32, 2)
    table = evaluation.evaluate_generation({"model": model_space(120, 32, 3)}, real, range(120), train)
    for column in ("is_mean", "kid_mean"):
        assert table.loc["model", column].startswith("not computed:")
        assert "weights-inception-2015-12-05-6726825d.pth" in table.loc["model", column]
    assert "needs at least 2048" in table.loc["model", "fid"]  # too few samples is said before missing weights
    assert table.loc["model", "histogram_w1"] >= 0 and 0 <= table.loc["model", "near_copy_share"] <= 1


def test_generation_comparisons_pair_seeds_and_resample_exams():
    real = model_space(30, 32, 1) * 0.5
    exams = torch.arange(30) // 3
    samples = {"close": real[:12] + 0.01 * model_space(12, 32, 2), "far": real[:12] * 0.3 - 0.6}
    comparisons = evaluation.generation_comparisons(samples, real, exams, [("close", "far")], bootstrap=200)
    assert [c.metric for c in comparisons] == ["histogram_w1", "spectrum_distance"]
    w1 = comparisons[0]
    assert w1.difference.mean < 0 and w1.difference.high < 0 and statistics.verdict(w1) == "close better than far"
    assert w1.difference.exams == 10
    with pytest.raises(MRNetError, match="one seed each"):
        evaluation.generation_comparisons({"a": real[:3], "b": real[:4]}, real, exams, [("a", "b")])


def test_write_table_on_a_full_disk_is_one_line_and_keeps_the_previous_tables(tmp_path, monkeypatch):
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "sr.csv").write_text("previous", encoding="utf-8")

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(MRNetError, match=f"^cannot write table sr.csv to {folder}: No space left on device"):
        evaluation.write_table(pd.DataFrame({"psnr": [1.0]}), folder, "sr")
    assert [path.name for path in folder.iterdir()] == ["sr.csv"] and (folder / "sr.csv").read_text(encoding="utf-8") == "previous"


def test_write_table_round_trip(tmp_path):
    table = pd.DataFrame(
        {"psnr_mean": [25.04123, math.nan, 1.0], "lpips_mean": ["not computed: a|b", "x|y", "not computed: a|b"],
         "fid": ["not computed: c", "not computed: a|b", 2.0]},
        index=pd.Index(["bicubic", "ours", "theirs"], name="method"),
    )
    csv_path, md_path = evaluation.write_table(table, tmp_path / "tables", "sr")
    written = pd.read_csv(csv_path, index_col="method", dtype=str)  # the CSV keeps every value and reason in full
    pd.testing.assert_frame_equal(written, table.astype(str).replace("nan", math.nan))
    lines = md_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "| method | psnr_mean | lpips_mean | fid |"
    # each distinct reason once, under the table, numbered in order of first appearance
    assert lines[2] == "| bicubic | 25.04 | not computed [1] | not computed [2] |"
    assert lines[3] == "| ours | n/a | x\\|y | not computed [1] |"
    assert lines[4] == "| theirs | 1 | not computed [1] | 2 |"
    assert lines[5:] == ["", "- [1] not computed: a|b", "- [2] not computed: c"]


# --- every setting reaches the metric it is for -----------------------------------------------------


class MeanAbsolute(nn.Module):
    """Stand-in LPIPS: the mean absolute difference per image, in LPIPS' output shape."""

    def forward(self, x, y, normalize=False):
        assert normalize  # inputs in [0, 1]
        return (x - y).abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def test_the_sr_table_scores_lpips_with_the_backbones_named_and_keeps_slice_order(monkeypatch):
    loaded = []
    monkeypatch.setattr(metrics, "load_lpips", lambda weights, net: loaded.append((weights, net)) or MeanAbsolute())
    high_res = F.avg_pool2d(model_space(4, 128, 7), 2)
    low_res = F.avg_pool2d(high_res, 2)
    scores = evaluation.evaluate_super_resolution(low_res, high_res, {"model": high_res * 0.9}, [3, 3, 4, 4],
                                                  slice_index=[10, 11, 20, 21],
                                                  lpips_weights={"alex": "a.pth", "vgg": "v.pth"})
    assert loaded == [("a.pth", "alex"), ("v.pth", "vgg")]
    per_slice, table = scores.per_slice, scores.table
    assert list(per_slice.columns[:3]) == ["method", "exam_id", "slice_index"] and table.index.name == "method"
    model = per_slice.query("method == 'model'")
    assert model["slice_index"].tolist() == [10, 11, 20, 21] and model["exam_id"].tolist() == [3, 3, 4, 4]
    by_hand = (high_res * 0.9 - high_res).abs().mean(dim=(1, 2, 3)) / 2  # on the [0, 1] scale
    for column in ("lpips", "lpips_vgg"):
        torch.testing.assert_close(torch.tensor(model[column].to_numpy()), by_hand, rtol=1e-5, atol=1e-7)
    unit = (high_res + 1) / 2
    assert table.loc[evaluation.REFERENCE_ROW, "ag_sobel_mean"] == pytest.approx(
        float(metrics.average_gradient_sobel(unit).mean()))
    assert model["ag_sobel"].to_numpy() == pytest.approx(metrics.average_gradient_sobel((high_res * 0.9 + 1) / 2).numpy())
    assert (table.loc[list(metrics.INTERPOLATIONS), "seconds_per_image"] < 10).all()


def test_the_sr_table_names_mismatched_image_shapes():
    high_res = model_space(2, 16, 0)
    for low_res, high in ((F.avg_pool2d(high_res, 2), high_res[:, 0]), (F.avg_pool2d(high_res, 2)[:1], high_res)):
        with pytest.raises(MRNetError) as error:
            evaluation.evaluate_super_resolution(low_res, high, {}, [0, 1])
        assert str(error.value) == (f"low_res and high_res must be (B, 1, H, W) with the same B; got "
                                    f"{tuple(low_res.shape)} and {tuple(high.shape)}")


def test_the_generation_table_passes_every_setting_to_its_metric(monkeypatch):
    built = []
    monkeypatch.setattr(metrics, "inception_features",
                        lambda weights, feature: built.append((weights, feature)) or PooledFeatures())
    real = model_space(100, 16, 1) * 0.5
    exams = torch.arange(100) // 4
    train = model_space(6, 16, 2) * 0.5
    train_like = 0.75 * train.repeat(2, 1, 1, 1)[:10] + 0.25 * model_space(10, 16, 3) * 0.5  # correlation ~0.9
    samples = {"hundred": real * 0.8 + 0.1, "fifty": real[:50] * 0.7, "ten": train_like}
    table = evaluation.evaluate_generation(samples, real, exams, train, feature_weights="w.pth", is_splits=3,
                                           near_copy_threshold=0.5, diversity_pairs=20, bootstrap=50, seed=7)
    assert built == [("w.pth", "2048"), ("w.pth", "logits_unbiased")]
    intervals = [f"{m}_ci_{end}" for m in ("kid", "diversity_ms_ssim", "histogram_w1", "spectrum_distance")
                 for end in ("low", "high")]
    assert set(table.columns) == {"samples", "exams", "fid", "fid_reference", "fid_note", "kid_mean", "is_mean", "is_std",
                                  "diversity_ms_ssim", "histogram_w1", "spectrum_distance", "near_copy_share",
                                  "nearest_train_correlation", *intervals}
    unit = {name: (images + 1) / 2 for name, images in {**samples, evaluation.REAL_ROW: real}.items()}
    net = PooledFeatures()
    # KID at exactly its minimum of 100 samples, over the whole sets
    assert table.loc["hundred", "kid_mean"] == pytest.approx(metrics.kid(unit["hundred"], unit[evaluation.REAL_ROW], net))
    assert table.loc["fifty", "kid_mean"].startswith("not computed") and math.isnan(table.loc["fifty", "kid_ci_low"])
    # IS: 2 splits of 50 for 100 images (3 asked), 1 split at exactly 50
    assert (table.loc["hundred", "is_mean"], table.loc["hundred", "is_std"]) == pytest.approx(
        metrics.inception_score(unit["hundred"], net, splits=2, seed=7))
    assert table.loc["fifty", "is_mean"] == pytest.approx(metrics.inception_score(unit["fifty"], net, splits=1, seed=7)[0])
    for name, images in unit.items():
        groups = exams.numpy() if name == evaluation.REAL_ROW else None
        assert table.loc[name, "diversity_ms_ssim"] == pytest.approx(
            metrics.diversity_ms_ssim(images, 20, seed=7, groups=groups))
        nearest = metrics.memorisation(images, (train + 1) / 2, threshold=0.5)
        assert table.loc[name, "near_copy_share"] == nearest.near_copy_share
        assert table.loc[name, "nearest_train_correlation"] == pytest.approx(float(nearest.correlation.mean()))
    assert math.isnan(table.loc["hundred", "exams"]) and table.loc[evaluation.REAL_ROW, "exams"] == 25
    assert table.loc["ten", "near_copy_share"] == 1.0  # near copies at the threshold given (0.5), not at 0.95
    assert table.loc["ten", "is_mean"].startswith("not computed") and math.isnan(table.loc["ten", "is_std"])
    with pytest.raises(MRNetError, match=r"^give one exam id per real slice: 100 slices, \(99,\) ids"):
        evaluation.evaluate_generation(samples, real, exams[:99], train, feature_extractor=net)


def test_generation_comparisons_are_reproducible_differences_of_the_set_distances():
    real = model_space(20, 32, 1) * 0.5
    exams = torch.arange(20) // 4  # 5 exams: just enough for an interval
    samples = {"a": real[:5] * 0.9, "b": real[5:10] * 0.5 - 0.3}
    first = evaluation.generation_comparisons(samples, real, exams, [("a", "b")], bootstrap=100, seed=3)
    again = evaluation.generation_comparisons(samples, real, exams, [("a", "b")], bootstrap=100, seed=3)
    assert [c.difference for c in first] == [c.difference for c in again]
    unit = {name: (images + 1) / 2 for name, images in samples.items()}
    for comparison in first:
        by_hand = (evaluation.generation_distance(comparison.metric, unit["a"], (real + 1) / 2)
                   - evaluation.generation_distance(comparison.metric, unit["b"], (real + 1) / 2))
        d = comparison.difference
        assert d.mean == pytest.approx(by_hand) and d.low < d.high and d.se > 0 and (d.exams, d.slices) == (5, 20)
    half = evaluation.generation_comparisons(samples, real, exams, [("a", "b")], bootstrap=100, seed=3, confidence=0.5)
    for wide, narrow in zip(first, half):
        assert wide.difference.low <= narrow.difference.low < narrow.difference.high <= wide.difference.high
    too_few = evaluation.generation_comparisons({"a": real[:4], "b": real[4:8]}, real, exams, [("a", "b")], bootstrap=20)
    assert all(math.isnan(c.difference.low) and math.isnan(c.difference.high) for c in too_few)


def test_generation_distance_is_the_metric_of_the_same_name():
    a, b = (model_space(3, 32, 1) + 1) / 4, (model_space(4, 32, 2) + 1) / 2
    assert evaluation.generation_distance("histogram_w1", a, b) == pytest.approx(metrics.histogram_distance(a, b))
    assert evaluation.generation_distance("spectrum_distance", a, b) == pytest.approx(metrics.power_spectrum_distance(a, b))


def test_comparison_table_has_a_row_per_comparison_with_its_interval_tests_and_verdict():
    exams = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    better = statistics.paired_comparison("ours", "bicubic", "psnr", [3.0] * 10, [1.0] * 10, exams)
    ours = np.array([0.5, 0.6, 0.55, 0.52, 0.6] * 2)
    close = statistics.paired_comparison("ours", "lanczos", "ssim", ours,
                                         ours - np.array([0.001, 0.0, -0.001, 0.0005, -0.0005] * 2), exams)
    unknown = statistics.paired_comparison("ours", "nearest", "ag_error", [0.0, 1.0] * 5, [1.0, 0.0] * 5, exams,
                                           higher_is_better=False)
    table = evaluation.comparison_table([better, close, unknown], primary=[True, True, False])
    assert table.index.names == ["a", "b", "metric"]
    assert list(table.columns) == ["difference", "ci_low", "ci_high", "df", "p", "margin", "p_equivalence", "endpoint",
                                   "family", "p_holm", "p_equivalence_holm", "exams", "slices", "verdict"]
    row = table.loc[("ours", "bicubic", "psnr")]
    assert (row["difference"], row["ci_low"], row["ci_high"], row["exams"], row["slices"]) == (2, 2, 2, 5, 10)
    assert row["verdict"] == "ours better than bicubic" and row["endpoint"] == "primary" and row["family"] == 2
    assert row["margin"] == 0.2 and row["p_equivalence"] == 1.0
    ssim = table.loc[("ours", "lanczos", "ssim")]
    # Holm: the smaller p (PSNR's, 0) times 2, the larger times 1; for equivalence SSIM's is the smaller
    assert ssim["p_holm"] == pytest.approx(ssim["p"]) and ssim["margin"] == 0.005
    assert ssim["p_equivalence_holm"] == pytest.approx(min(1, 2 * ssim["p_equivalence"]))
    assert ssim["verdict"] == "equivalent within 0.005"
    exploratory = table.loc[("ours", "nearest", "ag_error")]
    assert exploratory["endpoint"] == "exploratory" and exploratory[["family", "p_holm", "margin"]].isna().all()
    assert exploratory["verdict"].startswith("inconclusive: the data cannot exclude ")
    assert (evaluation.comparison_table([better])["endpoint"] == "exploratory").all()
    with pytest.raises(MRNetError, match="give one primary flag per comparison: 1 comparisons, 2 flags"):
        evaluation.comparison_table([better], primary=[True, False])


def test_markdown_cells_and_headers():
    table = pd.DataFrame({"value": [123456.0, 99999.0, 0.5]})
    lines = evaluation.markdown(table).splitlines()
    assert lines[:2] == ["|  | value |", "|---|---|"]  # an unnamed index: an empty header
    assert lines[2:] == ["| 0 | 1.23e+05 |", "| 1 | 1e+05 |", "| 2 | 0.5 |"]
    assert evaluation.markdown(table, index=False).splitlines()[:3] == ["| value |", "|---|", "| 1.23e+05 |"]
    pairs = pd.DataFrame({"difference": [0.25]}, index=pd.MultiIndex.from_tuples([("sr1", "ref, no Swin")], names=["stage", "a"]))
    assert evaluation.markdown(pairs).splitlines() == ["| stage | a | difference |", "|---|---|---|", "| sr1 | ref, no Swin | 0.25 |"]


def test_write_table_makes_its_folders_and_writes_the_legend_under_the_table(tmp_path):
    table = pd.DataFrame({"psnr": [20.0]}, index=pd.Index(["ours"], name="method"))
    _, md_path = evaluation.write_table(table, tmp_path / "a" / "b", "sr", legend={"psnr": "dB, higher is better"})
    assert md_path.read_text(encoding="utf-8") == "| method | psnr |\n|---|---|\n| ours | 20 |\n\n- `psnr`: dB, higher is better\n"


def test_sr_comparisons_take_each_metrics_direction_and_per_exam_keeps_the_table_order():
    high_res = F.avg_pool2d(model_space(10, 128, 0), 2)
    blurred = F.avg_pool2d(high_res, 3, stride=1, padding=1)
    scores = evaluation.evaluate_super_resolution(F.avg_pool2d(high_res, 2), high_res, {"blurred": blurred},
                                                  [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    for metric, higher_is_better in (("spectrum_error", False), ("ssim", True)):
        comparison = scores.compare("blurred", "bicubic", metric)
        assert (comparison.metric, comparison.higher_is_better) == (metric, higher_is_better)
        per_slice = scores.per_slice.set_index("method")
        by_hand = statistics.exam_interval(per_slice.loc["blurred", metric].to_numpy()
                                           - per_slice.loc["bicubic", metric].to_numpy(), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
        assert comparison.difference == by_hand
    assert list(dict.fromkeys(scores.per_exam()["method"])) == [*metrics.INTERPOLATIONS, "blurred"]


def test_generation_bootstrap_draws_every_seed_and_exam_for_its_own_metric():
    """An outlying first sample and an outlying first real exam pull the point estimates; a bootstrap that never
    drew them, or that drew the other metric, would leave the point estimate outside its own interval."""
    real = model_space(20, 32, 1) * 0.3
    real[:4] = real[:4] * 0.2 + 0.8  # exam 0: bright and flat
    exams = torch.arange(20) // 4
    a = model_space(6, 32, 2) * 0.3
    a[0] = a[0] * 0.1 - 0.9  # seed 0: dark and flat
    samples = {"a": a, "b": model_space(6, 32, 3) * 0.6}
    for comparison in evaluation.generation_comparisons(samples, real, exams, [("a", "b")], bootstrap=400, seed=1):
        d = comparison.difference
        assert d.low <= d.mean <= d.high, comparison.metric


def _constant_images(values, side=16):
    """One flat [-1, 1] image per value, each value given on [0, 1]."""
    return torch.as_tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, side, side) * 2 - 1


def test_generation_bootstrap_resamples_whole_real_exams_and_takes_the_central_quantiles():
    """Flat images whose intensities sit on histogram bin centres make the W1 difference exact: sample sets
    flat at the first and last centres (x0 + x1 = 1) differ by 2 mean(c) - 1 against real slices of intensities c.
    Each exam's two slices are equal, so the bootstrap of exams is that of the 40 exam intensities, simulated here
    independently; resampling slices instead would shrink the spread by sqrt(2)."""
    generator = np.random.default_rng(7)
    exam_intensity = (generator.integers(0, 256, 40) + 0.5) / 256
    real = _constant_images(np.repeat(exam_intensity, 2))
    samples = {"dark": _constant_images([0.5 / 256] * 6), "bright": _constant_images([255.5 / 256] * 6)}
    comparison = evaluation.generation_comparisons(samples, real, np.repeat(np.arange(40), 2), [("dark", "bright")],
                                                   bootstrap=5_000, seed=2)[0]
    assert comparison.metric == "histogram_w1"
    draws = 2 * exam_intensity[generator.integers(0, 40, (100_000, 40))].mean(1) - 1
    d = comparison.difference
    assert d.mean == pytest.approx(2 * exam_intensity.mean() - 1)
    assert d.se == pytest.approx(draws.std(), rel=0.05)
    assert d.low == pytest.approx(np.quantile(draws, 0.025), abs=0.08 * draws.std())
    assert d.high == pytest.approx(np.quantile(draws, 0.975), abs=0.08 * draws.std())


def test_a_sample_set_compared_with_an_identical_one_differs_by_exactly_zero_in_every_draw():
    """Both distances of a draw use the same metric, seeds and real rows: any mismatch shows as a nonzero spread."""
    real = model_space(20, 32, 1) * 0.5
    a = model_space(6, 32, 2) * 0.4
    for comparison in evaluation.generation_comparisons({"a": a, "copy": a.clone()}, real, torch.arange(20) // 4,
                                                        [("a", "copy")], bootstrap=50):
        d = comparison.difference
        assert (d.mean, d.low, d.high, d.se) == (0, 0, 0, 0), comparison.metric


def test_generation_intervals_resample_samples_one_by_one_and_real_slices_by_exam():
    """Copies of each real exam's slices, one sample per exam: resampling the real exams moves the
    distance, and an interval holds the point estimate; too few exams or samples give none."""
    real = model_space(24, 32, 1) * 0.5
    exams = np.arange(24) // 4  # 6 exams of 4 slices
    samples = {"close": real[::4] * 0.9, "far": real[::4] * 0.5 - 0.4}
    table = evaluation.evaluate_generation(samples, real, exams, real[:2], diversity_pairs=50, bootstrap=200)
    for name in samples:
        for metric in ("histogram_w1", "spectrum_distance", "diversity_ms_ssim"):
            low, point, high = table.loc[name, [f"{metric}_ci_low", metric, f"{metric}_ci_high"]]
            assert low <= point <= high and low < high
    assert table.loc["far", "histogram_w1_ci_low"] > table.loc["close", "histogram_w1_ci_high"]
    shown = pd.concat(evaluation.readable(table), axis=1)  # each distance joined with its interval on the page
    assert "histogram_w1_ci_low" not in shown.columns and shown.loc["far", "histogram_w1"].count("[") == 1
    real_row = table.loc[evaluation.REAL_ROW]
    assert real_row["diversity_ms_ssim_ci_low"] < real_row["diversity_ms_ssim"] < real_row["diversity_ms_ssim_ci_high"]
    # the counts behind the intervals: samples drawn one by one, real slices in whole exams
    samples_drawn, slices_drawn = evaluation._resample_counts(6, exams, 3, np.random.default_rng(0))
    assert (samples_drawn.sum(axis=1) == 6).all() and (slices_drawn.sum(axis=1) == 24).all()
    assert all(len(set(row[exams == e])) == 1 for row in slices_drawn for e in range(6))
    few = evaluation.evaluate_generation({"close": real[:4]}, real, exams, real[:2], diversity_pairs=6, bootstrap=20)
    assert math.isnan(few.loc["close", "histogram_w1_ci_low"])  # 4 samples: too few to resample
