"""The Swin question: four arms, several seeds, paired exam-level differences beside the seed spread."""

import math

import numpy as np
import pandas as pd
import pytest

from mrnet_utils.evaluation import statistics
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


def _comparison(mean, low, high, exams=8):
    estimate = statistics.Estimate(mean, low, high, (high - low) / 4, exams, 40)
    return statistics.Comparison("A", "B", "psnr", estimate, higher_is_better=True)


def test_the_verdict_weighs_the_difference_against_the_seed_spread():
    assert sq.verdict(_comparison(0.5, 0.3, 0.7), seed_sd=0.1) == (
        "A better than B, by more than twice the spread between training seeds")
    assert sq.verdict(_comparison(0.5, 0.3, 0.7), seed_sd=0.4).startswith(
        "A better than B on these seeds, but by no more than twice the spread between training seeds (0.4)")
    assert sq.verdict(_comparison(-0.5, -0.7, -0.3), seed_sd=0.1).startswith("B better than A")
    assert sq.verdict(_comparison(0.1, -0.2, 0.4), seed_sd=0.1).startswith("no difference detectable at this size")
    assert sq.verdict(_comparison(0.5, math.nan, math.nan, exams=3), 0.1) == "no interval: 3 exams < 5"


def test_answer_pairs_each_seed_and_reports_its_difference():
    """Arm A is 1 dB above arm B on every slice of seed 0 and 3 dB on seed 1: mean 2, seed sd sqrt(2)."""
    rng = np.random.default_rng(0)
    rows = []
    for exam in range(6):
        for index in range(3):
            base = rng.normal(30, 2)
            for arm in (a.label for a in sq.ARMS):
                for seed, gain in ((0, 1.0), (1, 3.0)):
                    value = base + (gain if arm == "ref, ref Swin" else 0.0)
                    rows.append({"stage": "sr1", "arm": arm, "seed": seed, "exam_id": exam, "slice_index": index,
                                 "psnr": value, "ssim": 0.8})
    answer = sq.answer(pd.DataFrame(rows))
    row = answer.loc[("sr1", "ref, ref Swin", "ref, no Swin", "psnr")]
    assert row["difference"] == pytest.approx(2.0) and row["per_seed"] == "+1, +3"
    assert row["seed_sd"] == pytest.approx(math.sqrt(2)) and row["seeds"] == 2 and row["exams"] == 6
    assert row["verdict"].startswith("ref, ref Swin better than ref, no Swin on these seeds, but by no more than")
    same = answer.loc[("sr1", "ref, spatial Swin", "ref, no Swin", "ssim")]
    assert same["difference"] == 0 and same["verdict"].startswith("no difference detectable")
    means = sq.arm_table(pd.DataFrame(rows))
    assert means.loc[("sr1", "ref, ref Swin"), "psnr_mean"] - means.loc[("sr1", "ref, no Swin"), "psnr_mean"] == pytest.approx(2)
