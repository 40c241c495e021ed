"""Pipelines: checkpoint round trips, batch-size independence, cascade checks, sample files."""

import copy
import errno
import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mrnet_utils.presets import stage_config
from mrnet_utils.data.slices import SliceDataset
from mrnet_utils import files, pipeline
from mrnet_utils.diffusion.processes import PROCESSES
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import COMPLETE_FILE
from mrnet_utils.pipeline import (
    bf16_autocast,
    sample_cascade,
    sample_stage,
    save_grid,
    write_samples,
)
from mrnet_utils.training import loop as training
from mrnet_utils.training.checkpoint import load_stage
from torch_threads import one_thread

SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def valid_64(tiny_cache) -> torch.Tensor:
    """The 4 held-out slices at 64x64: low-res inputs for SR1."""
    return SliceDataset(tiny_cache, "valid", 64).images


def network_inputs(cfg, batch=3):
    """Seeded inputs covering several timesteps and, for SR stages, conditions at several augmentation levels."""
    generator = torch.Generator().manual_seed(1)
    side = cfg.resolution
    x = torch.randn(batch, 1, side, side, generator=generator)
    t = torch.tensor([0, cfg.diffusion.timesteps // 2, cfg.diffusion.timesteps - 1])
    extra = {}
    if cfg.is_super_resolution:
        extra = {"cond": torch.randn(batch, 1, side, side, generator=generator), "aug_level": torch.tensor([0, 0.3, 0.5])}
    return x, t, extra


@pytest.mark.parametrize("stage", ["base64", "sr1"])
def test_a_stage_rebuilt_from_its_checkpoint_alone_matches_the_trained_networks(stage, tiny_cache, tmp_path,
                                                                               monkeypatch):
    trained = {}
    write_grid = training._write_sample_grid

    def keep_the_trained_networks(state, *args):
        # Called once, at the end of training, with the live networks.
        trained["raw"], trained["ema"] = copy.deepcopy(state.model).eval(), copy.deepcopy(state.ema.module).eval()
        write_grid(state, *args)

    monkeypatch.setattr(training, "_write_sample_grid", keep_the_trained_networks)
    cfg = stage_config(stage, "smoke").replace(train=dict(steps=2))
    training.train(cfg, tiny_cache, tmp_path, progress=False)

    x, t, extra = network_inputs(cfg)
    with torch.no_grad():
        ema_out, raw_out = trained["ema"](x, t, **extra), trained["raw"](x, t, **extra)
        assert not torch.equal(ema_out, raw_out)  # so the comparisons below tell the two apart
        for use_ema, expected in ((True, ema_out), (False, raw_out)):
            loaded = load_stage(tmp_path, use_ema=use_ema)  # the run folder: its final.pt
            assert (loaded.config, loaded.step) == (cfg, 2)
            assert not loaded.model.training
            assert torch.equal(loaded.model(x, t, **extra), expected), f"use_ema={use_ema}"


def test_sample_i_depends_only_on_seed_i_not_on_the_batch(smoke_run, valid_64):
    """Batch sizes 1 and 4, and the seeds in reverse order, give the same image for each seed.

    With ResShift's chain on SR1 every kind of random draw is made: the starting noise, fresh noise at
    every step and the noise on the condition; each must come from the image's own seed.
    """
    stage = load_stage(smoke_run("sr1").folder)
    chain = ("resshift", 4)  # stochastic: fresh noise at every step
    one_by_one = sample_stage(stage.model, stage.config, SEEDS, valid_64, chain, batch_size=1, progress=False)
    together = sample_stage(stage.model, stage.config, SEEDS, valid_64, chain, batch_size=4, progress=False)
    reverse = sample_stage(stage.model, stage.config, SEEDS[::-1], valid_64.flip(0), chain, batch_size=4,
                           progress=False)
    assert one_by_one.shape == (4, 1, 128, 128)
    # CPU kernels may round differently with the batch size; far below anything a seed mix-up would cause.
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=1e-5)
    torch.testing.assert_close(reverse.flip(0), one_by_one, rtol=0, atol=1e-5)
    assert (one_by_one[1:] - one_by_one[:1]).abs().amax(dim=(1, 2, 3)).min() > 0.01  # the seeds differ


def test_cascade_refuses_stages_that_do_not_chain(smoke_run):
    base, sr1, sr2 = (load_stage(smoke_run(stage).folder) for stage in ("base64", "sr1", "sr2"))
    with pytest.raises(MRNetError, match=r"a cascade starts with a stage that generates from noise, not \['sr1'"):
        sample_cascade([sr1, base, sr2], [0], progress=False)
    with pytest.raises(MRNetError, match="stage base64 generates from noise; it cannot follow sr1"):
        sample_cascade([base, sr1, base], [0], progress=False)
    with pytest.raises(MRNetError, match="stage sr2 takes 128x128 inputs, but base64 before it makes 64x64 images"):
        sample_cascade([base, sr2], [0], progress=False)


def test_each_stage_of_a_cascade_samples_the_output_of_the_one_before_with_its_own_sampler(smoke_run, capsys):
    base, sr1 = (load_stage(smoke_run(stage).folder) for stage in ("base64", "sr1"))
    capsys.readouterr()  # the fixture's training bars
    with one_thread():
        images = sample_cascade([base, sr1], [0, 1], {"base64": ("ddim", 4)}, progress=False)
        assert capsys.readouterr().err == ""
        sample_cascade([base, sr1], [0], {"base64": ("ddim", 2)}, progress=True)
        bars = capsys.readouterr().err
        assert f"sample {base.config.name}" in bars and f"sample {sr1.config.name}" in bars, bars
        first = sample_stage(base.model, base.config, [0, 1], sampler=("ddim", 4), progress=False)
        second = sample_stage(sr1.model, sr1.config, [0, 1], first, progress=False)  # sr1's own chain
    assert list(images) == [64, 128]
    assert torch.equal(images[64], first) and torch.equal(images[128], second)


@pytest.mark.parametrize("samplers, message", [
    ({"sr2": ("resshift", 5)}, r"stage sr2 \(resshift\): steps=5 must be between 1 and the schedule's T=4"),
    ({"base64": ("dpmpp", 101)}, r"stage base64 \(dpmpp\): steps=101 must be between 1 and the schedule's T=100"),
    ({"base64": ("ddim", 30)}, r"stage base64 \(ddim\): DDIM steps=30 must divide the schedule's T=100"),
    ({"sr1": ("dpmpp", 5)}, r"stage sr1 \(dpmpp\): a resshift stage samples with resshift, not 'dpmpp'"),
], ids=["last-stage-steps", "first-stage-steps", "ddim-divisor", "wrong-process"])
def test_a_cascade_checks_every_stage_sampler_before_any_stage_samples(smoke_run, monkeypatch, samplers, message):
    """A bad sampler for the last stage used to surface only after the stages before it had sampled."""
    stages = [load_stage(smoke_run(stage).folder) for stage in ("base64", "sr1", "sr2")]
    calls = []
    for process in PROCESSES.values():
        monkeypatch.setattr(process, "sample", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(MRNetError, match=message) as refused:
        sample_cascade(stages, [0], samplers, progress=False)
    assert calls == [] and refused.value.parameter in ("steps", "sampler")


def test_sample_stage_refuses_mismatched_low_res_input(smoke_run, valid_64):
    base, sr1 = (load_stage(smoke_run(stage).folder) for stage in ("base64", "sr1"))
    with pytest.raises(MRNetError, match="got 3 low-res images for 4 seeds; give one per seed"):
        sample_stage(sr1.model, sr1.config, SEEDS, valid_64[:3], progress=False)
    with pytest.raises(MRNetError, match="stage sr1 needs low-res input"):
        sample_stage(sr1.model, sr1.config, SEEDS, progress=False)
    with pytest.raises(MRNetError, match="stage base64 takes no low-res input"):
        sample_stage(base.model, base.config, SEEDS, valid_64, progress=False)
    with pytest.raises(MRNetError, match=r"stage sr1 takes low-res images of shape \(N, 1, 64, 64\), got \(4, 1, 128, 128\)"):
        sample_stage(sr1.model, sr1.config, SEEDS, torch.zeros(4, 1, 128, 128), progress=False)
    with pytest.raises(MRNetError, match="a ddpm stage samples with ddpm, ddpm_large, ddim, dpmpp, dpmpp_sde, not 'euler'"):
        sample_stage(base.model, base.config, SEEDS, sampler=("euler", 5), progress=False)
    with pytest.raises(MRNetError, match="^draws=0 must be at least 1$"):
        sample_stage(base.model, base.config, SEEDS, draws=0, progress=False)


def test_write_samples_refuses_a_used_folder_and_overwrite_replaces_the_whole_set(tmp_path):
    """A second set written into a folder never mixes with the first: refused, or the first removed."""
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = write_samples(images, tmp_path / "samples", [0, 1, 2])
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(MRNetError, match=r"samples folder .*samples is not empty \(grid.png, notes.txt, "
                                         r"sample_000000.png and 4 more\); .* overwrite=True") as refused:
        write_samples(images[:1], out, [5])
    assert refused.value.parameter == "overwrite"
    write_samples(images[:1], out, [5], overwrite=True)
    assert sorted(path.name for path in out.iterdir()) == [COMPLETE_FILE, "grid.png", "notes.txt", "sample_000005.png",
                                                          "samples.json", "samples.npy"]
    assert np.array_equal(np.load(out / "samples.npy"), images[:1].numpy())
    # The marker lists the set, not the user's file carried over.
    assert sorted(json.loads((out / COMPLETE_FILE).read_text(encoding="utf-8"))["files"]) == [
        "grid.png", "sample_000005.png", "samples.json", "samples.npy"]


@pytest.mark.parametrize("target", ["png", "npy", "json"])
def test_disk_full_while_writing_samples_is_one_line_and_leaves_nothing_torn(tmp_path, monkeypatch, target):
    def full(*args, **kwargs):
        if target != "json":
            args[1 if target == "png" else 0].write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "png":
        monkeypatch.setattr(Image.Image, "save", full)
    elif target == "npy":
        monkeypatch.setattr(pipeline.np, "save", full)
    else:
        monkeypatch.setattr(files.json, "dumps", full)
    name, what = {"png": ("sample_000000.png", "sample"), "npy": ("samples.npy", "sample array"),
                  "json": ("samples.json", "sample record")}[target]
    with pytest.raises(MRNetError, match=rf"^cannot write {what} {name} to {tmp_path}: No space left on device; "
                                         "free disk space there or write to a disk with room"):
        write_samples(torch.zeros(2, 1, 16, 16), tmp_path, [0, 1])
    assert not list(tmp_path.glob(".*.partial")) and not (tmp_path / name).exists()
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))  # no temporary folder or lock beside it


