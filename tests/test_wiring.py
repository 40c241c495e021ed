"""Wiring where a mistake would be silent: every check recomputes the expected value on its own.

A super-resolution row trained on another slice's low-res image, a condition noised at another
level than the one the network is told, sampling at the training range of levels, an EMA that
never moves, timesteps that never reach 0, labels dropped on the way: each still trains and
samples, only worse. These tests need no trained model and no phantom: synthetic slices, a
hand-written slice cache, a recording stand-in for the network.
"""

import csv
import dataclasses
import math
import re
import signal
import time
import types
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from synthetic import smooth_slices, write_cache
from torch_threads import one_thread

from mrnet_utils.presets import PRESETS, default_sampler, stage_config
from mrnet_utils.data.slices import SliceDataset, degrade
from mrnet_utils.errors import MRNetError
from mrnet_utils.diffusion.processes import build_process, process_class
from mrnet_utils.diffusion.samplers import generators_from_seeds, noise_from_seeds
from mrnet_utils.networks import build_network
from mrnet_utils.networks.unet import UNet
from mrnet_utils.pipeline import TrainedStage, sample_stage
from mrnet_utils.study import generation, labels
from mrnet_utils.study.layout import GENERATORS, StudyPaths
from mrnet_utils.training import loop
from mrnet_utils.training.batches import draw_batch, to_device
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT, load_checkpoint, save_checkpoint
from mrnet_utils.training.distributed import Distributed

T = 100


def row_of(image: torch.Tensor, images: torch.Tensor) -> int:
    """The index of the one slice equal to `image`."""
    matches = [i for i, candidate in enumerate(images) if torch.equal(candidate, image)]
    assert len(matches) == 1, f"{len(matches)} slices match"
    return matches[0]


