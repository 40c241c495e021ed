"""The degradations that make a slice's lower resolutions: k-space truncation keeps a band-limited image
exactly and removes all it discards, adds noise at the stated SNR, the same for a slice in any batch; the
reference's one-step PIL resize and the project's halving chain are what they say."""

import dataclasses
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mrnet_utils.data.degradation import Degradation, kspace_truncate
from mrnet_utils.data.slices import degrade
from mrnet_utils.errors import MRNetError

SIDE = 256
_spec = importlib.util.spec_from_file_location(
    "degradation_ranks", Path(__file__).resolve().parents[1] / "scripts" / "degradation_ranks.py")
degradation_ranks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(degradation_ranks)


def band_limited(positions: np.ndarray) -> np.ndarray:
    """A smooth intensity pattern in (0, 1) with no frequency above 5 cycles per slice, at continuous positions."""
    u, v = np.meshgrid(positions, positions, indexing="ij")
    return (0.5 + 0.2 * np.cos(2 * np.pi * 3 * u / SIDE + 0.4) + 0.1 * np.sin(2 * np.pi * 5 * v / SIDE)
            + 0.05 * np.cos(2 * np.pi * (2 * u + 4 * v) / SIDE))


def to_model(intensity: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(intensity * 2 - 1)[None, None]


@pytest.mark.parametrize("size", [128, 64])
def test_a_band_limited_slice_survives_kspace_truncation_exactly_on_the_centred_low_res_grid(size):
    """Its low-res image is the pattern itself at the centres of the size x size blocks: (m + 0.5) S / size - 0.5."""
    slice_ = to_model(band_limited(np.arange(SIDE, dtype=np.float64)))
    got = kspace_truncate(slice_, size)
    centres = (np.arange(size) + 0.5) * SIDE / size - 0.5
    torch.testing.assert_close(got, to_model(band_limited(centres)), rtol=0, atol=1e-9)


def test_the_energy_of_the_discarded_frequencies_is_gone():
    """A pattern at frequencies outside the kept block leaves only the slice's mean; halving in the image domain
    keeps some of it (aliased), which is the difference between the two."""
    u, v = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    high = 0.5 + 0.3 * np.cos(2 * np.pi * 34 * u / SIDE) * np.cos(2 * np.pi * 36 * v / SIDE)  # just past 64's 32
    got = kspace_truncate(to_model(high), 64)
    torch.testing.assert_close(got, torch.full_like(got, 0.0), rtol=0, atol=1e-9)  # intensity 0.5 is 0 in [-1, 1]
    assert float(degrade(to_model(high).float(), 64).std()) > 0.01


def test_truncation_rings_at_an_edge_and_the_hann_window_damps_it():
    """Gibbs: a sharp truncation overshoots a step by about 9% of its height; a Hann window (Tukey alpha 1) far less."""
    step = np.where(np.arange(SIDE) < SIDE // 2 + 7, 0.2, 0.8)[:, None].repeat(SIDE, 1)
    ringing = {alpha: float(kspace_truncate(to_model(step), 64, window=alpha).max()) for alpha in (0.0, 1.0)}
    top = 0.8 * 2 - 1
    assert 0.04 < (ringing[0.0] - top) / 1.2 < 0.12  # of the step's height in [-1, 1]
    assert ringing[1.0] - top < 0.1 * (ringing[0.0] - top)


def test_noise_comes_at_the_stated_snr_and_a_slice_gets_the_same_noise_in_any_batch():
    """On a flat slice of intensity 0.6 at SNR 20 the magnitude's spread is sigma = 0.6 / 20 (Rician, nearly Gaussian
    at this SNR), in [-1, 1] units twice that; its mean stays 0.6 to within sigma^2 / (2 * 0.6)."""
    flat = torch.full((6, 1, SIDE, SIDE), 0.6 * 2 - 1, dtype=torch.float64)
    flat[1:] += torch.arange(1, 6, dtype=torch.float64).view(5, 1, 1, 1) * 1e-6  # distinct slices, distinct noise
    noisy = Degradation("kspace", kspace_snr=20.0).apply(flat, 64)
    intensity = (noisy + 1) / 2
    sigma = 0.6 / 20
    assert abs(float(intensity.std()) / sigma - 1) < 0.03
    assert abs(float(intensity.mean()) - 0.6) < sigma**2
    assert not torch.equal(noisy[0], noisy[1])
    alone = Degradation("kspace", kspace_snr=20.0).apply(flat[3:4], 64)
    assert torch.equal(alone[0], noisy[3])
    other_seed = Degradation("kspace", kspace_snr=20.0, noise_seed=1).apply(flat[3:4], 64)
    assert not torch.equal(other_seed[0], noisy[3])


def test_pil_is_one_8_bit_bilinear_resize_and_image_is_the_halving_chain():
    slices = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pil = Degradation("pil").apply(slices, 64)
    pixels = np.round((slices[1, 0].numpy() + 1) / 2 * 255).astype(np.uint8)
    by_hand = np.asarray(Image.fromarray(pixels).resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    torch.testing.assert_close(pil[1, 0], torch.from_numpy(by_hand / 255 * 2 - 1), rtol=0, atol=1e-6)
    assert torch.equal(Degradation("image").apply(slices, 64), degrade(slices, 64))
    assert not torch.allclose(pil, degrade(slices, 64), atol=1e-3)
    for method in ("image", "pil", "kspace"):
        assert torch.equal(Degradation(method).apply(slices, SIDE), slices)  # the full resolution is the slice


@pytest.mark.parametrize("setting, message", [
    (Degradation("sinc"), "degradation.method must be one of image, kspace, pil, not 'sinc'"),
    (Degradation("kspace", kspace_window=1.5), "degradation.kspace_window=1.5 must lie in [0, 1]"),
    (Degradation("kspace", kspace_snr=-1.0), "degradation.kspace_snr=-1.0 must be 0 (no noise) or a positive SNR"),
    (Degradation("kspace", kspace_snr=math.inf), "degradation.kspace_snr=inf must be 0"),
    (Degradation("image", kspace_snr=10.0), "apply to method 'kspace', not 'image'"),
])
def test_bad_settings_are_refused_naming_the_setting(setting, message):
    with pytest.raises(MRNetError, match=re.escape(message)):
        setting.apply(torch.zeros(1, 1, 8, 8), 4)


def test_sizes_that_are_not_a_power_of_two_below_the_slice_are_refused():
    with pytest.raises(MRNetError, match="cannot take shape"):
        Degradation("kspace").apply(torch.zeros(1, 1, 256, 256), 96)


def test_parse_reads_back_what_describe_writes_and_refuses_bad_text():
    for text in ("image", "pil", "kspace", "kspace,snr=30.0", "kspace,window=0.5,snr=20.0,seed=3"):
        setting = Degradation.parse(text)
        assert Degradation.parse(setting.describe()) == setting
    assert Degradation.parse("kspace,snr=30,window=0.5") == Degradation("kspace", kspace_window=0.5, kspace_snr=30.0)
    for text, message in [("kspace,snr=abc", "snr=abc is not a number"), ("kspace,noise=3", "'noise=3' is not one of"),
                          ("image,snr=3", "apply to method 'kspace'"), ("sinc", "must be one of image, kspace, pil")]:
        with pytest.raises(MRNetError, match=re.escape(message)):
            Degradation.parse(text)


@pytest.fixture
def applied(monkeypatch):
    """Every (method, size) a Degradation makes, in order."""
    calls = []
    real_apply = Degradation.apply

    def recording(self, slices, size):
        calls.append((self.method, size))
        return real_apply(self, slices, size)

    monkeypatch.setattr(Degradation, "apply", recording)
    return calls


def test_the_setting_reaches_every_consumer(tiny_cache, tmp_path, applied):
    """Training (targets and low-res inputs), the held-out slices of the SR and generation tables, the training
    figures and the label study all make their lower resolutions with the study's setting; a model trained on one
    degradation is refused by an evaluation of another, and a results folder holds one degradation only."""
    from mrnet_utils.presets import stage_config
    from mrnet_utils.study import data, labels, super_resolution
    from mrnet_utils.study.layout import SR_MODELS, StudyPaths
    from mrnet_utils.training.loop import train

    kspace = Degradation("kspace")
    cfg = stage_config("sr1", "smoke").replace(degradation=kspace, train={"steps": 1})
    train(cfg, tiny_cache, tmp_path / "study" / "savepoints" / "smoke" / "sr1_swin", progress=False, grids=False)
    assert ("kspace", 128) in applied and ("kspace", 64) in applied
    applied.clear()
    held = data.held_out(tiny_cache, None, degradation=kspace)
    torch.testing.assert_close(held.at(64), kspace_truncate(held.images, 64))
    data.slice_examples(tiny_cache, 128, 2, 64, degradation=kspace)
    labels.real_slices(tiny_cache, 0, kspace)
    assert applied and {method for method, _ in applied} == {"kspace"}
    assert labels.config("smoke", kspace).degradation == kspace

    paths = StudyPaths(tmp_path / "study", "smoke")
    on_image = data.held_out(tiny_cache, None)  # the default: the halving chain
    with pytest.raises(MRNetError, match="trained on low-res images made by degradation 'kspace', but the study "
                                         "evaluates 'image'"):
        super_resolution.super_resolution_outputs(paths, on_image, SR_MODELS[0], progress=False)
    assert data.record_degradation(paths, kspace) == kspace
    assert data.record_degradation(paths, Degradation("kspace")) == kspace  # the same setting again: fine
    with pytest.raises(MRNetError, match="holds results made with degradation 'kspace', not 'image'"):
        data.record_degradation(paths, Degradation())


def _results_folder(folder, degradation: Degradation, psnr: dict[str, float]):
    """A results folder as the study writes it: degradation.json and one SR table per task."""
    folder.mkdir()
    (folder / "degradation.json").write_text(json.dumps(dataclasses.asdict(degradation)), encoding="utf-8")
    for task in degradation_ranks.TASKS:
        table = pd.DataFrame({"method": [*psnr, "high-res (reference)"], "psnr_mean": [*psnr.values(), math.nan],
                              "ssim_mean": [0.9, 0.8, 0.7, math.nan], "spectrum_error_mean": [0.1, 0.2, 0.3, math.nan],
                              "ag_error_mean": [0.3, 0.2, 0.1, math.nan]})
        table.to_csv(folder / f"sr_{task}.csv", index=False)


def test_the_methods_ranks_under_two_degradations(tmp_path):
    _results_folder(tmp_path / "image", Degradation(), {"lanczos": 28.0, "SR1 (Swin), mean": 33.0, "regression": 34.0})
    _results_folder(tmp_path / "kspace", Degradation("kspace", kspace_snr=30.0),
                    {"lanczos": 29.0, "SR1 (Swin), mean": 35.0, "regression": 31.0})
    table = degradation_ranks.ranks(tmp_path / "image", tmp_path / "kspace")
    psnr = table[(table["task"] == "sr1_64_to_128") & (table["metric"] == "psnr")].set_index("method")
    assert psnr["rank (image)"].to_dict() == {"lanczos": 3, "SR1 (Swin), mean": 2, "regression": 1}
    assert psnr["rank (kspace,snr=30.0)"].to_dict() == {"lanczos": 3, "SR1 (Swin), mean": 1, "regression": 2}
    assert psnr["kendall_tau"].iloc[0] == pytest.approx(1 / 3)  # one of the three pairs swapped
    spectrum = table[table["metric"] == "spectrum_error"].set_index("method")
    assert spectrum.loc["lanczos", "rank (image)"].tolist() == [1, 1, 1] and (spectrum["kendall_tau"] == 1).all()
    assert "high-res (reference)" not in set(table["method"])
    best = degradation_ranks.summary(table).loc[("sr1_64_to_128", "psnr")]
    assert (best["best image"], best["best kspace,snr=30.0"]) == ("regression", "SR1 (Swin), mean")
    with pytest.raises(MRNetError, match="both made with image"):
        degradation_ranks.ranks(tmp_path / "image", tmp_path / "image")
    sr2 = tmp_path / "kspace" / "sr_sr2_128_to_256.csv"
    pd.read_csv(sr2).drop(columns="ag_error_mean").to_csv(sr2, index=False)
    with pytest.raises(MRNetError, match="sr_sr2_128_to_256.csv has no ag_error_mean: not an SR table"):
        degradation_ranks.ranks(tmp_path / "image", tmp_path / "kspace")
