"""The one UNet family used by every stage: base 64, SR 64->128, SR 128->256 and single-stage 256.

A DDPM UNet (Ho et al. 2020) with residual blocks modulated by the time embedding
(scale-shift, as in Improved DDPM, Nichol & Dhariwal 2021), optional self-attention
at chosen resolutions, and an optional Swin-transformer bottleneck (Liu et al. 2021,
built from MONAI's blocks). Super-resolution stages take the upsampled low-res image
as extra input channels (SR3, Saharia et al. 2021) and the conditioning-augmentation
level as an extra embedding (Cascaded Diffusion Models, Ho et al. 2021). The network
never knows which sampler or schedule calls it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrnet_utils.config import UNetConfig
from mrnet_utils.diffusion.conditioning import concat_condition
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.swin import SwinBottleneck

IMAGE_CHANNELS = 1  # grey-scale MRI slices
ATTENTION_HEAD_DIM = 32
# aug_level lives in [0, 1]; stretching it to the timestep range lets it use every frequency.
AUG_LEVEL_SCALE = 1000.0


def sinusoidal_embedding(values: Tensor, dim: int) -> Tensor:
    """(B,) numbers -> (B, dim) sines and cosines at geometric frequencies (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _embedding_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))


def _attention_heads(channels: int) -> int:
    """About one head per 32 channels, reduced until it divides the width."""
    heads = max(1, channels // ATTENTION_HEAD_DIM)
    while channels % heads:
        heads -= 1
    return heads


class ResBlock(nn.Module):
    """Residual block with scale-shift modulation by the embedding (Improved DDPM, Nichol & Dhariwal 2021)."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, with a residual (as in DDPM, Ho et al. 2020)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.heads = _attention_heads(channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # (B, 3C, H, W) -> three (B, heads, H*W, C/heads) tensors
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """2x downsampling by a strided 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """2x upsampling: nearest neighbour, then a 3x3 convolution (avoids transposed-conv checkerboards)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One UNet level: residual blocks, then self-attention when this resolution asks for it."""

    def __init__(
        self, in_channels: int, out_channels: int, cfg: UNetConfig, embed_dim: int, attention: bool
    ) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * cfg.num_res_blocks
        self.blocks = nn.ModuleList(
            ResBlock(a, b, embed_dim, cfg.norm_groups, cfg.dropout) for a, b in zip(widths[:-1], widths[1:])
        )
        self.attention = SelfAttention(out_channels, cfg.norm_groups) if attention else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, emb)
        return self.attention(x)