def upsampled(low_res: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """SR3's bilinear upsampling, or ResShift's bicubic one clamped to the data range, half-pixel centres."""
    out = F.interpolate(low_res, size=(side, side), mode=mode, align_corners=False)
    return out if mode == "bilinear" else out.clamp(-1, 1)


def implied_noise(cond: torch.Tensor, clean: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The augmentation noise n of cond = sqrt(1 - l^2) clean + l n (Ho et al. 2021), row by row."""
    level = level.double().view(-1, 1, 1, 1)
    return (cond.double() - (1 - level**2).sqrt() * clean.double()) / level


def assert_unit_gaussian_rows(noise: torch.Tensor) -> None:
    """Each row a fresh N(0, I) draw: mean 0 and variance 1 within five standard errors, rows uncorrelated."""
    pixels = noise[0].numel()
    flat = noise.flatten(1)
    assert (flat.mean(1).abs() < 5 / math.sqrt(pixels)).all(), flat.mean(1)
    assert ((flat.var(1) - 1).abs() < 5 * math.sqrt(2 / pixels)).all(), flat.var(1)
    correlation = torch.corrcoef(flat)
    assert (correlation - torch.eye(len(flat), dtype=correlation.dtype)).abs().max() < 5 / math.sqrt(pixels)


def sr_config(process: str, augment: bool = True):
    """The smoke SR1 stage with `process`: its own ResShift, or DDPM with SR3 conditioning (the reference's)."""
    cfg = stage_config("sr1", "smoke").replace(conditioning=dict(enabled=augment, max_level=0.5, sample_level=0.1))
    if process == "ddpm":
        cfg = cfg.replace(diffusion=dict(process="ddpm", timesteps=T, prediction="epsilon"))
    return cfg


# --- training batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("process, mode", [("ddpm", "bilinear"), ("resshift", "bicubic")])
def test_each_training_row_is_conditioned_on_its_own_low_res_image_at_the_level_it_is_given(process, mode):
    """Over a few steps (crossing an epoch of 6 slices), row i's condition is sqrt(1 - l^2) up(low_res[j]) + l n
    with j the slice of row i's target, l the row's `aug_level` and n fresh unit noise; ResShift's y_0 is
    up(low_res[j]) itself."""
    cfg = sr_config(process)
    images = smooth_slices(6, 128)
    low_res = degrade(images, 64)
    levels = []
    for step in range(4):
        batch = draw_batch(cfg, build_process(cfg.diffusion), step, images, low_res, torch.zeros(6, 3))
        rows = [row_of(x0, images) for x0 in batch.x0]
        clean = upsampled(low_res[rows], 128, mode)
        level = batch.extra_args["aug_level"]
        assert level.shape == (len(rows),) and (level > 0).all() and (level <= 0.5).all()
        noise = implied_noise(batch.extra_args["cond"], clean, level)
        assert_unit_gaussian_rows(noise)
        # the augmentation noise is not the diffusion noise of the same row
        assert abs(float(torch.corrcoef(torch.stack([noise.flatten(), batch.noise.double().flatten()]))[0, 1])) < 0.02
        if process == "ddpm":
            assert batch.y0 is None
        else:
            torch.testing.assert_close(batch.y0, clean.float(), rtol=0, atol=1e-6)
        levels.append(level)
    levels = torch.cat(levels)
    assert levels.std() > 0.05  # drawn per row, not one level for the batch


@pytest.mark.parametrize("process, mode", [("ddpm", "bilinear"), ("resshift", "bicubic")])
def test_without_augmentation_the_condition_is_the_clean_upsampled_low_res_image_at_level_zero(process, mode):
    cfg = sr_config(process, augment=False)
    images = smooth_slices(6, 128, seed=1)
    low_res = degrade(images, 64)
    batch = draw_batch(cfg, build_process(cfg.diffusion), 0, images, low_res, torch.zeros(6, 3))
    rows = [row_of(x0, images) for x0 in batch.x0]
    assert torch.equal(batch.extra_args["aug_level"], torch.zeros(len(rows)))
    torch.testing.assert_close(batch.extra_args["cond"], upsampled(low_res[rows], 128, mode), rtol=0, atol=1e-6)


def test_a_batch_is_a_function_of_the_seed_and_the_step_alone():
    """Every draw comes from the (seed, step) generator, none from torch's global one: the same batch twice,
    whatever ran in between, and another one at the next step or seed. The first timesteps of the stream are
    pinned: a resumed run and a run on k processes rely on them, and a changed seeding would silently
    change every run's data."""
    cfg = sr_config("ddpm").replace(unet=dict(num_labels=3), train=dict(label_dropout=0.1, seed=3, batch_size=12))
    images = smooth_slices(6, 128, seed=4)
    low_res = degrade(images, 64)
    labels = torch.tensor([[(code >> bit) & 1 for bit in range(3)] for code in range(6)], dtype=torch.float32)

    def fields(batch):
        return [batch.x0, batch.t, batch.noise, *(batch.extra_args[key] for key in ("cond", "aug_level", "labels"))]

    process = build_process(cfg.diffusion)
    first = draw_batch(cfg, process, 5, images, low_res, labels)
    torch.rand(7)  # the global generator moves; the batch must not
    for same, again in zip(fields(first), fields(draw_batch(cfg, process, 5, images, low_res, labels))):
        assert torch.equal(same, again)
    for other in (draw_batch(cfg, process, 6, images, low_res, labels),
                  draw_batch(cfg.replace(train=dict(seed=4)), process, 5, images, low_res, labels)):
        assert not torch.equal(first.noise, other.noise) and not torch.equal(first.t, other.t)
    assert first.t.tolist() == PINNED_TIMESTEPS


PINNED_TIMESTEPS = [38, 6, 36, 78, 66, 7, 12, 94, 26, 49, 66, 28]  # seed 3, step 5, T = 100, batch of 12


def test_to_device_gives_each_rank_its_own_rows_of_every_tensor():
    cfg = sr_config("resshift")
    images = smooth_slices(4, 128, seed=5)
    batch = draw_batch(cfg, build_process(cfg.diffusion), 0, images, degrade(images, 64), torch.zeros(4, 3))
    for rank, channels_last in ((0, True), (1, False)):
        moved = to_device(batch, Distributed(rank=rank, world_size=2), torch.device("cpu"), channels_last)
        rows = slice(2 * rank, 2 * rank + 2)
        pairs = [(moved.x0, batch.x0), (moved.t, batch.t), (moved.noise, batch.noise), (moved.y0, batch.y0),
                 *((moved.extra_args[key], value) for key, value in batch.extra_args.items())]
        assert moved.extra_args.keys() == batch.extra_args.keys()
        for got, given in pairs:  # (one-channel images: channels-last is their usual layout, nothing to see)
            assert torch.equal(got, given[rows])


def test_each_row_carries_its_own_slice_labels_or_null_ones_at_the_dropout_rates():
    """Rows dropped whole (the unconditional model) at rate p, and each remaining label at rate p."""
    cfg = stage_config("base64", "smoke").replace(unet=dict(num_labels=3), train=dict(label_dropout=0.25))
    images = smooth_slices(8, 64, seed=2)
    labels = torch.tensor([[(code >> bit) & 1 for bit in range(3)] for code in range(8)], dtype=torch.float32)
    whole = entries = rows = 0
    for step in range(30):
        batch = draw_batch(cfg, build_process(cfg.diffusion), step, images, None, labels)
        for x0, given in zip(batch.x0, batch.extra_args["labels"]):
            rows += 1
            own = labels[row_of(x0, images)]
            kept = given != -1
            assert torch.equal(given[kept], own[kept])  # a label is its slice's own, or null
            whole += int((~kept).all())
            entries += int((~kept).sum())
    # all null: 0.25 + 0.75 * 0.25**3 = 0.262 of 120 rows (31.4, sd 4.8);
    # null entries: 0.25 + 0.75 * 0.25 = 0.4375 of 360 (157.5, sd 9.4)
    assert rows == 120 and 17 <= whole <= 46 and 129 <= entries <= 186


def test_training_timesteps_are_uniform_over_all_of_0_to_T_minus_1(tmp_path, monkeypatch):
    """The timesteps train() draws over a run (the steps themselves stubbed out): every t in [0, T) appears,
    none outside, at a uniform rate."""
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=100, batch_size=16, ema_decay=0.0))
    seen = []

    def record_only(state, net, batch, *args):
        seen.append(batch.t)
        state.step += 1
        return torch.zeros(())

    monkeypatch.setattr(loop, "train_step", record_only)
    loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False)
    t = torch.cat(seen)
    assert len(t) == 1600 and t.dtype == torch.int64
    counts = torch.bincount(t, minlength=T)
    assert len(counts) == T and (counts > 0).all()  # 0 and T - 1 included, nothing past T - 1
    # chi-square with 99 degrees of freedom: 160 is beyond its 99.99th percentile
    assert float(((counts - 16.0) ** 2 / 16.0).sum()) < 160


# --- the training loop ---------------------------------------------------------------------------


