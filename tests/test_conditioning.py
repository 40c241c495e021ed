"""Super-resolution conditioning: upsampling and variance-preserving noise augmentation."""

import math
import re

import pytest
import torch

from mrnet_utils.diffusion.conditioning import (
    augment,
    concat_condition,
    make_condition,
    sample_aug_levels,
    upsample,
)
from mrnet_utils.errors import MRNetError


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_upsample_shape_and_half_pixel_centres():
    assert upsample(_randn(3, 1, 64, 64), 128).shape == (3, 1, 128, 128)
    ramp = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    # align_corners=False: output pixel centres sit at (i + 0.5) / 2 - 0.5 in input pixels, clamped at the edge.
    assert upsample(ramp, 4)[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]


def test_augment_endpoints():
    cond, noise = _randn(4, 1, 8, 8, seed=1), _randn(4, 1, 8, 8, seed=2)
    assert torch.equal(augment(cond, torch.zeros(4), noise), cond)
    assert torch.equal(augment(cond, torch.ones(4), noise), noise)
    mixed = augment(cond, torch.tensor([0.0, 1.0, 0.0, 1.0]), noise)  # one level per image
    assert torch.equal(mixed[0], cond[0]) and torch.equal(mixed[1], noise[1])


@pytest.mark.parametrize("level", [0.3, 0.8])
def test_augment_preserves_unit_variance(level):
    n = 200_000
    cond, noise = _randn(2, 1, n, 1, seed=3), _randn(2, 1, n, 1, seed=4)
    out = augment(cond, torch.full((2,), level), noise).double()
    # Standard errors of mean and variance of n unit Gaussians: 1/sqrt(n) and sqrt(2/(n-1)); allow five.
    assert out.mean().abs() < 5 / math.sqrt(2 * n)
    assert abs(out.var().item() - 1) < 5 * math.sqrt(2 / (2 * n - 1))
    # and the condition keeps weight sqrt(1 - level^2): its correlation with the output
    corr = torch.corrcoef(torch.stack([out.flatten(), cond.double().flatten()]))[0, 1]
    assert abs(corr.item() - math.sqrt(1 - level**2)) < 0.01


def test_sample_aug_levels():
    levels = sample_aug_levels(20_000, 0.5, torch.Generator().manual_seed(0))
    assert levels.shape == (20_000,) and levels.min() >= 0 and levels.max() <= 0.5
    assert abs(levels.mean().item() - 0.25) < 5 * 0.5 / math.sqrt(12 * 20_000)  # uniform: sd = 0.5 / sqrt(12)
    assert torch.equal(levels, sample_aug_levels(20_000, 0.5, torch.Generator().manual_seed(0)))
    with pytest.raises(MRNetError, match="max_level"):
        sample_aug_levels(4, 1.5)


def test_make_condition():
    low_res, noise = _randn(2, 1, 8, 8, seed=5), _randn(2, 1, 16, 16, seed=6)
    cond, level = make_condition(low_res, 16, 0.0, noise)  # disabled augmentation: level 0
    assert torch.equal(cond, upsample(low_res, 16)) and torch.equal(level, torch.zeros(2))
    levels = torch.tensor([0.1, 0.4])
    cond, level = make_condition(low_res, 16, levels, noise)
    assert torch.equal(level, levels)
    assert torch.equal(cond, augment(upsample(low_res, 16), levels, noise))
    with pytest.raises(MRNetError, match="level"):
        make_condition(low_res, 16, 2.0, noise)


def test_bicubic_upsampling_is_clamped_to_the_model_range_and_bilinear_is_not():
    edge = torch.tensor([[[[-1.0, -1.0, 1.0, 1.0]] * 4]])  # a step: bicubic overshoots on both sides
    raw = torch.nn.functional.interpolate(edge, size=(8, 8), mode="bicubic", align_corners=False)
    assert raw.max() > 1 and raw.min() < -1
    bicubic = upsample(edge, 8, "bicubic")
    assert bicubic.max() == 1 and bicubic.min() == -1 and torch.equal(bicubic, raw.clamp(-1, 1))
    assert torch.equal(upsample(edge * 1.5, 8), torch.nn.functional.interpolate(edge * 1.5, size=(8, 8), mode="bilinear"))
    with pytest.raises(MRNetError, match="upsampling mode must be 'bilinear' or 'bicubic', not 'nearest'"):
        upsample(edge, 8, "nearest")


def test_levels_and_conditions_keep_the_low_res_images_dtype_and_the_closed_range():
    low_res, noise = _randn(2, 1, 4, 4, seed=7).double(), _randn(2, 1, 8, 8, seed=8).double()
    cond, level = make_condition(low_res, 8, 1.0, noise)  # level 1 is allowed: pure noise
    assert level.dtype == torch.float64 and level.tolist() == [1.0, 1.0] and torch.equal(cond, noise)
    assert augment(_randn(2, 1, 4, 4), torch.tensor([0.5, 0.5], dtype=torch.float64), _randn(2, 1, 4, 4)).dtype == torch.float32
    assert torch.equal(sample_aug_levels(3, 0.0), torch.zeros(3))  # both ends of [0, 1] are allowed
    assert sample_aug_levels(1000, 1.0, torch.Generator().manual_seed(1)).max() > 0.99


def test_concat_condition_puts_the_condition_after_the_image_and_refuses_a_mix_up():
    x, cond = _randn(2, 1, 6, 6, seed=9), _randn(2, 1, 6, 6, seed=10).double()
    joined = concat_condition(x, cond, 1, "sr1")
    assert joined.dtype == torch.float32 and joined.shape == (2, 2, 6, 6)
    assert torch.equal(joined[:, :1], x) and torch.equal(joined[:, 1:], cond.float())
    assert concat_condition(x, None, 0, "base64") is x
    with pytest.raises(MRNetError, match="^cond was given to a network with cond_channels=0; only super-resolution"):
        concat_condition(x, cond, 0, "base64")
    with pytest.raises(MRNetError, match=r"^super-resolution sr1 needs cond of shape \(2, 1, 6, 6\) \(the low-res "
                                         r"image upsampled to 6x6\), got nothing$"):
        concat_condition(x, None, 1, "sr1")
    wide = _randn(2, 1, 6, 4, seed=11)  # not square: the message names the width
    with pytest.raises(MRNetError, match=r"needs cond of shape \(2, 1, 6, 4\) \(the low-res image upsampled to "
                                         r"4x4\), got \(2, 1, 6, 6\)$"):
        concat_condition(wide, cond, 1, "sr1")
    for shape in [(1, 1, 6, 6), (2, 1, 6, 5), (2, 2, 6, 6)]:  # batch, size, channels
        with pytest.raises(MRNetError, match=re.escape(f"got {shape}") + "$"):
            concat_condition(x, _randn(*shape), 1, "sr1")
