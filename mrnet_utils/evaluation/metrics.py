"""Image metrics for the study: super-resolution quality, interpolation baselines, generation.

Every metric takes float tensors (B, 1, H, W) in [0, 1] (data range 1.0); model-space
images in [-1, 1] are mapped with `(x + 1) / 2` by the caller. Per-image metrics return
a (B,) tensor so that callers can put confidence intervals on them.

The formulas come from maintained libraries (piq, torchmetrics, lpips, torch-fidelity's
Inception through torchmetrics); only the average gradient and the distribution
distances below have no maintained implementation and are written here, each defined
in its docstring.

Pretrained networks (the LPIPS backbone, the FID Inception) are never downloaded: their
weight files are looked up in an explicit path, an environment variable, or the torch
hub cache (evaluation.weights), and `MissingWeights` says which file is missing and how to
supply it; `python -m mrnet_utils weights --download` fetches them on request.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import lpips as lpips_package
import numpy as np
import piq
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from scipy.stats import wasserstein_distance
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.image import (
    FrechetInceptionDistance,
    InceptionScore,
)
from torchmetrics.image.fid import NoTrainInceptionV3

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.weights import MissingWeights, find_weights

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


# ---------------------------------------------------------------------------
# Super-resolution metrics: full-reference, per image
# ---------------------------------------------------------------------------


def _check_images(*images: Tensor) -> None:
    for x in images:
        if x.dim() != 4 or not x.is_floating_point():
            raise MRNetError(f"metrics take float tensors (B, C, H, W); got dtype {x.dtype}, shape {tuple(x.shape)}")
        if x.min() < 0 or x.max() > 1:
            raise MRNetError(f"metrics take images in [0, 1]; got [{x.min():.3g}, {x.max():.3g}]: map [-1, 1] with (x + 1) / 2")
    if len(images) == 2 and images[0].shape != images[1].shape:
        raise MRNetError(f"prediction and reference shapes differ: {tuple(images[0].shape)} vs {tuple(images[1].shape)}")


def psnr(prediction: Tensor, reference: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image; +inf for identical images."""
    _check_images(prediction, reference)
    return peak_signal_noise_ratio(prediction, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(prediction: Tensor, reference: Tensor) -> Tensor:
    """SSIM per image (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5."""
    _check_images(prediction, reference)
    return piq.ssim(prediction, reference, data_range=1.0, reduction="none")


# Wang, Simoncelli & Bovik (2003), "Multi-scale structural similarity for image quality assessment".
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11


def ms_ssim_scales(side: int) -> int:
    """Number of MS-SSIM scales that fit an image of this side: 3 at 64, 4 at 128, 5 at 256.

    Each scale halves the image, and the 11-pixel window must still fit at the coarsest
    one: side >= (11 - 1) * 2**(scales - 1) + 1. The paper's five scales need 161 pixels,
    so 64 and 128 images use the first 3 or 4 of the paper's weights, renormalised to sum
    to one (piq does the renormalisation).
    """
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        if side >= (MS_SSIM_KERNEL - 1) * 2 ** (scales - 1) + 1:
            return scales
    raise MRNetError(f"MS-SSIM needs images of at least {MS_SSIM_KERNEL} pixels a side; got {side}")


def ms_ssim(prediction: Tensor, reference: Tensor) -> Tensor:
    """Multi-scale SSIM per image, with as many of the paper's scales as the size allows."""
    _check_images(prediction, reference)
    scales = ms_ssim_scales(min(prediction.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=prediction.dtype, device=prediction.device)
    return piq.multi_scale_ssim(
        prediction, reference, kernel_size=MS_SSIM_KERNEL, data_range=1.0, reduction="none", scale_weights=weights
    )


def fsim(prediction: Tensor, reference: Tensor) -> Tensor:
    """Feature similarity index per image (Zhang et al. 2011), grey-scale variant."""
    _check_images(prediction, reference)
    return piq.fsim(prediction, reference, data_range=1.0, reduction="none", chromatic=False)


def vif(prediction: Tensor, reference: Tensor) -> Tensor:
    """Pixel-domain visual information fidelity per image (Sheikh & Bovik 2006); 1 for identical images."""
    _check_images(prediction, reference)
    return piq.vif_p(prediction, reference, data_range=1.0, reduction="none")


def average_gradient(images: Tensor) -> Tensor:
    """Average gradient per image, a no-reference sharpness measure, on the [0, 1] scale.

    AG = 1 / ((H-1)(W-1)) * sum_{i<H-1, j<W-1} sqrt((dx^2 + dy^2) / 2), with forward
    differences dx = I[i, j+1] - I[i, j] and dy = I[i+1, j] - I[i, j], as defined in the
    image-fusion literature (e.g. Cui et al., Optics Communications 341:199-209, 2015).
    Computed on [0, 1] intensities, so it is 1/255 of the value on 0-255 images.
    """
    _check_images(images)
    top_left = images[..., :-1, :-1]
    dx = images[..., :-1, 1:] - top_left
    dy = images[..., 1:, :-1] - top_left
    return torch.sqrt((dx**2 + dy**2) / 2).mean(dim=(1, 2, 3))


def average_gradient_sobel(images: Tensor) -> Tensor:
    """The reference study's average gradient, per image: the mean Sobel gradient magnitude.

    mean sqrt(gx^2 + gy^2) with gx, gy from scipy.ndimage.sobel along each axis (the
    reference's Evaluate_SR notebook), on [0, 1] intensities. The Sobel kernel weighs
    three rows of central differences (1, 2, 1), so this is about 8 times a per-pixel
    difference: not comparable with `average_gradient`.
    """
    _check_images(images)
    # One (H, W) image at a time: scipy's Sobel smooths along every axis but the one it differentiates,
    # so on a (B, H, W) stack it would weigh each image with its neighbours in the batch (1, 2, 1).
    magnitudes = [
        np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1)).mean()
        for image in images.detach().double().cpu().numpy()[:, 0]
    ]
    return torch.tensor(magnitudes, dtype=torch.float32)