def test_the_ema_follows_its_recurrence_over_the_raw_weights_of_each_step(tmp_path, monkeypatch):
    """EMA_1 = theta_1 (torch.optim.swa_utils copies on the first update), EMA_k = d EMA_{k-1} + (1 - d) theta_k,
    computed here in float64 from the raw weights recorded after each step and compared with the checkpoint's EMA."""
    decay = 0.8
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=4, ema_decay=decay, lr=1e-2, warmup_steps=1))
    raw = []
    step = loop.train_step

    def record(state, *args):
        loss = step(state, *args)
        raw.append({name: p.detach().double().clone() for name, p in state.model.named_parameters()})
        return loss

    monkeypatch.setattr(loop, "train_step", record)
    with one_thread():
        loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False)
    expected = raw[0]
    for weights in raw[1:]:
        expected = {name: decay * expected[name] + (1 - decay) * weights[name] for name in weights}
    ema = load_checkpoint(tmp_path / "run" / FINAL_CHECKPOINT)["ema"]
    assert len(raw) == 4
    moved = 0.0
    for name, value in expected.items():
        torch.testing.assert_close(ema[f"module.{name}"].double(), value, rtol=0, atol=1e-6)
        moved = max(moved, float((value - raw[-1][name]).abs().max()))
    assert moved > 1e-3  # the EMA is not the last raw weights, so the check above tells them apart


class Recording(nn.Module):
    """The network, with what each call received besides (x_t, t)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.calls: list[dict] = []

    def forward(self, x, t, **extra):
        self.calls.append({key: value.detach().clone() for key, value in extra.items()})
        return self.network(x, t, **extra)


def test_labels_reach_a_label_conditional_network_in_training(tmp_path, monkeypatch):
    cfg = stage_config("base64", "smoke").replace(
        unet=dict(num_labels=3), train=dict(steps=2, ema_decay=0.0, label_dropout=0.0)
    )
    built = []

    def build_recording(unet_cfg):
        built.append(Recording(UNet(unet_cfg)))
        return built[-1]

    monkeypatch.setattr(loop, "build_network", build_recording)
    with one_thread():
        loop.train(cfg, write_cache(tmp_path / "cache.npz", 8), tmp_path / "run", progress=False, grids=False)
    calls = built[0].calls
    assert len(calls) == 2
    given = torch.cat([call["labels"] for call in calls])
    assert given.shape == (2 * cfg.train.batch_size, 3)
    assert set(given.unique().tolist()) == {0.0, 1.0}  # labels 0..7 written to the cache, none dropped


def test_a_label_conditional_network_answers_to_its_labels():
    cfg = stage_config("base64", "smoke").replace(unet=dict(num_labels=3))
    torch.manual_seed(0)
    net = UNet(cfg.unet).eval()
    with torch.no_grad():
        net.output[-1].weight.normal_(0, 0.1)  # the output layer starts at zero
        x, t = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 10])
        outputs = [net(x, t, labels=torch.tensor([row, row], dtype=torch.float32))
                   for row in ([0, 0, 0], [1, 0, 0], [0, 1, 1], [-1, -1, -1])]
        assert torch.equal(net(x, t), outputs[3])  # no labels: the null label of classifier-free guidance
    for i in range(4):
        for j in range(i):
            assert (outputs[i] - outputs[j]).abs().max() > 1e-4, (i, j)


# --- sampling ------------------------------------------------------------------------------------


class ZeroModel(nn.Module):
    """Predicts zeros and records the condition and level of every call."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # sample_stage reads the device from the parameters
        self.calls: list[dict] = []

    def forward(self, x, t, **extra):
        self.calls.append({key: value.detach().clone() for key, value in extra.items()})
        return torch.zeros_like(x)


@pytest.mark.parametrize("process, sampler, mode", [("ddpm", ("ddim", 2), "bilinear"),
                                                    ("resshift", ("resshift", 4), "bicubic")])