class UNet(nn.Module):
    """Denoising UNet for every stage (DDPM, Ho et al. 2020), with SR3 conditioning and a Swin bottleneck.

    `forward(x, t, cond, aug_level, labels)` returns a (B, 1, H, W) prediction:
    - `x` (B, 1, H, W) the noisy image, H = W = cfg.resolution; `t` (B,) timesteps.
    - `cond` (B, cfg.cond_channels, H, W): the upsampled, augmented low-res image (SR stages only).
    - `aug_level` (B,) in [0, 1]: its conditioning-augmentation level (SR stages only; None = 0).
    - `labels` (B, cfg.num_labels) in {0, 1}, or negative for a label's null state (no label),
      which classifier-free guidance uses; None is every label null (only when cfg.num_labels > 0).
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.time_embed_dim % 2:
            raise MRNetError(f"time_embed_dim={cfg.time_embed_dim} must be even (cosine and sine halves)")
        self.cfg = cfg
        embed_dim = 4 * cfg.time_embed_dim
        self.time_mlp = _embedding_mlp(cfg.time_embed_dim)
        self.aug_mlp = _embedding_mlp(cfg.time_embed_dim) if cfg.cond_channels else None
        # Three rows per label: 0, 1 and null ("no label", for classifier-free guidance), summed over the
        # labels, so that any subset of the labels can be left null (diffusion.guidance).
        self.label_embed = nn.Embedding(3 * cfg.num_labels, embed_dim) if cfg.num_labels else None

        self.input_conv = nn.Conv2d(IMAGE_CHANNELS + cfg.cond_channels, cfg.channels[0], 3, padding=1)
        sides = [cfg.resolution // 2**i for i in range(len(cfg.channels))]
        attention = [side in cfg.attention_resolutions for side in sides]
        widths = [cfg.channels[0], *cfg.channels]
        self.encoder = nn.ModuleList(
            Level(widths[i], widths[i + 1], cfg, embed_dim, attention[i]) for i in range(len(cfg.channels))
        )
        self.downsamples = nn.ModuleList(Downsample(width) for width in cfg.channels)

        self.mid_in = ResBlock(cfg.channels[-1], cfg.bottleneck_channels, embed_dim, cfg.norm_groups, cfg.dropout)
        self.mid_out = ResBlock(
            cfg.bottleneck_channels, cfg.bottleneck_channels, embed_dim, cfg.norm_groups, cfg.dropout
        )

        # Decoder level i takes the upsampled features of the level below, concatenated with encoder level i.
        below = [*cfg.channels[1:], cfg.bottleneck_channels]
        self.upsamples = nn.ModuleList(Upsample(width) for width in below)
        self.decoder = nn.ModuleList(
            Level(below[i] + cfg.channels[i], cfg.channels[i], cfg, embed_dim, attention[i])
            for i in range(len(cfg.channels))
        )

        self.output = nn.Sequential(
            nn.GroupNorm(cfg.norm_groups, cfg.channels[0]),
            nn.SiLU(),
            nn.Conv2d(cfg.channels[0], IMAGE_CHANNELS, 3, padding=1),
        )
        # Zero output: the untrained network predicts 0, which keeps the first steps stable.
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

        # Built last so that, from the same seed, the Swin and no-Swin variants draw identical
        # weights for everything they share (a controlled ablation).
        self.swin = (
            SwinBottleneck(
                cfg.bottleneck_channels, cfg.bottleneck_resolution, cfg.swin_heads, cfg.swin_window, cfg.swin_depth
            )
            if cfg.use_swin
            else nn.Identity()
        )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        aug_level: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        self._check_image(x)
        emb = self._embedding(x.shape[0], t, aug_level, labels, x.device)
        h = self.input_conv(concat_condition(x, cond, self.cfg.cond_channels, "UNet"))

        skips = []
        for level, down in zip(self.encoder, self.downsamples):
            h = level(h, emb)
            skips.append(h)
            h = down(h)

        h = self.mid_out(self.swin(self.mid_in(h, emb)), emb)

        for i in reversed(range(len(self.decoder))):
            h = self.upsamples[i](h)
            h = self.decoder[i](torch.cat([h, skips[i]], dim=1), emb)
        return self.output(h)

    def _check_image(self, x: Tensor) -> None:
        side = self.cfg.resolution
        if x.ndim != 4 or x.shape[1] != IMAGE_CHANNELS or x.shape[2] != side or x.shape[3] != side:
            raise MRNetError(
                f"UNet input has shape {tuple(x.shape)}; this network takes (B, {IMAGE_CHANNELS}, {side}, {side}) "
                f"(UNetConfig.resolution={side})"
            )

    def _embedding(
        self, batch: int, t: Tensor, aug_level: Tensor | None, labels: Tensor | None, device: torch.device
    ) -> Tensor:
        """Time embedding, plus the augmentation level and the labels where the network takes them."""
        dim = self.cfg.time_embed_dim
        emb = self.time_mlp(sinusoidal_embedding(_per_sample(t, batch, "t", device), dim))
        if self.aug_mlp is not None:
            level = (
                torch.zeros(batch, device=device)
                if aug_level is None
                else _per_sample(aug_level, batch, "aug_level", device)
            )
            emb = emb + self.aug_mlp(sinusoidal_embedding(level * AUG_LEVEL_SCALE, dim))
        elif aug_level is not None:
            raise MRNetError(
                "aug_level was given to a network with cond_channels=0; only super-resolution stages take it"
            )
        if self.label_embed is not None:
            emb = emb + self.label_embed(self._label_index(batch, labels, device)).sum(dim=1)
        elif labels is not None:
            raise MRNetError("labels were given to a network with num_labels=0; set UNetConfig.num_labels to use them")
        return emb

    def _label_index(self, batch: int, labels: Tensor | None, device: torch.device) -> Tensor:
        """(B, num_labels) rows of label_embed: 3 * label + state, state 0, 1 or 2 (null, a negative entry)."""
        n = self.cfg.num_labels
        if labels is None:
            labels = torch.full((batch, n), -1, device=device)
        if tuple(labels.shape) != (batch, n):
            raise MRNetError(f"labels must have shape ({batch}, {n}) with entries 0/1, got {tuple(labels.shape)}")
        labels = labels.to(device=device, dtype=torch.long)
        state = torch.where(labels < 0, 2, labels.clamp(0, 1))
        return 3 * torch.arange(n, device=device) + state


def _per_sample(value: Tensor, batch: int, name: str, device: torch.device) -> Tensor:
    """A (B,) tensor from a (B,) or scalar value."""
    value = torch.as_tensor(value, device=device)
    if value.ndim == 0:
        return value.expand(batch)
    if tuple(value.shape) != (batch,):
        raise MRNetError(f"{name} must be a scalar or have shape ({batch},), got {tuple(value.shape)}")
    return value


__all__ = ["UNet", "ResBlock", "SelfAttention", "sinusoidal_embedding"]