def spectrum_error(prediction: Tensor, reference: Tensor) -> Tensor:
    """Per image: mean absolute log10 ratio of its radial power spectrum to its reference's, radii >= 1.

    0 when an image has its ground truth's spectrum; a smoothed image falls short at high
    frequencies, a grainy one overshoots. The per-image form of `power_spectrum_distance`.
    """
    _check_images(prediction, reference)
    eps = 1e-12
    ratio = torch.log10(radial_power_spectrum(prediction)[:, 1:] + eps) - torch.log10(
        radial_power_spectrum(reference)[:, 1:] + eps
    )
    return ratio.abs().mean(dim=1).float()


def load_lpips(weights: str | os.PathLike | None = None, net: str = "alex") -> nn.Module:
    """The LPIPS network (Zhang et al. 2018) with a local ImageNet backbone; never downloads.

    The `lpips` package ships its calibrated linear layers but takes the backbone from
    torchvision, which would download it. So the network is built with a random backbone
    and the backbone's convolution weights are loaded from `find_weights(net, weights)`.
    """
    path = find_weights(net, weights)
    with warnings.catch_warnings():  # lpips uses torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        network = lpips_package.LPIPS(net=net, pnet_rand=True, verbose=False)
    backbone = torch.load(path, map_location="cpu", weights_only=True)
    # LPIPS splits torchvision's `features` Sequential into slices that keep the layer
    # indices: "slice2.3.weight" is torchvision's "features.3.weight".
    state = {key: backbone["features." + key.split(".", 1)[1]] for key in network.net.state_dict()}
    network.net.load_state_dict(state)
    return network.eval()


@torch.no_grad()
def lpips(prediction: Tensor, reference: Tensor, network: nn.Module) -> Tensor:
    """LPIPS distance per image (lower is closer); grey-scale is repeated to three channels."""
    _check_images(prediction, reference)
    network = network.to(prediction.device)
    distance = network(_to_rgb(prediction), _to_rgb(reference), normalize=True)  # normalize: inputs in [0, 1]
    return distance.flatten()


def _to_rgb(images: Tensor) -> Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# ---------------------------------------------------------------------------
# Interpolation baselines
# ---------------------------------------------------------------------------


def interpolate(low_res: Tensor, size: int | tuple[int, int], method: str) -> Tensor:
    """Upsample model-space images (B, 1, h, w) in [-1, 1] to `size` with a classical kernel.

    nearest (pixel replication at integer factors), bilinear and bicubic use torch;
    lanczos (a = 3) uses PIL on float ('F' mode) images. The result is clamped to
    [-1, 1] because bicubic and Lanczos overshoot at edges.
    """
    if method not in INTERPOLATIONS:
        raise MRNetError(f"interpolation method {method!r} is unknown; use one of {INTERPOLATIONS}")
    height, width = (size, size) if isinstance(size, int) else size
    if method == "lanczos":
        upsampled = torch.stack([_lanczos(image, height, width) for image in low_res.flatten(0, 1).float().cpu()])
        upsampled = upsampled.view(*low_res.shape[:2], height, width).to(low_res)
    elif method == "nearest":
        # nearest-exact samples pixel centres: pixel replication at integer factors.
        upsampled = F.interpolate(low_res, size=(height, width), mode="nearest-exact")
    else:
        upsampled = F.interpolate(low_res, size=(height, width), mode=method, align_corners=False)
    return upsampled.clamp(-1, 1)


