"""Classifier-free guidance: label requests, the guided prediction, and sampling with labels."""

import json
import re

import pytest
import torch

from mrnet_utils import cli
from mrnet_utils.presets import stage_config
from mrnet_utils.diffusion.guidance import NULL, Guided, check_guidance, label_rows, parse_labels
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import build_network
from mrnet_utils.pipeline import TrainedStage, sample_cascade, sample_stage
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT, load_checkpoint
from torch_threads import one_thread


def _labelled(stage: str, labelled: bool = True):
    """A smoke network (label-conditional if `labelled`) whose output depends on its inputs."""
    cfg = stage_config(stage, "smoke").replace(unet={"num_labels": 3 if labelled else 0})
    torch.manual_seed(0)
    net = build_network(cfg.unet)
    with torch.no_grad():  # the output convolution starts at zero; give it weights
        conv = net.output[-1]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    return cfg, net.eval()


def test_labels_are_parsed_by_task_name_and_bad_requests_name_the_valid_ones():
    assert parse_labels("acl=1, meniscus=0") == {"acl": 1, "meniscus": 0}
    for text, message in [
        ("knee=1", "unknown label 'knee' in 'knee=1'; the labels are abnormal, acl, meniscus"),
        ("acl=2", "label 'acl=2' needs a value 0 or 1 (for example acl=1)"),
        ("acl", "label 'acl' needs a value 0 or 1"),
        ("acl=1,acl=0", "label acl is given twice"),
        (",", "no label in ','; give NAME=0|1 pairs of abnormal, acl, meniscus"),
    ]:
        with pytest.raises(MRNetError, match=re.escape(message)) as error:
            parse_labels(text)
        assert error.value.parameter == "labels"
    rows = label_rows({"acl": 1, "meniscus": 0}, 2)  # in TASKS order: abnormal, acl, meniscus
    assert rows.tolist() == [[NULL, 1, 0], [NULL, 1, 0]]
    with pytest.raises(MRNetError, match=r"^unknown label 'pcl'; the labels are abnormal, acl, meniscus$") as error:
        label_rows({"acl": 1, "pcl": 0}, 2)
    assert error.value.parameter == "labels"
    with pytest.raises(MRNetError, match="guidance=2.0 without labels") as error:
        check_guidance(None, 2.0)
    assert error.value.parameter == "guidance"


@pytest.mark.parametrize("stage", ["base64", "sr1"])
def test_the_guided_prediction_is_uncond_plus_scale_times_cond_minus_uncond(stage):
    cfg, net = _labelled(stage)
    generator = torch.Generator().manual_seed(3)
    side = cfg.resolution
    args = {"x": torch.randn(2, 1, side, side, generator=generator), "t": torch.tensor([10, 700])}
    if cfg.unet.cond_channels:  # per-sample extras travel with their own sample through the doubled batch
        args |= {"cond": torch.randn(2, cfg.unet.cond_channels, side, side, generator=generator),
                 "aug_level": torch.tensor([0.0, 0.3])}
    labels = torch.tensor([[1.0, 1.0, NULL], [0.0, NULL, 1.0]])
    with torch.no_grad():
        cond = net(**args, labels=labels)
        uncond = net(**args)  # no labels: every label null
        assert not torch.allclose(cond, uncond, atol=1e-4)
        assert torch.equal(Guided(net, 0)(**args, labels=labels), uncond)
        assert torch.equal(Guided(net, 1)(**args, labels=labels), cond)
        torch.testing.assert_close(Guided(net, 3)(**args, labels=labels), uncond + 3 * (cond - uncond),
                                   rtol=1e-4, atol=1e-5)
        assert torch.equal(Guided(net, 3)(**args), uncond)  # without labels: the network unchanged
    for scale in (-1.0, 30.5, float("nan"), 1e308):
        with pytest.raises(MRNetError, match=re.escape(f"guidance={scale} must lie between 0 and 30 (0: unconditional, "
                                                       "1: conditional")) as error:
            Guided(net, scale)
        assert error.value.parameter == "guidance"
    Guided(net, 30.0)  # the largest scale taken


