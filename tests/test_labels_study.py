"""The label study end to end on the tiny phantom: a label-conditional base stage, its guided samples
read by the probe, and the probe trained on real, synthetic and both."""

import numpy as np
import pytest

from mrnet_utils.data.mrnet import TASKS
from mrnet_utils.errors import MRNetError
from mrnet_utils.study import labels
from mrnet_utils.study.layout import StudyPaths
from mrnet_utils.training import checkpoint
from torch_threads import one_thread


@pytest.mark.slow
def test_the_label_study_trains_samples_probes_and_scores(tiny_cache, tmp_path):
    paths = StudyPaths(tmp_path, "smoke")
    with one_thread():
        run = labels.train_generator(paths, tiny_cache, progress=False)
        assert run.trained and run.run_dir == labels.run_dir(paths)
        trained = checkpoint.load_stage(run.run_dir, "cpu")
        assert trained.config.unet.num_labels == len(TASKS)
        train, valid, reported = labels.real_slices(tiny_cache, tuning=0)
        assert reported.all() and train.images.shape[-1] == 64
        label_probe = labels.probe.train_probe(train.images, train.labels, steps=2, progress=False)
        shares = labels.agreement(trained, label_probe, train, valid, reported, count=2, batch_size=4, progress=False)
        useful = labels.usefulness(trained, train, valid, reported, batch_size=4, probe_steps=2, progress=False)
    assert len(shares) == len(labels.REQUESTS) * len(labels.SCALES)
    assert list(shares.index.get_level_values("request").unique()) == [f"{t}={v}" for t in TASKS for v in (1, 0)]
    assert shares["share"].between(0, 1).all() and (shares["samples"] == 2).all()
    assert shares["nearest_r_median"].between(-1, 1).all() and shares["near_copies"].between(0, 1).all()
    # the real share is the same for every scale of a request, and counts the real slices of that label
    real = shares.groupby(level="request")["real_share"].nunique(dropna=False)
    assert (real == 1).all()
    assert shares.loc[("abnormal=1", 0.0), "real_slices"] == int(valid.labels[:, 0].sum())
    # each scale against the unconditional one, over the same seeds: the change is the difference in shares
    unconditional = shares.xs(0.0, level="guidance")
    for scale in labels.SCALES[1:]:
        guided = shares.xs(scale, level="guidance")
        assert np.allclose(guided["change"], guided["share"] - unconditional["share"])
        assert guided["verdict"].str.startswith("no interval: 2 exams").all()  # 2 seeds: too few to resample
    assert unconditional[["change", "verdict"]].isna().all().all()
    assert list(useful.index.get_level_values("trained on").unique()) == ["real", "synthetic", "real + synthetic"]
    assert (useful.xs("real + synthetic")["train_slices"] == 2 * len(train.images)).all()
    assert (useful["exams"] == len(np.unique(valid.exam_ids.numpy()))).all()


def test_a_change_in_share_is_paired_over_seeds_and_judged():
    baseline = np.zeros(40, bool)
    guided = np.arange(40) < 30
    change = labels._change(guided, baseline, 3.0, 0.0)
    assert change["change"] == 0.75 and 0.5 < change["change_low"] < 0.75 < change["change_high"] <= 1
    assert change["verdict"] == "guidance 3 better than guidance 0"
    assert labels._change(baseline, baseline, 1.0, 0.0)["verdict"] == "inconclusive: the data cannot exclude +0"
    with pytest.raises(MRNetError, match="request {'acl': 2} is not one label set to 1 or 0; the requests are abnormal=1"):
        labels.agreement(None, None, None, None, None, count=2, batch_size=2, requests=({"acl": 2},))
