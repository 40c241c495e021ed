"""Metrics: identities, orderings under known degradations, analytic values, weight lookup."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import piq
import torchvision
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics, weights


class TinyFeatures(nn.Module):
    """Stand-in feature network: a seeded random conv layer, pooled to a 16-d vector."""

    num_features = 16

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.zero_()

    def forward(self, images):
        return F.adaptive_avg_pool2d(torch.tanh(self.conv(images)), 1).flatten(1)


class BrightnessClassifier(nn.Module):
    """Stand-in classifier: confident logits for which of `classes` brightness levels an image has."""

    def __init__(self, classes=4):
        super().__init__()
        self.register_buffer("levels", (torch.arange(classes) + 0.5) / classes)

    def forward(self, images):
        brightness = images.mean(dim=(1, 2, 3))
        # Steep enough to be confident, gentle enough that no probability underflows to 0.
        return -150 * (brightness[:, None] - self.levels) ** 2


def noise_images(n=3, side=64, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def blur(images, sigma):
    return gaussian_blur(images, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty torch hub cache and no weight variables: nothing can be found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MRNET_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("MRNET_LPIPS_WEIGHTS", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"  # where torch.hub caches under TORCH_HOME


def test_identical_images_give_the_identity_values():
    images = noise_images()
    assert torch.isinf(metrics.psnr(images, images)).all()
    for metric in (metrics.ssim, metrics.ms_ssim, metrics.fsim, metrics.vif):
        values = metric(images, images)
        assert values.shape == (3,)
        assert torch.allclose(values, torch.ones(3), atol=1e-5), metric.__name__


def test_more_blur_scores_worse_on_every_metric():
    images = noise_images(2, 48)
    by_sigma = [blur(images, sigma) for sigma in (0.5, 1.0, 2.0)]
    for metric in (metrics.psnr, metrics.ssim, metrics.ms_ssim, metrics.fsim, metrics.vif):
        scores = [metric(blurred, images).mean() for blurred in by_sigma]
        assert scores[0] > scores[1] > scores[2], metric.__name__
    sharpness = [metrics.average_gradient(blurred).mean() for blurred in by_sigma]
    assert metrics.average_gradient(images).mean() > sharpness[0] > sharpness[1] > sharpness[2]


def test_average_gradient_of_a_ramp_is_its_slope_over_root_two():
    ramp = torch.linspace(0, 1, 33).expand(2, 1, 20, 33)  # slope 1/32 along x, 0 along y
    assert torch.allclose(metrics.average_gradient(ramp), torch.full((2,), 1 / 32 / math.sqrt(2)))
    assert torch.allclose(metrics.average_gradient(ramp.transpose(-1, -2)), torch.full((2,), 1 / 32 / math.sqrt(2)))


def test_average_gradient_of_a_checkerboard_is_one():
    """Every forward difference of a 0/1 checkerboard is +-1 in x and in y: sqrt((1 + 1) / 2) = 1 at every pixel."""
    rows, cols = torch.meshgrid(torch.arange(9), torch.arange(12), indexing="ij")
    board = ((rows + cols) % 2).float().expand(3, 1, 9, 12)
    assert torch.equal(metrics.average_gradient(board), torch.ones(3))
    assert torch.equal(metrics.average_gradient(torch.full((2, 1, 9, 12), 0.3)), torch.zeros(2))


def test_sobel_average_gradient_of_a_ramp_by_hand_and_per_image():
    """Sobel on a ramp of slope s: central difference 2s times the smoothing weights 1 + 2 + 1 = 8s inside, 4s on
    the two edge columns (scipy's 'reflect' border repeats the edge pixel), 0 across: mean 8s (W - 1) / W.
    Each image's value is its own, whatever the other images of the batch."""
    width, s = 33, 1 / 32
    ramp = torch.linspace(0, 1, width).expand(1, 1, 20, width).contiguous()
    expected = 8 * s * (width - 1) / width
    assert metrics.average_gradient_sobel(ramp).item() == pytest.approx(expected, rel=1e-6)
    assert metrics.average_gradient_sobel(ramp.transpose(-1, -2)).item() == pytest.approx(expected, rel=1e-6)
    others = noise_images(2, 20)
    batch = torch.cat([others[:1], ramp[..., :20], others[1:]])  # a 20x20 piece of the ramp between noise images
    alone = torch.cat([metrics.average_gradient_sobel(image[None]) for image in batch])
    torch.testing.assert_close(metrics.average_gradient_sobel(batch), alone, rtol=1e-6, atol=0)


def test_psnr_of_a_known_perturbation_by_hand():
    """One pixel of 64 off by 0.4: MSE 0.16 / 64 = 0.0025, PSNR 10 log10(1 / 0.0025) = 26.0206 dB on the [0, 1] scale;
    a constant offset of 0.1: MSE 0.01, 20 dB. Each image its own value."""
    reference = torch.full((2, 1, 8, 8), 0.5)
    prediction = reference.clone()
    prediction[0, 0, 3, 4] = 0.9
    prediction[1] += 0.1
    values = metrics.psnr(prediction, reference)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(10 * math.log10(1 / 0.0025), abs=1e-4)
    assert values[1].item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_of_constant_images_by_hand():
    """On constant images every local variance and covariance is 0, so SSIM is its luminance term alone:
    (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * data range)^2 = 1e-4 (Wang et al. 2004; piq's K1).
    MS-SSIM: each scale's contrast-structure term is 1, so it is the coarsest scale's luminance term to the
    power of that scale's renormalised weight, 0.3001 / (0.0448 + 0.2856 + 0.3001) at 64 pixels (3 scales).
    Float64: in float32 the variances' cancellation leaves an error of about 2e-4."""
    a, b = 0.5, 0.6
    x, y = (torch.full((2, 1, 64, 64), value, dtype=torch.float64) for value in (a, b))
    luminance = (2 * a * b + 1e-4) / (a**2 + b**2 + 1e-4)
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(metrics.ssim(x, y), torch.full((2,), luminance, dtype=torch.float64), rtol=0, atol=1e-9)
    weight = 0.3001 / (0.0448 + 0.2856 + 0.3001)
    torch.testing.assert_close(metrics.ms_ssim(x, y), torch.full((2,), luminance**weight, dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_ms_ssim_fits_its_scales_to_64_and_128_pixel_images():
    assert [metrics.ms_ssim_scales(side) for side in (41, 64, 128, 160, 161, 256)] == [3, 3, 4, 4, 5, 5]
    for side in (64, 128):
        images = noise_images(2, side)
        assert torch.allclose(metrics.ms_ssim(images, images), torch.ones(2), atol=1e-5)
        assert (metrics.ms_ssim(blur(images, 1.0), images) < 0.9).all()
    with pytest.raises(MRNetError, match="at least 11"):
        metrics.ms_ssim_scales(8)


def test_metrics_reject_model_space_and_mismatched_inputs():
    images = noise_images()
    with pytest.raises(MRNetError, match=r"\[0, 1\]"):
        metrics.psnr(images * 2 - 1, images)
    with pytest.raises(MRNetError, match="shapes differ"):
        metrics.ssim(images, images[:2])


def test_interpolation_shapes_and_nearest_is_pixel_replication():
    low_res = noise_images(2, 8) * 2 - 1
    for method in metrics.INTERPOLATIONS:
        upsampled = metrics.interpolate(low_res, 16, method)
        assert upsampled.shape == (2, 1, 16, 16), method
        assert upsampled.min() >= -1 and upsampled.max() <= 1, method
    replicated = low_res.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    assert torch.equal(metrics.interpolate(low_res, 16, "nearest"), replicated)
    assert metrics.interpolate(low_res, (24, 32), "lanczos").shape == (2, 1, 24, 32)
    with pytest.raises(MRNetError, match="lanczos"):
        metrics.interpolate(low_res, 16, "spline")


def test_smooth_kernels_beat_nearest_on_a_smooth_image():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    high_res = (torch.sin(2 * math.pi * x / 23) * torch.cos(2 * math.pi * y / 17))[None, None] * 0.8
    low_res = F.avg_pool2d(high_res, 2)
    psnr = {
        method: metrics.psnr((metrics.interpolate(low_res, 64, method) + 1) / 2, (high_res + 1) / 2).item()
        for method in metrics.INTERPOLATIONS
    }
    assert psnr["bicubic"] > psnr["nearest"] + 3
    assert psnr["lanczos"] > psnr["nearest"] + 3
    assert psnr["bilinear"] > psnr["nearest"]


def test_fid_with_a_stand_in_network():
    real = noise_images(48, 16, seed=1) * 0.5
    network = TinyFeatures()
    assert abs(metrics.fid(real, real, network)) < 1e-6
    small_shift, large_shift = metrics.fid(real + 0.2, real, network), metrics.fid(real + 0.4, real, network)
    assert 0.01 < small_shift < large_shift
    # Grey-scale is repeated to three channels: same value as giving three channels.
    assert metrics.fid(real + 0.2, real, network) == pytest.approx(
        metrics.fid((real + 0.2).repeat(1, 3, 1, 1), real.repeat(1, 3, 1, 1), network)
    )


def test_feature_metrics_refuse_uint8_and_out_of_range_images():
    real = noise_images(8, 16)
    as_bytes = (real * 255).to(torch.uint8)
    for call in (
        lambda: metrics.fid(as_bytes, real, TinyFeatures()),
        lambda: metrics.kid(real, as_bytes, TinyFeatures()),
        lambda: metrics.inception_score(as_bytes, BrightnessClassifier()),
    ):
        with pytest.raises(MRNetError, match="uint8"):
            call()
    with pytest.raises(MRNetError, match=r"\[0, 1\]"):
        metrics.fid(real * 2 - 1, real, TinyFeatures())


def test_kid_is_near_zero_for_a_set_with_itself_and_grows_with_a_shift():
    real = noise_images(40, 16, seed=2) * 0.5
    network = TinyFeatures()
    same = metrics.kid(real, real, network)
    shifted = metrics.kid(real + 0.3, real, network)
    assert abs(same) < 1e-3 < shifted


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # one split has no spread
def test_inception_score_counts_confidently_separated_classes():
    levels = torch.tensor([0.125, 0.375, 0.625, 0.875]).repeat(10)
    images = levels[:, None, None, None].expand(-1, 1, 8, 8).contiguous()
    mean, _ = metrics.inception_score(images, BrightnessClassifier(), splits=1)
    assert mean == pytest.approx(4.0, rel=1e-2)  # exp(KL) with 4 equally used confident classes
    one_class, _ = metrics.inception_score(torch.full((12, 1, 8, 8), 0.1), BrightnessClassifier(), splits=2)
    assert one_class == pytest.approx(1.0, rel=1e-3)


def test_missing_weights_name_the_file_and_how_to_supply_it(no_weights, tmp_path, monkeypatch):
    with pytest.raises(metrics.MissingWeights) as missing:
        metrics.find_weights("inception")
    message = str(missing.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message and "MRNET_INCEPTION_WEIGHTS" in message
    assert str(no_weights) in message
    with pytest.raises(metrics.MissingWeights, match="alexnet-owt-7be5be79.pth"):
        metrics.load_lpips()
    with pytest.raises(metrics.MissingWeights, match="weights-inception"):
        metrics.fid(noise_images(4, 16), noise_images(4, 16))
    monkeypatch.setenv("MRNET_LPIPS_WEIGHTS", str(tmp_path / "nowhere.pth"))
    with pytest.raises(metrics.MissingWeights, match="nowhere.pth"):
        metrics.find_weights("alex")


def test_weights_are_found_in_the_hub_cache_and_by_environment(no_weights, tmp_path, monkeypatch):
    no_weights.mkdir(parents=True)
    cached = no_weights / "pt_inception-2015-12-05-6726825d.pth"
    cached.touch()
    assert metrics.find_weights("inception") == cached
    elsewhere = tmp_path / "my_inception.pth"
    elsewhere.touch()
    monkeypatch.setenv("MRNET_INCEPTION_WEIGHTS", str(elsewhere))
    assert metrics.find_weights("inception") == elsewhere
    explicit = tmp_path / "explicit.pth"
    explicit.touch()
    assert metrics.find_weights("inception", explicit) == explicit


def test_weight_sources_match_the_libraries_that_would_download_them():
    assert weights.WEIGHT_FILES["alex"].url == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert weights.WEIGHT_FILES["vgg"].url == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    assert weights.WEIGHT_FILES["inception"].url == fidelity.URL_INCEPTION_V3
    for spec in weights.WEIGHT_FILES.values():
        assert spec.url.endswith(spec.files[0])


def test_lpips_loads_a_local_backbone_file(no_weights, tmp_path):
    # A random AlexNet stands in for the ImageNet one: only its `features` are read.
    torch.manual_seed(0)
    backbone = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(backbone, path)
    network = metrics.load_lpips(path)
    assert torch.equal(network.net.state_dict()["slice2.3.weight"], backbone["features.3.weight"])
    images = noise_images(2)
    assert torch.allclose(metrics.lpips(images, images, network), torch.zeros(2))
    distances = metrics.lpips(blur(images, 2.0), images, network)
    assert distances.shape == (2,) and (distances > 0).all()


def test_diversity_is_one_for_copies_and_low_for_independent_noise():
    copies = noise_images(1, 48).repeat(4, 1, 1, 1)
    assert metrics.diversity_ms_ssim(copies) == pytest.approx(1.0, abs=1e-5)
    independent = noise_images(5, 48)
    assert metrics.diversity_ms_ssim(independent) < 0.2
    # Subsampled pairs are seeded and never pair a sample with itself.
    assert metrics.diversity_ms_ssim(independent, max_pairs=5) == metrics.diversity_ms_ssim(independent, max_pairs=5)
    assert metrics.diversity_ms_ssim(independent, max_pairs=5) < 0.2


def test_histogram_distance_measures_an_intensity_shift():
    real = noise_images(4, 32) * 0.5
    assert metrics.histogram_distance(real, real) == 0.0
    assert metrics.histogram_distance(real + 0.25, real) == pytest.approx(0.25, abs=1 / 256)


def test_power_spectrum_distance():
    real = noise_images(4, 32)
    assert metrics.power_spectrum_distance(real, real) == 0.0
    # Brightness offset and scale: the centred spectrum scales by 0.5^2 at every radius.
    assert metrics.power_spectrum_distance(0.5 * real + 0.2, real) == pytest.approx(2 * math.log10(2), rel=1e-6)
    assert metrics.power_spectrum_distance(blur(real, 1.0), real) > metrics.power_spectrum_distance(blur(real, 0.5), real)
    spectrum = metrics.radial_power_spectrum(real)
    assert spectrum.shape == (4, 17)
    # White noise: flat spectrum, each frequency's power equals the pixel variance (1/12).
    assert spectrum[:, 1:].mean().item() == pytest.approx(1 / 12, rel=0.1)


def test_memorisation_finds_near_copies_of_training_images():
    train = noise_images(20, 16, seed=3)
    copies = (train[[4, 11, 17]] * 0.9 + 0.05 + 0.01 * noise_images(3, 16, seed=4)).clamp(0, 1)
    found = metrics.memorisation(torch.cat([copies, noise_images(2, 16, seed=5)]), train, batch_size=7)
    assert found.nearest_index[:3].tolist() == [4, 11, 17]
    assert (found.correlation[:3] > 0.99).all() and (found.correlation[3:] < 0.5).all()
    assert found.near_copy_share == pytest.approx(3 / 5)


# --- what a silent slip in a metric would change ---------------------------------------------------


FULL_REFERENCE = [metrics.psnr, metrics.ssim, metrics.ms_ssim, metrics.fsim, metrics.vif, metrics.spectrum_error]


@pytest.mark.parametrize("metric", FULL_REFERENCE, ids=lambda metric: metric.__name__)
def test_every_full_reference_metric_checks_both_images(metric):
    good = noise_images(2, 64)
    for prediction, reference in ((good * 2 - 1, good), (good, good * 2 - 1)):  # model space on either side
        with pytest.raises(MRNetError, match=r"metrics take images in \[0, 1\]"):
            metric(prediction, reference)


def test_image_checks_name_what_is_wrong():
    good = noise_images(2, 32)
    refusals = [
        ((good[:, 0],), "metrics take float tensors (B, C, H, W); got dtype torch.float32, shape (2, 32, 32)"),
        (((good * 255).to(torch.uint8),), "metrics take float tensors (B, C, H, W); got dtype torch.uint8"),
        ((good * 1.5,), "metrics take images in [0, 1]; got [0"),
        ((good, noise_images(2, 16)), "prediction and reference shapes differ: (2, 1, 32, 32) vs (2, 1, 16, 16)"),
    ]
    for images, message in refusals:
        with pytest.raises(MRNetError) as error:
            metrics._check_images(*images)
        assert str(error.value).startswith(message)


@pytest.mark.parametrize("name", ["ssim", "fsim", "vif_p"])
def test_metrics_of_unit_images_are_those_of_the_same_8_bit_images(name):
    """The data range is [0, 1]: the same images on 0-255 with data_range 255 score the same."""
    reference = blur(noise_images(2, 64, seed=1), 1.5)
    prediction = blur(reference, 1.0)
    ours = {"ssim": metrics.ssim, "fsim": metrics.fsim, "vif_p": metrics.vif}[name](prediction, reference)
    extra = {"chromatic": False} if name == "fsim" else {}
    eight_bit = getattr(piq, name)(prediction * 255, reference * 255, data_range=255.0, reduction="none", **extra)
    torch.testing.assert_close(ours, eight_bit, rtol=1e-4, atol=1e-5)
    assert (ours < 0.99).all()  # a real difference, not the identity


def test_spectrum_error_of_an_image_at_twice_its_contrast_is_log10_of_4():
    """Doubling an image multiplies its power at every nonzero frequency by 4."""
    images = noise_images(3, 32) * 0.5
    error = metrics.spectrum_error(2 * images, images)
    assert error.shape == (3,) and error.dtype == torch.float32
    torch.testing.assert_close(error, torch.full((3,), math.log10(4)), rtol=1e-5, atol=0)
    torch.testing.assert_close(metrics.spectrum_error(images, 2 * images), error)


def test_the_radial_spectrum_is_per_image_centred_and_keeps_stripes_of_either_direction():
    rows = torch.arange(16.0).view(1, 1, 16, 1).expand(1, 1, 16, 16) / 15  # horizontal stripes (a ramp down)
    images = torch.cat([rows, rows.transpose(-1, -2) * 0.5 + 0.3, noise_images(1, 16, seed=2)])
    spectrum = metrics.radial_power_spectrum(images)
    assert torch.allclose(spectrum[:, 0], torch.zeros(3, dtype=spectrum.dtype))  # each image's own mean removed
    assert (spectrum[:, 1] > 1e-3).all()  # neither stripe direction is lost
    for i, image in enumerate(images):  # each image's spectrum is its own, whatever the batch
        torch.testing.assert_close(spectrum[i], metrics.radial_power_spectrum(image[None])[0])


def test_intensity_histograms_have_the_bins_asked_for():
    images = noise_images(2, 32)
    assert metrics.intensity_histograms(images).shape == (2, 256)
    counts = metrics.intensity_histograms(images, 8)
    assert counts.shape == (2, 8) and (counts.sum(1) == 32 * 32).all()
    real = images * 0.5
    assert metrics.histogram_distance(real + 0.25, real, bins=16) == pytest.approx(0.25, abs=1 / 16)


def test_subsampled_diversity_uses_distinct_pairs_drawn_from_the_seed():
    """Five images sharing more or less of one pattern: ten pairs of distinct MS-SSIM. Five of them drawn are
    five distinct pairs, the same five for the same seed."""
    weights = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.1]).view(5, 1, 1, 1)
    samples = weights * noise_images(1, 48, seed=9) + (1 - weights) * noise_images(5, 48)
    values = [float(metrics.ms_ssim(samples[[i]], samples[[j]])) for i in range(5) for j in range(i + 1, 5)]
    assert len({round(value, 4) for value in values}) == 10
    means = [sum(chosen) / 5 for chosen in itertools.combinations(values, 5)]
    for seed in range(4):
        got = metrics.diversity_ms_ssim(samples, max_pairs=5, seed=seed)
        assert min(abs(got - mean) for mean in means) < 1e-6
        assert metrics.diversity_ms_ssim(samples, max_pairs=5, seed=seed) == got


def test_sobel_average_gradient_is_float32():
    assert metrics.average_gradient_sobel(noise_images(2, 16).double()).dtype == torch.float32


def test_interpolation_kernels_by_hand():
    row = torch.tensor([[[[-1.0, 1.0], [-1.0, 1.0]]]])
    # bilinear with half-pixel centres: output x samples input positions -0.25, 0.25, 0.75, 1.25 (clamped)
    bilinear = metrics.interpolate(row, 4, "bilinear")
    torch.testing.assert_close(bilinear[0, 0, 0], torch.tensor([-1.0, -0.5, 0.5, 1.0]))
    # nearest samples pixel centres: 2 -> 3 takes pixels 0, 1, 1 (floor((i + 0.5) * 2 / 3))
    assert metrics.interpolate(row, 3, "nearest")[0, 0, 0].tolist() == [-1.0, 1.0, 1.0]
    # Lanczos-3 reaches three input pixels from an impulse; bicubic two
    impulse = torch.full((1, 1, 16, 16), -0.5, dtype=torch.float64)
    impulse[0, 0, 8, 8] = 0.5
    lanczos = metrics.interpolate(impulse, 64, "lanczos")
    assert lanczos.dtype == torch.float64  # in the input's dtype
    centre = 8 * 4 + 2  # the impulse's centre at 64 pixels sits between pixels 33 and 34
    assert abs(float(lanczos[0, 0, 34, centre + 10]) + 0.5) > 1e-4  # 2.5 input pixels away: Lanczos-3 only
    assert abs(float(metrics.interpolate(impulse, 64, "bicubic")[0, 0, 34, centre + 10]) + 0.5) < 1e-6


def test_a_cosine_puts_all_its_power_at_its_own_radius():
    """cos(2 pi 3 x / 16) along either axis: all power at radius 3, none elsewhere."""
    wave = 0.5 + 0.4 * torch.cos(2 * math.pi * 3 * torch.arange(16.0) / 16)
    images = torch.stack([wave.expand(16, 16), wave[:, None].expand(16, 16)])[:, None]
    spectrum = metrics.radial_power_spectrum(images)
    assert spectrum.shape == (2, 9) and (spectrum.argmax(dim=1) == 3).all()
    others = torch.cat([spectrum[:, :3], spectrum[:, 4:]], dim=1)
    assert others.abs().max() < 1e-12 * spectrum[:, 3].min()
    with pytest.raises(MRNetError, match=r"spectrum distance needs equal image sizes; got \(16, 16\) and \(8, 8\)"):
        metrics.power_spectrum_distance(images, images[..., :8, :8])


def test_a_weights_argument_that_is_not_a_file_is_named_as_such(no_weights, tmp_path):
    with pytest.raises(metrics.MissingWeights, match="^the weights argument points to .*nope.pt, which is not a file"):
        metrics.find_weights("inception", tmp_path / "nope.pt")


def test_each_feature_metric_builds_the_inception_output_it_needs(monkeypatch, tmp_path):
    """Without a stand-in, FID and KID take the 2048 pool features and the Inception score the logits, built
    from the weights named."""
    built = []

    def recorder(weights=None, feature="2048"):
        built.append((weights, feature))
        return TinyFeatures() if feature == "2048" else BrightnessClassifier()

    monkeypatch.setattr(metrics, "inception_features", recorder)
    images = noise_images(8, 16) * 0.5
    metrics.fid(images, images + 0.1, weights="w.pt")
    metrics.kid(images, images + 0.1, weights="w.pt")
    metrics.inception_score(images, weights="w.pt", splits=2)
    assert built == [("w.pt", "2048"), ("w.pt", "2048"), ("w.pt", "logits_unbiased")]


def test_inception_features_are_built_from_the_file_found_with_the_feature_asked(monkeypatch, tmp_path):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")
    built = []
    monkeypatch.setattr(metrics, "InceptionFeatures", lambda path, feature: built.append((path, feature)))
    metrics.inception_features(weights)
    metrics.inception_features(weights, "logits_unbiased")
    assert built == [(weights, "2048"), (weights, "logits_unbiased")]


def test_a_uint8_set_is_named_with_its_metric_on_either_side():
    real = noise_images(8, 16)
    as_bytes = (real * 255).to(torch.uint8)
    calls = {
        "fid": (lambda a, b: metrics.fid(a, b, TinyFeatures())),
        "kid": (lambda a, b: metrics.kid(a, b, TinyFeatures())),
        "inception_score": (lambda a, b: metrics.inception_score(a, BrightnessClassifier())),
    }
    for name, call in calls.items():
        for pair in ((as_bytes, real), (real, as_bytes)) if name != "inception_score" else ((as_bytes, None),):
            with pytest.raises(MRNetError, match=f"^{name}: got uint8 images; pass float images in"):
                call(*pair)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_is_torchmetrics_kid_over_the_whole_sets():
    """With one subset as large as both sets, torchmetrics' KID (Binkowski et al.'s estimate) is the
    unbiased MMD^2 over every pair of images: metrics.kid's value."""
    from torchmetrics.image.kid import KernelInceptionDistance

    network = TinyFeatures()
    eight, shifted = noise_images(8, 16, seed=1) * 0.5, noise_images(8, 16, seed=2) * 0.5 + 0.2
    reference = KernelInceptionDistance(feature=network, subsets=1, subset_size=8)
    reference.update(metrics._to_rgb(eight), real=True)
    reference.update(metrics._to_rgb(shifted), real=False)
    assert metrics.kid(shifted, eight, network) == pytest.approx(float(reference.compute()[0]), rel=1e-5)
    five = noise_images(5, 16, seed=3) * 0.5
    assert math.isfinite(metrics.kid(five, eight, network)) and math.isfinite(metrics.kid(eight, five, network))


def test_kid_weighs_each_image_by_its_bootstrap_count_leaving_out_self_pairs():
    rng = np.random.default_rng(0)
    x, y = torch.from_numpy(rng.normal(size=(6, 3))), torch.from_numpy(rng.normal(1, 1, size=(5, 3)))
    c, w = np.array([[2.0, 0, 1, 3, 0, 1]]), np.array([[1.0, 1, 0, 2, 1]])

    def kernel(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    def within(z, counts):  # every pair of distinct images, weighed by both counts
        pairs = [(i, j) for i in range(len(z)) for j in range(len(z)) if i != j]
        return sum(counts[i] * counts[j] * kernel(z[i], z[j]) for i, j in pairs) / sum(counts[i] * counts[j] for i, j in pairs)

    cross = sum(c[0, i] * w[0, j] * kernel(x[i], y[j]) for i in range(6) for j in range(5)) / (c.sum() * w.sum())
    by_hand = within(x, c[0]) + within(y, w[0]) - 2 * cross
    assert metrics.kid_from_features(x, y, c, w) == pytest.approx([by_hand])
    assert metrics.kid_from_features(x, y, np.ones((1, 6)), np.ones((1, 5)))[0] == pytest.approx(
        metrics.kid_from_features(x, y))


def test_memorisation_is_a_per_image_correlation_and_counts_the_threshold_itself():
    train = noise_images(3, 16, seed=6)
    # copies at another brightness and a low contrast (norm below 1) are still copies
    samples = torch.stack([train[0] * 0.5 + 0.4, train[1] * 0.02 + 0.1])
    found = metrics.memorisation(samples, train)
    assert found.nearest_index.tolist() == [0, 1]
    torch.testing.assert_close(found.correlation, torch.ones(2), rtol=0, atol=1e-4)
    # The threshold from the same call's correlation: a batch of another size may round it otherwise (BLAS kernels).
    alone = metrics.memorisation(samples[:1], train).correlation[0]  # float32
    above = torch.nextafter(alone, torch.tensor(2.0))
    assert metrics.memorisation(samples[:1], train, threshold=float(alone)).near_copy_share == 1.0  # at it counts
    assert metrics.memorisation(samples[:1], train, threshold=float(above)).near_copy_share == 0.0
    with pytest.raises(MRNetError, match=r"memorisation needs equal image shapes; got \(1, 16, 16\) and \(1, 8, 8\)"):
        metrics.memorisation(samples, train[..., :8, :8])


def test_the_fid_inception_loads_a_local_weight_file_and_reads_8_bit_images(tmp_path, monkeypatch):
    """A random Inception-v3 in torch-fidelity's layout stands in for the FID weights (not shipped, no download)."""
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    torch.manual_seed(0)
    with monkeypatch.context() as building:  # torch-fidelity's network, randomly initialised, loading nothing
        building.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        building.setattr(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: {})
        random = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(random, path)
    pool, logits = metrics.InceptionFeatures(path), metrics.InceptionFeatures(path, "logits_unbiased")
    assert torch.equal(pool.network.state_dict()["Conv2d_1a_3x3.conv.weight"], random["Conv2d_1a_3x3.conv.weight"])
    images = metrics._to_rgb(noise_images(2, 32))
    features = pool(images)
    assert (pool.num_features, logits.num_features) == (2048, 1008) and features.shape == (2, 2048)
    assert logits(images).shape == (2, 1008)
    # The network sees the 8-bit values of the images: a change under half a grey level changes nothing.
    assert torch.equal(features, pool.network((images * 255).round().to(torch.uint8)))
    assert torch.equal(pool((images * 255).round() / 255 + 0.4 / 255), features)