def _lanczos(image: Tensor, height: int, width: int) -> Tensor:
    floating = Image.fromarray(image.numpy())  # a float32 array becomes an 'F' (32-bit float) image
    resized = floating.resize((width, height), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(resized).copy())


# ---------------------------------------------------------------------------
# Generation: feature-network metrics (FID, IS, KID)
# ---------------------------------------------------------------------------


def _feature_input(images: Tensor, name: str) -> Tensor:
    """Float [0, 1] images, grey-scale repeated to three channels, for a feature network."""
    if images.dtype == torch.uint8:
        # The reference study cast to uint8 and still passed normalize=True to torchmetrics,
        # which then multiplies by 255 again and wraps around. Refuse rather than guess.
        raise MRNetError(f"{name}: got uint8 images; pass float images in [0, 1] (e.g. x.float() / 255)")
    _check_images(images)
    return _to_rgb(images)


class InceptionFeatures(nn.Module):
    """The FID Inception-v3 (Heusel et al. 2017; torch-fidelity's port via torchmetrics).

    Takes float images (B, 3, H, W) in [0, 1] and quantises them to the 8-bit values the
    network was trained on; it resizes to 299x299 itself. `feature` is "2048" (pool
    features for FID and KID) or "logits_unbiased" (class logits for the Inception score).
    """

    def __init__(self, weights_path: Path, feature: str = "2048"):
        super().__init__()
        self.network = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[feature], feature_extractor_weights_path=str(weights_path)
        )
        self.num_features = 2048 if feature == "2048" else 1008

    def forward(self, images: Tensor) -> Tensor:
        return self.network((images * 255).round().to(torch.uint8))


def inception_features(weights: str | os.PathLike | None = None, feature: str = "2048") -> InceptionFeatures:
    """Build the standard FID Inception from a local weight file; MissingWeights if it (or torch-fidelity) is absent."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise MissingWeights("the FID Inception network needs the torch-fidelity package: pip install torch-fidelity")
    return InceptionFeatures(find_weights("inception", weights), feature)


@contextlib.contextmanager
def _quiet_feature_buffer():
    """Silence torchmetrics' warning that IS keeps all features: the study's sets are small."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        yield


@torch.no_grad()
def _update(metric, images: Tensor, batch_size: int, **kwargs) -> None:
    for batch in images.split(batch_size):
        metric.update(batch, **kwargs)


def fid(
    samples: Tensor,
    real: Tensor,
    feature_extractor: nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
) -> float:
    """Frechet distance between feature distributions (Heusel et al. 2017), via torchmetrics.

    `feature_extractor` maps float (B, 3, H, W) images in [0, 1] to (B, F) features; by
    default the FID Inception with weights from `find_weights("inception", weights)`.
    """
    samples, real = _feature_input(samples, "fid"), _feature_input(real, "fid")
    network = feature_extractor if feature_extractor is not None else inception_features(weights, "2048")
    # A custom module gets the images unchanged; normalize=True only makes torchmetrics
    # probe the network with a float image when it has no `num_features`.
    metric = FrechetInceptionDistance(feature=network, normalize=True, input_img_size=tuple(samples.shape[1:]))
    metric = metric.to(samples.device)
    _update(metric, real, batch_size, real=True)
    _update(metric, samples, batch_size, real=False)
    return float(metric.compute())