@pytest.mark.parametrize("augment", [True, False], ids=["augmented", "clean"])
def test_sampling_conditions_each_image_on_its_low_res_input_at_the_configured_level(process, sampler, mode, augment):
    """sample_level (0.1; not max_level 0.5) when augmentation is on, 0 and the clean condition when off; the same
    condition at every step; row i from low_res[i]."""
    cfg = sr_config(process, augment)
    low_res = degrade(smooth_slices(3, 128, seed=4), 64)
    model = ZeroModel()
    sample_stage(model, cfg, [5, 6, 7], low_res, sampler, batch_size=3, progress=False)
    assert len(model.calls) == sampler[1]
    first = model.calls[0]
    for call in model.calls:
        assert torch.equal(call["cond"], first["cond"]) and torch.equal(call["aug_level"], first["aug_level"])
    clean = upsampled(low_res, 128, mode)
    if augment:
        assert torch.equal(first["aug_level"], torch.full((3,), 0.1))
        assert_unit_gaussian_rows(implied_noise(first["cond"], clean, first["aug_level"]))
    else:
        assert torch.equal(first["aug_level"], torch.zeros(3))
        torch.testing.assert_close(first["cond"], clean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("process, mode", [("ddpm", "bilinear"), ("resshift", "bicubic")])
def test_sampling_draws_from_the_stages_own_streams_and_averages_its_draws(process, mode, monkeypatch):
    """Each draw d starts from the noise stream's draw d and steps with that draw's generators; the condition's
    augmentation noise comes from the condition stream (not the noise stream); ResShift's chain ends at y_0, the
    bicubic upsampling of the image's own low-res input (DDPM has none); the step bar is passed on; the images
    of `draws` draws are averaged."""
    cfg = sr_config(process)
    spec, seeds, shape = cfg.spec, [5, 6, 7], (1, 128, 128)
    low_res = degrade(smooth_slices(3, 128, seed=4), 64)
    calls = []

    def recording_sample(self, model, sampler, noise, extra_args, generators, y0, progress):
        first_numbers = torch.stack([torch.randn(4, generator=g) for g in generators])
        calls.append(dict(noise=noise, extra=extra_args, numbers=first_numbers, y0=y0, progress=progress))
        return noise * 0.6 + 0.1 * len(calls)  # a different image per draw, often outside [-1, 1]

    monkeypatch.setattr(process_class(cfg.diffusion.process), "sample", recording_sample)
    out = sample_stage(ZeroModel(), cfg, seeds, low_res, batch_size=3, progress=False, draws=2, step_progress=True)
    assert len(calls) == 2
    for draw, call in enumerate(calls):
        assert torch.equal(call["noise"], noise_from_seeds(seeds, shape, "cpu", stream=spec.noise_stream, draw=draw))
        fresh = generators_from_seeds(seeds, "cpu", stream=spec.noise_stream, draw=draw)
        assert torch.equal(call["numbers"], torch.stack([torch.randn(4, generator=g) for g in fresh]))
        assert call["progress"] is True
    clean = upsampled(low_res, 128, mode)
    augmentation = implied_noise(calls[0]["extra"]["cond"], clean, calls[0]["extra"]["aug_level"])
    expected = noise_from_seeds(seeds, shape, "cpu", stream=spec.condition_stream).double()
    torch.testing.assert_close(augmentation, expected, rtol=0, atol=1e-4)
    if process == "ddpm":
        assert calls[0]["y0"] is None
    else:
        torch.testing.assert_close(calls[0]["y0"], clean, rtol=0, atol=1e-6)
    images = [call["noise"] * 0.6 + 0.1 * (i + 1) for i, call in enumerate(calls)]
    torch.testing.assert_close(out, (images[0].clamp(-1, 1) + images[1].clamp(-1, 1)) / 2, rtol=0, atol=1e-6)


def test_a_unit_range_stage_returns_its_images_in_minus_one_to_one(monkeypatch):
    """A stage trained on [0, 1] images samples in [0, 1]; what it returns is on the project's [-1, 1]."""
    cfg = sr_config("ddpm", augment=False).replace(diffusion=dict(data_range="unit"))
    monkeypatch.setattr(process_class("ddpm"), "sample", lambda self, model, sampler, noise, *rest:
                        torch.full_like(noise, 0.75))
    out = sample_stage(ZeroModel(), cfg, [0, 1], torch.zeros(2, 1, 64, 64), progress=False)
    assert torch.equal(out, torch.full((2, 1, 128, 128), 0.5))


# --- the training state ----------------------------------------------------------------------------


def test_the_optimiser_takes_the_configured_learning_rate_weight_decay_and_linear_warm_up():
    """AdamW over every parameter with cfg's lr and weight decay; the lr ramps as lr (k + 1) / warmup over the first
    `warmup` steps, then holds; no warm-up (0) starts at lr; an EMA decay of 0 keeps no EMA."""
    cfg = stage_config("base64", "smoke").replace(train=dict(lr=2e-4, weight_decay=0.03, warmup_steps=4, ema_decay=0.9))
    state = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    group = state.optimizer.param_groups[0]
    assert isinstance(state.optimizer, torch.optim.AdamW) and group["weight_decay"] == 0.03
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in state.model.parameters())
    rates = []
    for _ in range(6):
        rates.append(state.optimizer.param_groups[0]["lr"])
        state.optimizer.step()
        state.lr_scheduler.step()
    assert rates == pytest.approx([0.5e-4, 1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4], rel=1e-12)
    at_once = loop.build_state(cfg.replace(train=dict(warmup_steps=0, ema_decay=0)), torch.device("cpu"), False)
    assert at_once.optimizer.param_groups[0]["lr"] == 2e-4 and at_once.ema is None
    assert state.ema is not None


def test_channels_last_lays_out_the_convolution_weights_channels_last():
    """Checked on the weights that have one layout per format: more than one input channel and a kernel over 1 x 1."""
    cfg = stage_config("base64", "smoke")
    for channels_last in (True, False):
        model = loop.build_state(cfg, torch.device("cpu"), channels_last=channels_last).model
        kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2:] != (1, 1)]
        assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last
                               and p.is_contiguous() != channels_last for p in kernels)


def test_train_runs_on_the_device_it_is_given(tmp_path, monkeypatch):
    asked, real = [], loop.process_device
    monkeypatch.setattr(loop, "process_device", lambda requested: asked.append(requested) or real(requested))
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=1, batch_size=2, ema_decay=0.0))
    loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False, device="cpu")
    assert asked == ["cpu"]


