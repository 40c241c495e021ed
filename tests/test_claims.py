"""Primary endpoints, their Holm family across SR tasks, and the claim sentences written from verdict columns."""

import numpy as np
import pandas as pd
import pytest

from mrnet_utils.evaluation import claims, endpoints, statistics, tables
from mrnet_utils.evaluation.metrics import INTERPOLATIONS
from mrnet_utils.study import super_resolution as sr
from mrnet_utils.study.layout import SR_MODELS

METRICS = ("psnr", "ssim", "spectrum_error", "ag_error")


def test_the_primary_endpoints_are_declared_for_every_sr_task_output_baseline_and_metric():
    assert len(endpoints.SR_ENDPOINTS) == 24 and len(set(endpoints.SR_ENDPOINTS)) == 24
    assert {e.task for e in endpoints.SR_ENDPOINTS} == set(sr.SR_TASKS)
    labels = {model.label for model in SR_MODELS} | set(INTERPOLATIONS)
    assert all(e.model in labels and e.baseline in labels for e in endpoints.SR_ENDPOINTS)
    assert sorted(sr.primary_rows("sr2_128_to_256")) == [
        (f"SR2 (Swin), {kind}", baseline, metric)
        for kind in ("mean", "sample") for baseline in ("SR2 (regression)", "lanczos") for metric in ("psnr", "ssim")
    ]


def _scores(task: str, rng, gains: dict[str, float], nfe: dict[str, int], exams: int = 6) -> tables.SRScores:
    """Per-slice scores of every row of `task` over `exams` exams x 4 slices: a common exam effect plus each
    row's gain and a little noise."""
    exam_ids, slices = np.repeat(np.arange(exams), 4), np.tile(np.arange(4), exams)
    exam_effect = rng.normal(0, 1, exams)[exam_ids]
    frames = []
    for method, gain in gains.items():
        frame = pd.DataFrame({"method": method, "exam_id": exam_ids, "slice_index": slices})
        for metric in METRICS:
            frame[metric] = exam_effect + gain + rng.normal(0, 0.05, len(exam_ids))
        frames.append(frame)
    table = pd.DataFrame({"nfe": pd.Series(nfe)}).rename_axis("method")
    return tables.SRScores(table, pd.concat(frames, ignore_index=True))


def _task_rows(prefix: str, swin_gain: float) -> tuple[dict[str, float], dict[str, int]]:
    gains = {"lanczos": 0.0, "bicubic": -0.1, f"{prefix} (Swin), sample": swin_gain,
             f"{prefix} (Swin), mean": swin_gain + 0.2, f"{prefix} (no Swin), sample": swin_gain,
             f"{prefix} (no Swin), mean": swin_gain + 0.2, f"{prefix} (regression)": swin_gain + 0.3}
    nfe = {"lanczos": 0, "bicubic": 0, f"{prefix} (Swin), sample": 4, f"{prefix} (Swin), mean": 16,
           f"{prefix} (no Swin), sample": 4, f"{prefix} (no Swin), mean": 16, f"{prefix} (regression)": 1}
    return gains, nfe


def test_sr_comparisons_adjust_the_primary_endpoints_of_all_tasks_together():
    rng = np.random.default_rng(0)
    scores = {task: _scores(task, rng, *_task_rows(prefix, gain))
              for task, prefix, gain in (("sr1_64_to_128", "SR1", 1.0), ("sr2_128_to_256", "SR2", 0.0))}
    result = sr.sr_comparisons(scores)
    assert list(result) == list(scores)
    combined = pd.concat(result.values())
    primary = combined[combined["endpoint"] == "primary"]
    assert len(primary) == 16 and (primary["family"] == 16).all()  # 2 tasks x 2 outputs x 2 baselines x 2 metrics
    few = sr.sr_comparisons({"sr1_64_to_128": _scores("sr1_64_to_128", rng, *_task_rows("SR1", 1.0), exams=4)})
    untested = few["sr1_64_to_128"].query("endpoint == 'primary'")
    assert len(untested) == 8 and untested["family"].isna().all() and untested["p_holm"].isna().all()
    assert primary["p_holm"].to_numpy() == pytest.approx(statistics.holm(primary["p"].to_numpy()))
    assert (combined.loc[combined["endpoint"] == "exploratory", "p_holm"].isna()).all()
    assert set(primary.index) == {row for task in scores for row in sr.primary_rows(task)}
    sr1 = result["sr1_64_to_128"]
    row = sr1.loc[("SR1 (Swin), mean", "lanczos", "psnr")]
    assert (row["nfe_a"], row["nfe_b"]) == (16, 0) and row["verdict"] == "SR1 (Swin), mean better than lanczos"
    swin = sr1.loc[("SR1 (Swin), sample", "SR1 (no Swin), sample", "ssim")]
    assert swin["endpoint"] == "exploratory" and (swin["nfe_a"], swin["nfe_b"]) == (4, 4)
    assert sr1.loc[("SR1 (regression)", "bicubic", "psnr"), "nfe_a"] == 1
    sr2 = result["sr2_128_to_256"].loc[("SR2 (Swin), sample", "lanczos", "psnr")]
    assert sr2["verdict"] == "equivalent within 0.2 dB"  # no gain, and Holm-adjusted TOST rejects ±0.2 dB