def test_write_samples_names_each_image_by_its_seed(tmp_path):
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seeds = [7, 12, 123456]
    out = write_samples(images, tmp_path / "samples", seeds)
    names = {"sample_000007.png", "sample_000012.png", "sample_123456.png", "grid.png", "samples.npy", "samples.json",
             COMPLETE_FILE}
    assert {path.name for path in out.iterdir()} == names
    assert np.array_equal(np.load(out / "samples.npy"), images.numpy())
    assert json.loads((out / "samples.json").read_text(encoding="utf-8")) == {"seeds": seeds, "labels": {}, "guidance": None}
    for image, seed in zip(images, seeds):
        png = np.asarray(Image.open(out / f"sample_{seed:06d}.png")).astype(float)
        assert np.abs(png - (image[0].numpy() + 1) * 127.5).max() <= 0.5 + 1e-3  # 8-bit rounding only
    with pytest.raises(MRNetError, match="got 3 images for 2 seeds"):
        write_samples(images, tmp_path / "other", seeds[:2])
    with pytest.raises(MRNetError, match=re.escape(f"samples folder {out / 'samples.npy'} is a file")):
        write_samples(images, out / "samples.npy", seeds)  # a file, not a folder


def test_write_samples_creates_nested_folders_and_refuses_a_used_one_by_default(tmp_path):
    images = torch.zeros(1, 1, 8, 8)
    nested = write_samples(images, tmp_path / "a" / "b", [0])
    assert (nested / "sample_000000.png").is_file()
    user = tmp_path / "user"
    user.mkdir()
    for name in ("one", "two", "three"):
        (user / name).write_text("", encoding="utf-8")
    with pytest.raises(MRNetError, match=r"is not empty \(one, three, two\); choose an empty out_dir, or replace "
                                         r"what it holds with overwrite=True$"):
        write_samples(images, user, [0])
    (user / "four").write_text("", encoding="utf-8")
    with pytest.raises(MRNetError, match=r"is not empty \(four, one, three and 1 more\)"):
        write_samples(images, user, [0])
    assert write_samples(images, user, [0], overwrite=True) == user
    assert {"one", "two", "three", "four", "sample_000000.png"} <= {path.name for path in user.iterdir()}
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(MRNetError, match=re.escape(f"output folder {tmp_path / 'file' / 'samples'} is not writable "
                                                   "(Not a directory)")) as refused:
        write_samples(images, tmp_path / "file" / "samples", [0])
    assert refused.value.parameter == "out_dir"