def test_restore_brings_back_the_counters_the_weights_and_the_random_state(tmp_path):
    """What a resumed run continues from: its step, skipped batches, last validation loss, training time so far,
    its weights, EMA, optimiser and the global random state."""
    cfg = stage_config("base64", "smoke")
    state = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    with torch.no_grad():
        next(state.model.parameters()).add_(1.0)
    state.step, state.skipped, state.val_loss = 7, 2, 0.25
    torch.manual_seed(123)
    save_checkpoint(tmp_path, state.payload(cfg, 7, seconds=12.5))
    expected_draw = torch.rand(3)
    fresh = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    assert loop.restore(fresh, cfg, tmp_path) == tmp_path / "step_00000007.pt"
    assert (fresh.step, fresh.skipped, fresh.val_loss, fresh.seconds_before) == (7, 2, 0.25, 12.5)
    assert torch.equal(torch.rand(3), expected_draw)
    for restored, saved in ((fresh.model, state.model), (fresh.ema, state.ema)):
        assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), saved.state_dict().values()))
    assert fresh.optimizer.state_dict()["param_groups"] == state.optimizer.state_dict()["param_groups"]
    assert loop.restore(loop.build_state(cfg, torch.device("cpu"), False), cfg, tmp_path / "empty") is None
    (tmp_path / FINAL_CHECKPOINT).write_bytes(b"torn")  # a damaged final checkpoint: the step checkpoint serves
    with pytest.warns(UserWarning, match=rf"^skipping {tmp_path / FINAL_CHECKPOINT}: "):
        assert loop.restore(loop.build_state(cfg, torch.device("cpu"), False), cfg, tmp_path).name == "step_00000007.pt"
    old = state.payload(cfg, 8, seconds=13.0)
    del old["log"]["val_loss"]  # checkpoints before 2026-11-30 have none
    save_checkpoint(tmp_path / "old", old)
    older = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    loop.restore(older, cfg, tmp_path / "old")
    assert math.isnan(older.val_loss)


def test_a_stop_names_resume_as_the_way_on_only_when_the_run_can_continue():
    stopped = loop.TrainingStopped(15, "SIGTERM stopped training", None, 3, resumable=True)
    complete = loop.TrainingStopped(15, "SIGTERM stopped training after its last step", None, 4, resumable=False)
    assert (stopped.parameter, complete.parameter) == ("resume", None)
    assert (stopped.signum, stopped.step, complete.step) == (15, 3, 4)


def _quick_smoke(monkeypatch, quick: dict) -> None:
    """The smoke preset with quick samplers that differ from its defaults (its own are its defaults)."""
    monkeypatch.setitem(PRESETS, "smoke", dataclasses.replace(PRESETS["smoke"], quick_samplers=quick))


def test_training_grids_sample_the_ema_weights_as_the_config_says(tmp_path, monkeypatch):
    """The EMA's weights (the raw ones without EMA) in eval mode, at the configured precision, four images to a
    row: a super-resolution stage's upsampled inputs above its samples; with the stage's quick sampler."""
    _quick_smoke(monkeypatch, {"base64": ("ddim", 4)})
    seen = []

    def recording_sample_stage(network, cfg, seeds, low_res, sampler, mixed_precision, progress, step_progress):
        assert sampler == (("ddim", 4) if cfg.stage == "base64" else default_sampler(cfg))
        seen.append((network, network.training, mixed_precision, progress, step_progress))
        return torch.zeros(4, 1, cfg.resolution, cfg.resolution)

    monkeypatch.setattr(loop, "sample_stage", recording_sample_stage)
    for stage, decay, rows in (("base64", 0.9, 1), ("sr1", 0.0, 2)):
        cfg = stage_config(stage, "smoke").replace(train=dict(ema_decay=decay, mixed_precision=False))
        state = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
        low_res = torch.zeros(6, 1, 64, 64) if cfg.is_super_resolution else None
        loop._write_sample_grid(state, cfg, low_res, tmp_path / f"{stage}.png", progress=True)
        network = state.ema.module if decay else state.model
        assert seen[-1][0] is network and network.training  # sampled in eval mode, then back to training
        assert seen[-1][1:] == (False, False, False, True)  # no bar over the 4 images; the steps' bar as asked
        side = cfg.resolution + 2  # 2-pixel gaps
        assert Image.open(tmp_path / f"{stage}.png").size == (4 * side + 2, rows * side + 2)


def test_the_studys_samples_use_the_quick_samplers_and_say_so(tmp_path, monkeypatch):
    """The generation experiment and the label study sample with the preset's quick samplers, not the defaults,
    and the generation record names them."""
    _quick_smoke(monkeypatch, {"single256": ("ddim", 4), "base64": ("ddim", 2)})
    cfg = stage_config("single256", "smoke")
    stage = TrainedStage(build_network(cfg.unet).eval(), cfg, 0, None)
    monkeypatch.setattr(generation, "find_run", lambda paths, *run: tmp_path)
    monkeypatch.setattr(generation.checkpoint, "load_stage", lambda path, device: stage)
    single = next(generator for generator in GENERATORS if generator.stages == (("single256", True, None),))
    with one_thread():
        generated = generation.generate(StudyPaths(tmp_path, "smoke"), single, 2, batch_size=2, progress=False)
    assert generated.samplers == "ddim 4" != " ".join(map(str, default_sampler(cfg)))
    assert generated.images[256].shape == (2, 1, 256, 256)
    asked = []
    monkeypatch.setattr(labels, "sample_stage", lambda model, cfg, seeds, sampler, **kwargs: asked.append(sampler))
    labels.guided_samples(None, stage_config("base64", "smoke"), {"acl": 1}, 2.0, 2, 2, 0, False)
    assert asked == [("ddim", 2)]


def test_a_fresh_run_refuses_a_folder_with_step_checkpoints_alone_naming_the_newest(tmp_path):
    (tmp_path / "step_00000002.pt").write_bytes(b"")
    with pytest.raises(MRNetError, match=r"already holds a training run \(step_00000002.pt\)") as refused:
        loop._refuse_earlier_run(tmp_path)
    assert refused.value.parameter == "resume"
    (tmp_path / "step_00000004.pt").write_bytes(b"")
    (tmp_path / FINAL_CHECKPOINT).write_bytes(b"")
    with pytest.raises(MRNetError, match=rf"already holds a training run \({FINAL_CHECKPOINT}\)"):
        loop._refuse_earlier_run(tmp_path)