def inception_score(
    samples: Tensor,
    feature_extractor: nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    splits: int = 10,
    batch_size: int = 50,
    seed: int = 0,
) -> tuple[float, float]:
    """Inception score (Salimans et al. 2016): mean and standard deviation over `splits`.

    `feature_extractor` must return class logits here; by default the FID Inception's.
    The split assignment is a seeded permutation, so the result is reproducible.
    """
    samples = _feature_input(samples, "inception_score")
    network = feature_extractor if feature_extractor is not None else inception_features(weights, "logits_unbiased")
    with _quiet_feature_buffer():
        # normalize=False: torchmetrics would otherwise turn the floats into uint8 before the network.
        metric = InceptionScore(feature=network, splits=splits, normalize=False).to(samples.device)
    _update(metric, samples, batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def image_features(
    images: Tensor, feature_extractor: nn.Module | None = None, weights: str | os.PathLike | None = None,
    batch_size: int = 50, name: str = "kid",
) -> Tensor:
    """(N, F) features of float [0, 1] images from `feature_extractor`, by default the FID Inception's pool features."""
    images = _feature_input(images, name)
    network = (feature_extractor if feature_extractor is not None else inception_features(weights, "2048")).to(images.device)
    return torch.cat([network(batch).reshape(len(batch), -1).double().cpu() for batch in images.split(batch_size)])


def kid_from_features(samples: Tensor, real: Tensor, sample_counts=None, real_counts=None) -> np.ndarray:
    """Kernel inception distance (Binkowski et al. 2018, eq. 4): the unbiased MMD^2 between two feature sets
    with the kernel k(x, y) = (x.y / F + 1)^3, over every pair of distinct images.

    `sample_counts` (B, N) and `real_counts` (B, M) weigh each image by how often a bootstrap resample drew
    it; pairs of an image with itself stay out, as in the unbiased estimate. Returns one value per row of
    counts (B,), or a scalar without counts."""
    x, y = samples.double().numpy(), real.double().numpy()
    width = x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / width + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    np.fill_diagonal(k_xx, 0.0)
    np.fill_diagonal(k_yy, 0.0)
    c = np.ones((1, len(x))) if sample_counts is None else np.atleast_2d(np.asarray(sample_counts, dtype=float))
    w = np.ones((1, len(y))) if real_counts is None else np.atleast_2d(np.asarray(real_counts, dtype=float))

    def within(counts, kernel):  # sum over pairs of distinct images, each weighed by both counts
        return np.einsum("bi,bi->b", counts @ kernel, counts) / (counts.sum(1) ** 2 - (counts**2).sum(1))

    values = within(c, k_xx) + within(w, k_yy) - 2 * np.einsum("bi,bi->b", c @ k_xy, w) / (c.sum(1) * w.sum(1))
    return values if sample_counts is not None or real_counts is not None else values[0]


def kid(
    samples: Tensor,
    real: Tensor,
    feature_extractor: nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
) -> float:
    """Kernel inception distance between two image sets (kid_from_features of their image_features)."""
    network = feature_extractor if feature_extractor is not None else inception_features(weights, "2048")
    return float(kid_from_features(image_features(samples, network, batch_size=batch_size),
                                   image_features(real, network, batch_size=batch_size)))


# ---------------------------------------------------------------------------
# Generation: metrics that need no pretrained network
# ---------------------------------------------------------------------------


def pairwise_ms_ssim(
    samples: Tensor, max_pairs: int = 1000, batch_size: int = 64, seed: int = 0, groups=None
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (P, 2) of distinct samples that diversity_ms_ssim averages, and the MS-SSIM of each (P,).

    All pairs when there are at most `max_pairs`, else `max_pairs` random pairs (seeded). `groups`
    (one id per image, e.g. the exam of a real slice) keeps only pairs from different groups.
    """
    _check_images(samples)
    n = len(samples)
    groups = np.zeros(n, dtype=int) - np.arange(n) if groups is None else np.asarray(groups)
    pairs = np.array([(i, j) for i, j in itertools.combinations(range(n), 2) if groups[i] != groups[j]])
    if not len(pairs):
        raise MRNetError(f"diversity needs at least 2 samples from different groups; got {n} in {len(set(groups))}")
    if len(pairs) > max_pairs:
        pairs = pairs[np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)]
    first, second = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    values = [ms_ssim(samples[i], samples[j]) for i, j in zip(first.split(batch_size), second.split(batch_size))]
    return pairs, torch.cat(values).double().cpu().numpy()


def diversity_ms_ssim(
    samples: Tensor, max_pairs: int = 1000, batch_size: int = 64, seed: int = 0, groups=None
) -> float:
    """Mean MS-SSIM over pairs of distinct samples (pairwise_ms_ssim); lower means more diverse.

    As in the medical diffusion literature (e.g. Pinaya et al. 2022). `groups` (e.g. the exam of a
    real slice) keeps only pairs from different groups: two slices of one knee look alike, which would
    understate real diversity.
    """
    return float(pairwise_ms_ssim(samples, max_pairs, batch_size, seed, groups)[1].mean())


def histogram_distance(samples: Tensor, real: Tensor, bins: int = 256) -> float:
    """Wasserstein-1 distance between the pooled intensity distributions, in [0, 1] units.

    Intensities are binned into `bins` equal bins on [0, 1] (so the distance is exact to
    half a bin) and compared with scipy's 1-D Wasserstein distance.
    """
    _check_images(samples)
    _check_images(real)
    return histogram_w1(intensity_histograms(samples, bins).sum(0), intensity_histograms(real, bins).sum(0))


def intensity_histograms(images: Tensor, bins: int = 256) -> np.ndarray:
    """Per image, the counts of its intensities in `bins` equal bins on [0, 1]: (B, bins)."""
    return np.stack([torch.histc(image.float(), bins=bins, min=0, max=1).cpu().numpy() for image in images])


def histogram_w1(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Wasserstein-1 distance between two intensity histograms of equal bins on [0, 1]."""
    centres = (np.arange(len(counts_a)) + 0.5) / len(counts_a)
    return float(wasserstein_distance(centres, centres, counts_a, counts_b))


def radial_power_spectrum(images: Tensor) -> Tensor:
    """Radially averaged power spectrum per image, (B, R) for integer radii 0..min(H, W)//2.

    Power is |FFT(I - mean I)|^2 / (H W); radius r collects the frequencies whose distance
    from zero, in cycles per image, rounds to r.
    """
    height, width = images.shape[-2:]
    centred = (images - images.mean(dim=(-2, -1), keepdim=True)).double()
    power = torch.fft.fftshift(torch.fft.fft2(centred).abs() ** 2, dim=(-2, -1)).mean(dim=1) / (height * width)
    fy, fx = torch.meshgrid(
        torch.arange(height) - height // 2, torch.arange(width) - width // 2, indexing="ij"
    )
    radius = torch.sqrt(fx.double() ** 2 + fy.double() ** 2).round().long().flatten().to(images.device)
    keep = radius <= min(height, width) // 2
    radius, power = radius[keep], power.flatten(1)[:, keep]
    sums = torch.zeros(len(images), int(radius.max()) + 1, dtype=power.dtype, device=images.device)
    sums.index_add_(1, radius, power)
    return sums / torch.bincount(radius).to(sums)


def power_spectrum_distance(samples: Tensor, real: Tensor) -> float:
    """Mean absolute log10 ratio of the mean radial power spectra, over radii >= 1 (decades).

    0 when the two sets have the same average spectrum; 1 would mean a tenfold power
    difference at every frequency. The zero-frequency bin is skipped (images are centred).
    """
    _check_images(samples)
    _check_images(real)
    if samples.shape[-2:] != real.shape[-2:]:
        raise MRNetError(f"spectrum distance needs equal image sizes; got {tuple(samples.shape[-2:])} and {tuple(real.shape[-2:])}")
    return spectrum_log_distance(radial_power_spectrum(samples).mean(0), radial_power_spectrum(real).mean(0))


def spectrum_log_distance(spectrum_a, spectrum_b) -> float:
    """Mean absolute log10 ratio of two radial power spectra (tensors or arrays) over radii >= 1."""
    eps = 1e-12  # keeps log finite for a flat image
    a, b = torch.as_tensor(spectrum_a, dtype=torch.float64), torch.as_tensor(spectrum_b, dtype=torch.float64)
    return float((torch.log10(a[1:] + eps) - torch.log10(b[1:] + eps)).abs().mean())


class Memorisation(NamedTuple):
    nearest_index: Tensor  # (N,) index of each sample's most similar training image
    correlation: Tensor  # (N,) its Pearson correlation with that image
    near_copy_share: float  # share of samples whose correlation is at least the threshold


def memorisation(samples: Tensor, train_images: Tensor, threshold: float = 0.95, batch_size: int = 512) -> Memorisation:
    """Nearest training image of each sample by Pearson correlation of pixels.

    The correlation of two images is that of their flattened pixel vectors (normalised
    cross-correlation at zero shift): 1 for a copy up to brightness and contrast. A
    sample at or above `threshold` counts as a near-copy.
    """
    _check_images(samples)
    _check_images(train_images)
    if samples.shape[1:] != train_images.shape[1:]:
        raise MRNetError(f"memorisation needs equal image shapes; got {tuple(samples.shape[1:])} and {tuple(train_images.shape[1:])}")
    queries = _unit_centred(samples)
    best = torch.full((len(samples),), -2.0, device=samples.device)
    index = torch.zeros(len(samples), dtype=torch.long, device=samples.device)
    for start in range(0, len(train_images), batch_size):
        correlation = queries @ _unit_centred(train_images[start : start + batch_size]).T
        value, position = correlation.max(dim=1)
        better = value > best
        best[better], index[better] = value[better], position[better] + start
    return Memorisation(index, best, float((best >= threshold).float().mean()))


def _unit_centred(images: Tensor) -> Tensor:
    flat = images.flatten(1).float()
    flat = flat - flat.mean(dim=1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
