"""The label probe: it learns labels that images show, and its exam-level AUC with an exam bootstrap."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import probe


def test_exam_auc_is_over_per_exam_means_and_says_when_it_has_no_interval():
    # Three positive exams with slice means 0.9, 0.4, 0.7 and three negative ones 0.5, 0.2, 0.1:
    # 8 of the 9 (positive, negative) pairs are ordered right.
    scores = [1.0, 0.8, 0.3, 0.5, 0.7, 0.7, 0.6, 0.4, 0.2, 0.2, 0.0, 0.2]
    labels = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    exams = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    auc = probe.exam_auc(scores, labels, exams)
    assert auc.value == pytest.approx(8 / 9) and (auc.exams, auc.positives) == (6, 3)
    assert math.isnan(auc.low) and math.isnan(auc.high)  # 3 exams per class < MIN_EXAMS
    assert math.isnan(probe.exam_auc([0.1, 0.2], [1, 1], [1, 2]).value)  # one class: no AUC at all
    with pytest.raises(MRNetError, match="an exam's slices carry different labels"):
        probe.exam_auc([0.1, 0.2], [0, 1], [1, 1])


def test_the_exam_bootstrap_interval_covers_the_true_auc_in_most_draws():
    """Exam scores N(1, 1) for positives, N(0, 1) for negatives: AUC = Phi(1 / sqrt 2) = 0.760."""
    truth = norm.cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(0)
    covered = 0
    for draw in range(100):
        labels = np.repeat([1, 0], 20)
        scores = rng.normal(labels.astype(float), 1.0)
        auc = probe.exam_auc(np.repeat(scores, 2), np.repeat(labels, 2), np.repeat(np.arange(40), 2),
                             samples=300, seed=draw)
        covered += auc.low <= truth <= auc.high
    assert covered >= 85  # nominal 95; percentile intervals of 40 exams run a little short


def test_the_probe_learns_labels_the_images_show():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(160, 3, generator=generator) < 0.5).float()
    images = torch.rand(160, 1, 128, 128, generator=generator) * 0.4 - 0.9  # at 128: the probe degrades to 64
    images[:, :, 40:60, 40:60] += labels[:, 1, None, None, None]  # acl: a bright square
    images[:, :, 80:100, :] += 0.6 * labels[:, 2, None, None, None]  # meniscus: a bright band
    trained = probe.train_probe(images[:120], labels[:120], steps=40, batch_size=16, progress=False)
    probs = probe.probabilities(trained, images[120:])
    assert probs.shape == (40, 3) and ((probs > 0) & (probs < 1)).all()
    held = labels[120:].numpy().astype(int)
    for task in (1, 2):  # shown: learned; abnormal is noise here
        assert probe.exam_auc(probs[:, task], held[:, task], np.arange(40)).value > 0.95
    agreement = probe.label_agreement(probs[held[:, 1] == 1], {"acl": 1})
    assert agreement["acl"] > 0.9
    with pytest.raises(MRNetError, match="unknown label 'knee'"):
        probe.label_agreement(probs, {"knee": 1})
    with pytest.raises(MRNetError, match="need one row of 3 labels per image"):
        probe.train_probe(images[:4], labels[:3], steps=1, progress=False)


def test_label_agreement_is_the_share_on_the_requested_side():
    probs = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.1, 0.3], [0.6, 0.4, 0.9]])
    assert probe.label_agreement(probs, {"abnormal": 1, "acl": 0}) == {"abnormal": 0.75, "acl": 0.75}
    assert probe.label_agreement(probs, {"meniscus": 1}) == {"meniscus": 0.5}
    sides = probe.on_requested_side(probs, {"acl": 0, "meniscus": 1})
    assert sides["acl"].tolist() == [True, False, True, True] and sides["meniscus"].tolist() == [True, False, False, True]