def test_a_guided_call_doubles_per_sample_tensors_and_passes_the_rest_unchanged():
    """Three samples: the doubled batch of six splits into its conditional and unconditional halves."""
    seen = {}

    def model(x, t, labels, **extra):
        seen.update(extra, labels=labels, t=t)
        return x * (labels[:, :1].view(-1, 1, 1, 1) != NULL)  # conditional rows: x; unconditional ones: 0

    x, level = torch.randn(3, 1, 4, 4), torch.tensor(0.5)
    rows = label_rows({"abnormal": 1}, 3)
    out = Guided(model, 2.5)(x, torch.tensor([1, 2, 3]), labels=rows, cond=torch.ones(3, 1, 4, 4), level=level,
                             note=1.0)
    assert torch.equal(out, 2.5 * x)  # 0 + 2.5 (x - 0)
    assert seen["cond"].shape == (6, 1, 4, 4) and seen["t"].tolist() == [1, 2, 3, 1, 2, 3]
    assert seen["level"] is level and seen["note"] == 1.0  # not per sample: passed as they are
    assert torch.equal(seen["labels"], torch.cat([rows, torch.full_like(rows, NULL)]))


def test_guidance_zero_samples_the_unconditional_image_for_the_same_seed():
    cfg, net = _labelled("base64")
    labels = label_rows({"acl": 1}, 2)
    with one_thread():
        common = dict(sampler=("ddim", 4), progress=False)
        plain = sample_stage(net, cfg, [4, 5], **common)
        zero = sample_stage(net, cfg, [4, 5], **common, labels=labels, guidance=0)
        conditional = sample_stage(net, cfg, [4, 5], **common, labels=labels)
        guided = sample_stage(net, cfg, [4, 5], **common, labels=labels, guidance=4)
    assert torch.equal(zero, plain)
    assert not torch.allclose(conditional, plain, atol=1e-4) and not torch.allclose(guided, conditional, atol=1e-4)


def test_labels_reach_each_stage_that_takes_them_and_must_reach_one():
    seeds = [0, 1]
    base_cfg, base = _labelled("base64", labelled=False)
    sr_cfg, sr = _labelled("sr1")
    stages = [TrainedStage(base, base_cfg, 0, None), TrainedStage(sr, sr_cfg, 0, None)]
    common = dict(samplers={"base64": ("ddim", 4)}, progress=False)  # sr1: its own ResShift chain
    labels = label_rows({"meniscus": 1}, 2)
    with one_thread():
        plain = sample_cascade(stages, seeds, **common)
        labelled = sample_cascade(stages, seeds, **common, labels=labels, guidance=2)
    assert torch.equal(plain[64], labelled[64])  # the unlabelled base stage is untouched
    assert not torch.allclose(plain[128], labelled[128], atol=1e-4)
    with pytest.raises(MRNetError, match=r"^labels were given, but no stage of this pipeline was trained with labels "
                                         r"\(train a label-conditional stage: train --labels\)$") as refused:
        sample_cascade(stages[:1], seeds, **common, labels=labels)
    assert refused.value.parameter == "labels"
    with pytest.raises(MRNetError, match="guidance=2.0 without labels"):
        sample_cascade(stages, seeds, **common, guidance=2.0)
    with pytest.raises(MRNetError, match="stage base64 was trained without labels") as refused:
        sample_stage(base, base_cfg, seeds, sampler=("ddim", 4), progress=False, labels=labels)
    assert refused.value.parameter == "labels"
    with pytest.raises(MRNetError, match=r"^got 1 label rows for 2 seeds; give one per seed$") as refused:
        sample_stage(sr, sr_cfg, seeds, plain[64], progress=False, labels=labels[:1])
    assert refused.value.parameter == "labels"


def test_train_and_sample_with_labels_from_the_command_line(tiny_cache, tmp_path, capsys):
    run = tmp_path / "run"
    with one_thread():
        assert cli.main(["train", "--stage", "single256", "--preset", "smoke", "--steps", "2", "--labels",
                         "--no-grids", "--data", str(tiny_cache), "--out", str(run)]) == 0
    assert load_checkpoint(run / FINAL_CHECKPOINT)["config"]["unet"]["num_labels"] == 3
    out = tmp_path / "samples"
    command = ["sample", "--pipeline", "single256", "--checkpoints", str(run), "--n", "2", "--sampler", "ddim",
               "--steps", "2", "--device", "cpu", "--out", str(out)]
    with one_thread():
        assert cli.main([*command, "--labels", "acl=1,meniscus=0", "--guidance", "3"]) == 0
    record = json.loads((out / "samples.json").read_text(encoding="utf-8"))
    asked = {key: record[key] for key in ("seeds", "labels", "guidance")}  # beside the provenance (test_faults)
    assert asked == {"seeds": [0, 1], "labels": {"acl": 1, "meniscus": 0}, "guidance": 3.0}
    capsys.readouterr()
    assert cli.main([*command, "--labels", "knee=1", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown label 'knee'" in err and "the labels are abnormal, acl, meniscus" in err and "\n" not in err