def test_the_grid_shows_the_first_64_samples_and_labels_record_their_guidance(tmp_path):
    """make_grid, 8 to a row with 2-pixel gaps: 64 images of 16 x 16 make 8 rows of 18 pixels plus one gap."""
    out = write_samples(torch.zeros(70, 1, 16, 16), tmp_path / "samples", list(range(70)), labels={"acl": 1})
    assert Image.open(out / "grid.png").size == (8 * 18 + 2, 8 * 18 + 2)
    assert json.loads((out / "samples.json").read_text(encoding="utf-8")) == {"seeds": list(range(70)), "labels": {"acl": 1},
                                                              "guidance": 1.0}


def test_a_grid_has_the_rows_asked_for_and_white_gaps_and_a_full_disk_names_it(tmp_path, monkeypatch):
    path = save_grid(-torch.ones(8, 1, 16, 16), tmp_path / "grid.png", nrow=4)  # black images
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 18 + 2, 4 * 18 + 2)
    assert (grid[:2] == 255).all() and (grid[2:18, 2:18] == 0).all()  # a white gap, then the first image

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(MRNetError, match="^cannot write sample grid grid.png to "):
        save_grid(torch.zeros(2, 1, 16, 16), tmp_path / "grid.png")


@pytest.mark.skipif(torch.cuda.is_available(), reason="reads the request from torch's warning that CUDA is missing")
def test_bf16_autocast_is_asked_for_on_a_cuda_device_only_and_only_when_enabled():
    """Asked for without CUDA, torch warns and disables it: the warning shows that it was asked for."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bf16_autocast(torch.device("cpu"))  # bf16 on the CPU is slow: never asked for
        bf16_autocast(torch.device("cuda"), enabled=False)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert bf16_autocast(torch.device("cuda")).fast_dtype == torch.bfloat16  # enabled by default


def test_super_resolve_counts_the_network_evaluations_per_image(smoke_run, valid_64):
    from mrnet_utils.study.super_resolution import super_resolve

    stage = load_stage(smoke_run("sr1").folder)
    one = super_resolve(stage, valid_64[:3], batch_size=2, progress=False)
    two = super_resolve(stage, valid_64[:3], batch_size=3, progress=False, draws=2)
    assert one.evaluations == stage.config.diffusion.timesteps  # ResShift samples its T = 4 steps
    assert two.evaluations == 2 * one.evaluations and one.images.shape == (3, 1, 128, 128)
    assert not stage.model._forward_pre_hooks  # the counter is removed