def _row(**fields):
    row = {"a": "SR2 (Swin), sample", "b": "lanczos", "metric": "psnr", "difference": -0.1, "ci_low": -0.22,
           "ci_high": 0.02, "exams": 6, "slices": 48, "nfe_a": 4, "nfe_b": 0, "endpoint": "primary", "family": 24,
           "verdict": "inconclusive: the data cannot exclude -0.22 dB"}
    return {**row, **fields}


def test_a_claim_names_the_output_its_nfe_the_verdict_and_what_it_rests_on():
    assert claims.claim(_row()) == (
        "SR2 (Swin), sample (4 NFE) against lanczos on PSNR is inconclusive: the data cannot exclude -0.22 dB "
        "(difference -0.1 dB, 95% CI -0.22 to +0.02; 6 exams, 48 slices); a primary endpoint, Holm-adjusted over "
        "24 tests.")
    better = _row(a="SR2 (Swin), mean", nfe_a=16, difference=0.66, ci_low=0.41, ci_high=0.91,
                  verdict="SR2 (Swin), mean better than lanczos")
    assert claims.claim(better).startswith("SR2 (Swin), mean (16 NFE) is better than lanczos on PSNR (difference +0.66 dB")
    worse = _row(a="SR2 (Swin), mean", b="SR2 (regression)", nfe_b=1, metric="ssim", difference=-0.02,
                 ci_low=-0.03, ci_high=-0.01, verdict="SR2 (regression) better than SR2 (Swin), mean",
                 endpoint="exploratory")
    assert claims.claim(worse) == (
        "SR2 (regression) (1 NFE) is better than SR2 (Swin), mean (4 NFE) on SSIM (difference -0.02, 95% CI -0.03 "
        "to -0.01; 6 exams, 48 slices, one training run each); exploratory.")
    equivalent = _row(verdict="equivalent within 0.2 dB", difference=0.01, ci_low=-0.05, ci_high=0.07)
    assert claims.claim(equivalent).startswith("SR2 (Swin), sample (4 NFE) and lanczos are equivalent within 0.2 dB on PSNR")
    untested = _row(ci_low=np.nan, ci_high=np.nan, family=np.nan, verdict="no interval: 2 exams < 5")
    assert claims.claim(untested) == (
        "SR2 (Swin), sample (4 NFE) against lanczos on PSNR: no interval: 2 exams < 5 (difference -0.1 dB; 6 exams, "
        "48 slices); a primary endpoint, untested.")
    margin = _row(a="x", b="y", nfe_a=np.nan, nfe_b=np.nan, verdict="y better than x, by less than the 0.2 dB margin")
    assert claims.claim(margin).startswith("y is better than x on PSNR, by less than the 0.2 dB margin (")


def test_claims_of_seed_comparisons_state_the_seeds_and_read_a_written_table(tmp_path):
    rows = pd.DataFrame([
        _row(a="ref, ref Swin", b="ref, no Swin", nfe_a=np.nan, nfe_b=np.nan, seeds=3, endpoint="exploratory",
             verdict="inconclusive: the data cannot exclude +1.3 dB"),
        _row(),
    ]).set_index(["a", "b", "metric"])
    tables.write_table(rows, tmp_path, "comparisons")
    written = claims.claims_from_csv(tmp_path / "comparisons.csv")
    assert written == claims.claims(rows) and "6 exams, 48 slices, 3 training seeds per arm); exploratory." in written[0]
    assert claims.claims(rows, endpoint="primary") == [claims.claim(_row())]
