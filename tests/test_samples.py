"""Scoring anyone's samples: PNG folders and arrays read as the study's images, one line for bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from mrnet_utils import cli
from mrnet_utils.data.samples import read_samples
from mrnet_utils.errors import MRNetError


def write_pngs(folder, images, mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        pixels = (image * 255).round().astype(np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"sample_{i}.png")
    return folder


def test_grey_pngs_of_the_study_size_are_read_exactly(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 256, 256)) / 255
    samples = read_samples(write_pngs(tmp_path / "grey", images))
    assert samples.images.shape == (3, 1, 256, 256) and samples.conversion == "3 PNGs, grey"
    torch.testing.assert_close(samples.images[:, 0], torch.from_numpy(images * 2 - 1).float())


def test_rgb_pngs_of_another_size_are_converted_and_resized_and_say_so(tmp_path):
    images = np.full((2, 64, 64), 0.5)
    samples = read_samples(write_pngs(tmp_path / "rgb", images, mode="RGB"))
    assert samples.images.shape == (2, 1, 256, 256)
    assert samples.conversion == "2 PNGs, converted to grey from RGB (luma), resized 64x64 -> 256x256 (data.slices.resize)"
    assert samples.images.sub(128 / 127.5 - 1).abs().max() < 1e-6  # a flat grey stays flat


def test_arrays_in_any_of_the_three_ranges(tmp_path):
    model_space = torch.rand(2, 1, 256, 256) * 2 - 1
    np.save(tmp_path / "a.npy", model_space.numpy())
    np.save(tmp_path / "b.npy", ((model_space[:, 0] + 1) * 127.5).numpy())
    np.savez(tmp_path / "c.npz", images=((model_space + 1) / 2).numpy())
    for name, scale in (("a.npy", "[-1, 1] as given"), ("b.npy", "0-255 mapped"), ("c.npz", "[0, 1] mapped")):
        samples = read_samples(tmp_path / name)
        assert scale in samples.conversion
        torch.testing.assert_close(samples.images, model_space, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make, message", [
    (lambda d: write_pngs(d, [np.zeros((64, 64)), np.zeros((32, 32))]), "sample_1.png is 32x32, but the first PNG is 64x64"),
    (lambda d: (d.mkdir(), (d / "x.png").write_bytes(b"not a png"), d)[-1], "x.png is not a readable PNG"),
    (lambda d: (d.mkdir(), d)[-1], "holds no .png files"),
    (lambda d: (np.save(d.with_suffix(".npy"), np.full((2, 8, 8), 300.0)), d.with_suffix(".npy"))[-1],
     "give \\[-1, 1\\], \\[0, 1\\] or 0-255"),
    (lambda d: (np.save(d.with_suffix(".npy"), np.zeros((2, 3, 8, 8))), d.with_suffix(".npy"))[-1],
     "give \\(N, H, W\\) or \\(N, 1, H, W\\)"),
    (lambda d: d.with_suffix(".txt"), "neither a folder of PNG files nor an .npy/.npz"),
])
def test_bad_inputs_give_one_line_naming_the_file(tmp_path, make, message):
    with pytest.raises(MRNetError, match=message):
        read_samples(make(tmp_path / "samples"))


def test_score_command_writes_the_generation_table(tiny_cache, tmp_path, capsys):
    from mrnet_utils.data.slices import SliceDataset

    real = SliceDataset(tiny_cache, "valid", 256).images
    np.save(tmp_path / "copies.npy", real.numpy())
    noise = np.random.default_rng(0).random((4, 128, 128))
    write_pngs(tmp_path / "noise", noise, mode="RGB")
    code = cli.main(["score", "--samples", f"copies={tmp_path / 'copies.npy'}", f"noise={tmp_path / 'noise'}",
                     "--cache", str(tiny_cache), "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "generation_scored.csv", index_col="method")
    assert list(table.index) == ["copies", "noise", "real (held-out)"]
    assert table.loc["copies", "histogram_w1"] < 1e-3 < table.loc["noise", "histogram_w1"]
    assert "resized 128x128 -> 256x256" in table.loc["noise", "conversion"]
    assert table.loc["copies", "fid"].startswith("not computed: FID needs at least 2048")
    assert cli.main(["score", "--samples", "copies", "--cache", str(tiny_cache), "--out", str(tmp_path)]) == 2
    assert "is not NAME=PATH" in capsys.readouterr().err