def one_step(grad_clip: float, on_nonfinite: str = "stop", noise_scale: float = 1.0, last_good=None):
    """One train_step of the smoke base model on a fixed batch; returns the reported gradient norm (recomputed
    here, unclipped, from the same batch and weights) and the gradients the step left in the parameters."""
    cfg = stage_config("base64", "smoke").replace(train=dict(grad_clip=grad_clip, on_nonfinite=on_nonfinite))
    torch.manual_seed(0)
    state = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    images = smooth_slices(4, 64)
    batch = draw_batch(cfg, build_process(cfg.diffusion), 0, images, None, torch.full((4, 3), -1))
    batch = dataclasses.replace(batch, noise=batch.noise * noise_scale)  # a large target, a large gradient
    process = build_process(cfg.diffusion, torch.device("cpu"))
    reference = loop.build_state(cfg, torch.device("cpu"), channels_last=False).model
    reference.load_state_dict(state.model.state_dict())
    process.loss(reference, batch.x0, batch.t, batch.noise, batch.extra_args, None).mean().backward()
    raw = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in reference.parameters()]))
    loop.train_step(state, state.model, batch, process, cfg, nullcontext(), last_good)
    return raw, [p.grad for p in state.model.parameters()], [p.grad for p in reference.parameters()]


def norm(grads):
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


@pytest.mark.parametrize("grad_clip", [1.0, 0.05])
def test_a_step_clips_the_gradient_norm_to_grad_clip(grad_clip):
    """Adam's first step barely depends on the gradient's scale, so the clipping is read from the gradients the step
    leaves behind: the raw ones scaled by grad_clip / norm when the norm exceeds grad_clip (1.0 is the default)."""
    raw, clipped, unclipped = one_step(grad_clip, noise_scale=40.0)
    assert float(raw) > 1.5 * grad_clip  # the batch's gradient is beyond the clip, so clipping must act
    assert norm(clipped) == pytest.approx(grad_clip, rel=1e-4)
    for got, want in zip(clipped, unclipped):
        torch.testing.assert_close(got, want * (grad_clip / raw), rtol=1e-4, atol=1e-9)


def test_a_grad_clip_of_zero_leaves_the_gradients_as_they_are():
    raw, grads, unclipped = one_step(0.0, noise_scale=40.0)
    # Every parameter is in the loss's graph (its gradient a tensor, if zero: the zero-initialised output layer
    # passes nothing back at first), so zeroing gradients in place or dropping them gives the same update.
    assert all(grad is not None for grad in unclipped)
    assert float(raw) > 1.0 and norm(grads) == pytest.approx(float(raw), rel=1e-5)
    for got, want in zip(grads, unclipped):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)


def test_a_nonfinite_step_with_no_checkpoint_yet_says_so_and_how_to_go_on():
    message = ("non-finite loss at step 0 of base64_swin; the last good checkpoint is none (no checkpoint written yet) "
               "and is left intact. Lower the learning rate or set on_nonfinite='skip'")
    with pytest.raises(MRNetError, match=f"^{re.escape(message)}$"):
        one_step(1.0, noise_scale=math.inf)


def test_a_log_row_gives_the_images_per_second_since_the_last_row_and_a_blank_val_loss_until_one_is_measured(
        monkeypatch):
    clock = iter([10.5, 12.5])
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    window = loop._RateWindow(10.0)
    window.images += 40  # a new window starts at no images
    scheduler = types.SimpleNamespace(get_last_lr=lambda: [2e-4])
    state = types.SimpleNamespace(step=3, lr_scheduler=scheduler, skipped=1, val_loss=math.nan)
    first = loop._log_row(state, torch.tensor(0.5), window, elapsed=7.31)
    assert first == {"step": 3, "loss": "0.500000", "lr": "2.000e-04", "images_per_s": "80.00", "elapsed_s": "7.3",
                     "skipped": 1, "val_loss": ""}
    window.images += 6  # the window restarted at the first row: 6 images in the 2 s since
    state.val_loss = 0.25
    second = loop._log_row(state, torch.tensor(0.5), window, elapsed=9.0)
    assert (second["images_per_s"], second["val_loss"]) == ("3.00", "0.250000")


def test_restore_refuses_a_checkpoint_trained_on_other_slices_naming_data_path(tmp_path):
    """The slice cache a state was trained on travels in its checkpoint, so a resume on another cache is refused."""
    cfg = stage_config("base64", "smoke")
    record = {"path": "/a/coronal.npz", "content_sha256": "a" * 64, "plane": "coronal", "selection": "central",
              "normalisation": "percentile", "central_slices": 2}
    state = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    state.data = record
    save_checkpoint(tmp_path, state.payload(cfg, 3, seconds=1.0))
    other = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    other.data = record | {"path": "/b/coronal.npz", "content_sha256": "b" * 64}
    with pytest.raises(MRNetError, match=re.escape(f"checkpoint {tmp_path / 'step_00000003.pt'} was trained on "
                                                   "/a/coronal.npz (plane coronal")) as refused:
        loop.restore(other, cfg, tmp_path)
    assert refused.value.parameter == "data_path"
    same = loop.build_state(cfg, torch.device("cpu"), channels_last=False)
    same.data = dict(record)
    assert loop.restore(same, cfg, tmp_path) == tmp_path / "step_00000003.pt"


