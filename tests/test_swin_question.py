"""The Swin question: four arms, several seeds, differences with seeds and exams both random."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mrnet_utils.networks import build_network
from mrnet_utils.networks.reference import ReferenceUNet
from mrnet_utils.networks.unet import UNet
from mrnet_utils.study import swin_question as sq


@pytest.mark.parametrize("preset", ["smoke", "demo"])
def test_the_four_arms_differ_only_in_their_network(preset):
    configs = {arm.label: arm.config("sr1", preset, seed=1) for arm in sq.ARMS}
    networks = {label: build_network(cfg.unet) for label, cfg in configs.items()}
    assert isinstance(networks["project"], UNet)
    assert all(isinstance(networks[label], ReferenceUNet) for label in configs if label != "project")
    assert configs["ref, ref Swin"].unet.swin_token_order == "reference"
    assert configs["ref, spatial Swin"].unet.swin_token_order == "spatial"
    assert not configs["ref, no Swin"].unet.use_swin
    for cfg in configs.values():  # one recipe: the preset's process, data, budget; no augmentation; seed 1
        assert cfg.diffusion == configs["project"].diffusion and cfg.train == configs["project"].train
        assert not cfg.conditioning.enabled and cfg.train.seed == 1


def _per_slice(gains):
    """Arm "ref, ref Swin" `gains[seed]` dB above every other arm on every slice of 6 exams x 3 slices."""
    rng = np.random.default_rng(0)
    rows = []
    for exam in range(6):
        for index in range(3):
            base = rng.normal(30, 2)
            for arm in (a.label for a in sq.ARMS):
                for seed, gain in enumerate(gains):
                    value = base + (gain if arm == "ref, ref Swin" else 0.0)
                    rows.append({"stage": "sr1", "arm": arm, "seed": seed, "exam_id": exam, "slice_index": index,
                                 "psnr": value, "ssim": 0.8})
    return pd.DataFrame(rows)


def test_answer_takes_seeds_and_exams_as_random_and_reports_each_seed():
    """1 dB on seed 0, 3 dB on seed 1, the same on every exam: all the uncertainty is the seeds'."""
    per_slice = _per_slice((1.0, 3.0))
    answer = sq.answer(per_slice)
    row = answer.loc[("sr1", "ref, ref Swin", "ref, no Swin", "psnr")]
    seed_level = stats.ttest_1samp([1.0, 3.0], 0.0)  # 1 degree of freedom: [2 - 12.7, 2 + 12.7]
    interval = seed_level.confidence_interval()
    assert row["difference"] == pytest.approx(2.0) and row["per_seed"] == "+1, +3" and row["df"] == 1
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert row["p"] == pytest.approx(seed_level.pvalue)
    assert row["seed_sd"] == pytest.approx(math.sqrt(2)) and row["seeds"] == 2 and row["exams"] == 6
    assert row["slices"] == 18 and row["endpoint"] == "exploratory"
    assert row["verdict"] == f"inconclusive: the data cannot exclude {interval.high:+.3g} dB"
    same = answer.loc[("sr1", "ref, spatial Swin", "ref, no Swin", "ssim")]
    assert same["difference"] == 0 and same["verdict"] == "equivalent within 0.005"
    means = sq.arm_table(per_slice)
    assert means.loc[("sr1", "ref, ref Swin"), "psnr_mean"] - means.loc[("sr1", "ref, no Swin"), "psnr_mean"] == pytest.approx(2)


def test_a_gain_every_seed_shows_is_an_effect_of_the_arm():
    answer = sq.answer(_per_slice((1.0, 1.1, 0.9, 1.05)))
    row = answer.loc[("sr1", "ref, ref Swin", "ref, spatial Swin", "psnr")]
    assert row["verdict"] == "ref, ref Swin better than ref, spatial Swin" and row["seeds"] == 4 and row["df"] == 3
