"""How a slice's lower resolutions are made: one setting for the whole study, read by every consumer.

The base model's training images, the super-resolution stages' inputs (in training and in evaluation)
and the interpolation and regression baselines' inputs all come from `Degradation.apply`, always from
the 256x256 slice, so that the 64x64 image the base model learns is the one SR1 is given.

- "image": anti-aliased bilinear halving, 256 -> 128 -> 64 (slices.downsample); the project's default.
- "pil": the reference study's one-step resize: the slice as an 8-bit image resized once by PIL's
  bilinear filter to the target size, as its PNG files were read back through torchvision.
- "kspace": what a scanner does when it acquires fewer k-space lines: the central size x size block of
  the slice's 2-D Fourier transform (so Gibbs ringing at edges), optionally under a Tukey window, with
  optional complex Gaussian noise, then the magnitude image (as MRI super-resolution work simulates it,
  e.g. Chen et al. 2018, "Brain MRI super resolution using 3D deep densely connected neural networks").
  The low-res grid is centred on the high-res one as the image-domain filters' is (a half-pixel phase
  ramp), so that bilinear upsampling with align_corners=False registers with it.

Intensities: slices live in [-1, 1]; "kspace" works on the [0, 1] intensities (x + 1) / 2, so that the
magnitude image is the scanner's, and maps back, clamped to [-1, 1] as every image of the project is.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy.signal.windows import tukey

from mrnet_utils.data.slices import degrade
from mrnet_utils.errors import MRNetError

METHODS = ("image", "kspace", "pil")
_SPEC_FIELDS = {"window": "kspace_window", "snr": "kspace_snr", "seed": "noise_seed"}  # parse()'s short names


@dataclass(frozen=True)
class Degradation:
    """The degradation setting (config.StageConfig.degradation, and the study's)."""

    method: str = "image"  # one of METHODS
    kspace_window: float = 0.0  # Tukey alpha over the kept frequencies: 0 a sharp truncation, 1 a Hann window
    # > 0: complex Gaussian noise whose standard deviation in each of the real and imaginary parts is the
    # low-res image's mean magnitude / kspace_snr; 0: none
    kspace_snr: float = 0.0
    noise_seed: int = 0  # the noise of a slice is drawn from (noise_seed, the slice's bytes): the same wherever it is made

    def validate(self) -> None:
        if self.method not in METHODS:
            raise MRNetError(f"degradation.method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0 <= self.kspace_window <= 1:
            raise MRNetError(f"degradation.kspace_window={self.kspace_window} must lie in [0, 1] (a Tukey alpha)")
        if self.kspace_snr < 0 or not np.isfinite(self.kspace_snr):
            raise MRNetError(f"degradation.kspace_snr={self.kspace_snr} must be 0 (no noise) or a positive SNR")
        if self.method != "kspace" and (self.kspace_window or self.kspace_snr):
            raise MRNetError(f"degradation.kspace_window and kspace_snr apply to method 'kspace', not {self.method!r}")

    @classmethod
    def parse(cls, text: str) -> "Degradation":
        """A setting from its text, as the command line and the notebooks give it: a method, then optional
        `window=`, `snr=` and `seed=` for k-space, e.g. "kspace" or "kspace,snr=30,window=0.5"."""
        method, *options = [part.strip() for part in str(text).split(",")]
        values: dict[str, float | int] = {}
        for option in options:
            key, _, value = option.partition("=")
            if key not in _SPEC_FIELDS or not value:
                raise MRNetError(f"degradation {text!r}: {option!r} is not one of window=, snr=, seed= "
                                 "(e.g. kspace,snr=30,window=0.5)", parameter="degradation")
            try:
                values[_SPEC_FIELDS[key]] = int(value) if key == "seed" else float(value)
            except ValueError:
                raise MRNetError(f"degradation {text!r}: {key}={value} is not a number", parameter="degradation") from None
        setting = cls(method, **values)
        setting.validate()
        return setting

    def describe(self) -> str:
        """The text `parse` reads back: the method and the k-space options that differ from their defaults."""
        default = Degradation()
        options = [f"{short}={getattr(self, field)}" for short, field in _SPEC_FIELDS.items()
                   if getattr(self, field) != getattr(default, field)]
        return ",".join([self.method, *options])

    def apply(self, slices: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 1, S, S) slices in [-1, 1] at `size` x `size` (S / size a power of two); `size` == S returns them."""
        self.validate()
        side = slices.shape[-1]
        if slices.ndim != 4 or slices.shape[-2] != side or size > side or side % size or (side // size) & (side // size - 1):
            raise MRNetError(f"a degradation takes (B, C, S, S) images to S / 2**k; cannot take shape "
                             f"{tuple(slices.shape)} to {size}")
        if size == side:
            return slices
        if self.method == "image":
            return degrade(slices, size)
        if self.method == "pil":
            return pil_resize(slices, size)
        return kspace_truncate(slices, size, self.kspace_window, self.kspace_snr, self.noise_seed)


def pil_resize(slices: torch.Tensor, size: int) -> torch.Tensor:
    """Each slice as an 8-bit grey image, resized once with PIL's bilinear filter (antialiased when it shrinks)."""
    out = []
    for image in slices.float().cpu().numpy():
        pixels = np.round((np.clip(image[0], -1, 1) + 1) / 2 * 255).astype(np.uint8)
        small = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(small, dtype=np.float32)[None] / 255 * 2 - 1)
    return torch.from_numpy(np.stack(out)).to(slices.device)


def kspace_truncate(slices: torch.Tensor, size: int, window: float = 0.0, snr: float = 0.0, seed: int = 0) -> torch.Tensor:
    """The magnitude image of the central size x size block of each slice's k-space (see the module docstring)."""
    side = slices.shape[-1]
    intensity = (slices.double() + 1) / 2
    spectrum = torch.fft.fftshift(torch.fft.fft2(intensity), dim=(-2, -1))
    low = side // 2 - size // 2
    kept = spectrum[..., low : low + size, low : low + size]
    # frequencies of the kept block, -size/2 .. size/2 - 1, and the phase ramp that moves the low-res samples
    # from the high-res grid's corner pixels to the centres of its size x size blocks: (side / size - 1) / 2 pixels
    k = torch.arange(size, dtype=torch.float64) - size // 2
    shift = (side / size - 1) / 2
    ramp = torch.exp(2j * torch.pi * k * shift / side)
    kept = kept * ramp[:, None] * ramp[None, :]
    if window:
        taper = torch.from_numpy(tukey(size, window, sym=False))
        taper = torch.roll(taper, size // 2 - int(np.argmax(taper)))  # its peak on the zero frequency
        kept = kept * taper[:, None] * taper[None, :]
    # (size / side)^2 keeps the intensity scale: the inverse transform of `size` points divides by size^2
    image = torch.fft.ifft2(torch.fft.ifftshift(kept, dim=(-2, -1))) * (size / side) ** 2
    if snr:
        image = image + complex_noise(slices, image, snr, seed)
    return (image.abs() * 2 - 1).clamp(-1, 1).to(slices.dtype)


def complex_noise(slices: torch.Tensor, image: torch.Tensor, snr: float, seed: int) -> torch.Tensor:
    """Complex Gaussian noise for each low-res image, sigma = mean |image| / snr in each part, drawn from a
    generator seeded by (seed, the slice's bytes), so that a slice gets the same noise in any batch."""
    noise = []
    for slice_, low in zip(slices, image):
        key = zlib.crc32(slice_.float().cpu().numpy().tobytes())
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, key]).generate_state(1)[0]))
        sigma = float(low.abs().mean()) / snr
        noise.append(torch.complex(torch.randn(low.shape, generator=generator, dtype=torch.float64),
                                   torch.randn(low.shape, generator=generator, dtype=torch.float64)) * sigma)
    return torch.stack(noise)


__all__ = ["METHODS", "Degradation", "pil_resize", "kspace_truncate"]