@pytest.mark.parametrize("stage", ["base64", "sr1"])
def test_the_plateau_schedule_validates_at_each_epochs_end_numbering_the_epochs_from_one(
        stage, tiny_cache, tmp_path, monkeypatch):
    """8 train slices in batches of 3: an epoch is 3 steps (the last batch short of an epoch's slices counts), and
    the validation loss of epoch e is measured after step 3e, seeded by e, on the valid slices (and, for an SR
    stage, their own low-res images)."""
    cfg = stage_config(stage, "smoke").replace(
        train=dict(epochs=3, batch_size=3, lr_schedule="plateau", log_every=1, ema_decay=0.0))
    valid = SliceDataset(tiny_cache, "valid", cfg.resolution).images
    epochs = []

    def by_epoch(model, cfg, images, low_res, epoch, device):
        assert torch.equal(images, valid)
        assert (low_res is None) if stage == "base64" else torch.equal(low_res, degrade(valid, cfg.low_resolution))
        epochs.append(epoch)
        return float(epoch)

    monkeypatch.setattr(loop, "validation_loss", by_epoch)
    loop.train(cfg, tiny_cache, tmp_path / "run", progress=False, grids=False)
    with open(tmp_path / "run" / loop.LOG_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == [str(step) for step in range(1, 10)]
    assert [row["val_loss"] for row in rows] == ["", ""] + ["1.000000"] * 3 + ["2.000000"] * 3 + ["3.000000"]
    assert epochs == [1, 2, 3]


def test_a_checkpoint_records_the_slice_cache_it_was_trained_on(tiny_cache):
    dataset = SliceDataset(tiny_cache, "train", 64)
    assert loop.data_record(tiny_cache, dataset) == {
        "path": str(tiny_cache.resolve()), "content_sha256": dataset.cache_digest, "plane": "coronal",
        "selection": "all", "normalisation": "series", "central_slices": 2}


def test_compile_wraps_the_network_every_step_runs(tmp_path, monkeypatch):
    """torch.compile (stubbed: compiling the UNet takes minutes on the CPU) gets the stage's network, and every
    training step runs through what it returns."""
    compiled = []

    class Counting(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            return self.net(*args, **kwargs)

    def compile_stub(net):
        compiled.append(Counting(net))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", compile_stub)
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=2, batch_size=2, ema_decay=0.0))
    loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False,
               compile=True)
    assert len(compiled) == 1 and isinstance(compiled[0].net, UNet) and compiled[0].calls == 2


def test_the_training_bar_counts_the_runs_steps_from_where_it_resumed_and_shows_unless_turned_off(
        tmp_path, monkeypatch):
    bars, postfixes = [], []

    class Bar:
        def __init__(self, **kwargs):
            self.settings, self.steps, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, steps):
            self.steps += steps

        def set_postfix(self, **values):
            postfixes.append(values)

        def close(self):
            self.closed = True

    cache = write_cache(tmp_path / "cache.npz", 4)
    monkeypatch.setattr(loop, "track", Bar)
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=2, batch_size=2, ema_decay=0.0))
    loop.train(cfg, cache, tmp_path / "run", grids=False)  # progress by default
    loop.train(cfg.replace(train=dict(steps=3)), cache, tmp_path / "run", resume=True, progress=False, grids=False)
    shown = {"desc": "train base64_swin", "unit": "step"}
    assert [bar.settings for bar in bars] == [{**shown, "total": 2, "initial": 0, "enabled": True},
                                              {**shown, "total": 3, "initial": 2, "enabled": False}]
    assert [(bar.steps, bar.closed) for bar in bars] == [(2, True), (1, True)]
    with open(tmp_path / "run" / loop.LOG_FILE, newline="", encoding="utf-8") as handle:  # a postfix for each row, as logged
        assert postfixes == [{"loss": row["loss"], "img_s": row["images_per_s"]} for row in csv.DictReader(handle)]


@pytest.mark.parametrize("grids", [True, False])
def test_sample_grids_are_drawn_every_sample_every_steps_and_at_the_end_from_the_stages_state(
        grids, tmp_path, monkeypatch):
    cfg = sr_config("ddpm").replace(train=dict(steps=5, batch_size=2, sample_every=2, ema_decay=0.0))
    cache = write_cache(tmp_path / "cache.npz", 4)
    low_res = degrade(SliceDataset(cache, "train", cfg.resolution).images, cfg.low_resolution)
    drawn = []

    def record(state, stage_cfg, low, path, progress):
        assert stage_cfg == cfg and torch.equal(low, low_res) and progress is False
        drawn.append((state.step, path.name))
        Image.new("L", (6 + state.step, 4)).save(path)  # a grid whose width tells its step

    monkeypatch.setattr(loop, "_write_sample_grid", record)
    loop.train(cfg, cache, tmp_path / "run", progress=False, grids=grids)
    expected = [(2, "samples_step_00000002.png"), (4, "samples_step_00000004.png"), (5, "samples_final.png")]
    assert drawn == (expected if grids else [])
    logged = EventAccumulator(str(tmp_path / "run"))  # each grid in TensorBoard at its step, as drawn
    logged.Reload()
    shown = [(image.step, image.width) for image in logged.Images("samples")] if grids else []
    assert shown == [(step, 6 + step) for step, _ in drawn] and ("samples" in logged.Tags()["images"]) == grids


def test_each_log_row_counts_the_images_of_the_steps_since_the_last_row_and_the_time_so_far(tmp_path, monkeypatch):
    counted, real_log_row = [], loop._log_row

    def log_row(state, loss, window, elapsed):
        counted.append(window.images)
        return real_log_row(state, loss, window, elapsed)

    monkeypatch.setattr(loop, "_log_row", log_row)
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=5, batch_size=2, log_every=2, ema_decay=0.0))
    started = time.perf_counter()
    result = loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False)
    took = time.perf_counter() - started
    assert counted == [4, 4, 2]  # rows at steps 2, 4 and the last, 5
    with open(tmp_path / "run" / loop.LOG_FILE, newline="", encoding="utf-8") as handle:
        elapsed = [float(row["elapsed_s"]) for row in csv.DictReader(handle)]
    assert 0 <= elapsed[0] <= elapsed[1] <= elapsed[2] <= took + 0.1  # the training time so far, rounded to 0.1 s
    assert 0 < result.seconds < took and load_checkpoint(result.checkpoint)["log"]["seconds"] == result.seconds
    assert result.images_per_second == pytest.approx(5 * 2 / result.seconds, rel=1e-12)
    # Extended by 2 steps: the rate is of this run's steps over this run's seconds.
    more = loop.train(cfg.replace(train=dict(steps=7)), tmp_path / "cache.npz", tmp_path / "run", resume=True,
                      progress=False, grids=False)
    assert more.images_per_second == pytest.approx(2 * 2 / (more.seconds - result.seconds), rel=1e-9)
    done = loop.train(cfg.replace(train=dict(steps=7)), tmp_path / "cache.npz", tmp_path / "run", resume=True,
                      progress=False, grids=False)
    assert done.trained_steps == 0 and math.isnan(done.images_per_second)  # a complete run trains nothing


def test_a_run_under_a_second_reports_its_images_over_its_own_seconds(tmp_path, monkeypatch):
    ticks = iter(range(10_000))  # the loop's clock: 1/64 s a reading, exact in binary
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks) / 64))
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=3, batch_size=2, ema_decay=0.0))
    result = loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False)
    assert 0 < result.seconds < 1 and result.images_per_second == 3 * 2 / result.seconds


def test_a_run_keeps_its_newest_keep_checkpoints_step_checkpoints(tmp_path):
    cfg = stage_config("base64", "smoke").replace(
        train=dict(steps=5, batch_size=2, checkpoint_every=1, keep_checkpoints=2, ema_decay=0.0))
    loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), tmp_path / "run", progress=False, grids=False)
    assert sorted(path.name for path in (tmp_path / "run").glob("*.pt")) == [
        FINAL_CHECKPOINT, "step_00000003.pt", "step_00000004.pt"]


def test_a_stop_between_checkpoints_saves_the_step_it_stopped_at_keeping_keep_checkpoints(tmp_path, monkeypatch):
    reads = []

    class StopAfterThreeSteps:  # the loop reads `requested` once after each step but the last
        def __init__(self, what):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

        @property
        def requested(self):
            reads.append(1)
            return signal.SIGTERM if len(reads) == 3 else None

    monkeypatch.setattr(loop, "StopRequest", StopAfterThreeSteps)
    cfg = stage_config("base64", "smoke").replace(
        train=dict(steps=6, batch_size=2, checkpoint_every=2, keep_checkpoints=1, ema_decay=0.0))
    run = tmp_path / "run"
    started = time.perf_counter()
    with pytest.raises(loop.TrainingStopped, match=re.escape(
            f"SIGTERM stopped training base64_swin at step 3 of 6, saved as {run / 'step_00000003.pt'}; continue it "
            "with resume=True")) as stopped:
        loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), run, progress=False, grids=False)
    took = time.perf_counter() - started
    assert (stopped.value.checkpoint, stopped.value.step, stopped.value.parameter) == (
        run / "step_00000003.pt", 3, "resume")
    saved = load_checkpoint(run / "step_00000003.pt")
    assert saved["step"] == 3 and 0 < saved["log"]["seconds"] < took
    assert [path.name for path in run.glob("*.pt")] == ["step_00000003.pt"]  # keep_checkpoints=1 holds here too


@pytest.mark.parametrize("grids", [True, False])
def test_a_stop_during_the_last_step_ends_a_complete_run_leaving_out_its_sample_grid(grids, tmp_path, monkeypatch):
    reads = []

    class StopAfterTheLastStep:  # read after each step but the last, then once after the loop
        def __init__(self, what):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

        @property
        def requested(self):
            reads.append(1)
            return signal.SIGTERM if len(reads) == 2 else None

    grids = []
    monkeypatch.setattr(loop, "StopRequest", StopAfterTheLastStep)
    monkeypatch.setattr(loop, "_write_sample_grid", lambda *args: grids.append(args))
    cfg = stage_config("base64", "smoke").replace(train=dict(steps=2, batch_size=2, ema_decay=0.0))
    run = tmp_path / "run"
    with pytest.raises(loop.TrainingStopped) as stopped:
        loop.train(cfg, write_cache(tmp_path / "cache.npz", 4), run, progress=False, grids=grids)
    assert str(stopped.value) == (f"SIGTERM stopped training base64_swin after its last step; the run is complete: "
                                  f"{run / FINAL_CHECKPOINT}" + ("; its sample grid is left out" if grids else ""))
    assert (stopped.value.exit_code, stopped.value.checkpoint, stopped.value.step, stopped.value.parameter) == (
        128 + signal.SIGTERM, run / FINAL_CHECKPOINT, 2, None)
    assert load_checkpoint(run / FINAL_CHECKPOINT)["step"] == 2 and grids == []
