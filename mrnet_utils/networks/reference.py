"""The reference study's network family (its public notebooks, 2024), rebuilt in this project's style.

The reference trained every stage with a plain U-Net (Ronneberger et al. 2015): ReLU double
convolutions, max-pooling, transposed-convolution upsampling, and the 128-d sinusoidal time
embedding tiled over the image and concatenated to the input as extra channels (not added
inside the blocks). Its notebooks hold two variants of it:
- `AttentionUNet` of the base 64x64 DDPM: SAGAN self-attention (Zhang et al. 2019) after every
  encoder stage and an attention gate (Oktay et al. 2018; the notebooks' `CrossAttentionBlock`)
  on every skip connection;
- `SuperResUNet` of both SR stages, and the single-stage 256x256 DDPM's `AttentionUNet`, which
  despite its name has neither: no self-attention, no gates.
Each has one Swin-transformer block (Liu et al. 2021; 8 heads, window 4, no shift) after the
bottleneck convolutions, or none in the notebooks' "NOSWIN" variants. SR stages get the
bilinearly upsampled low-res image as one more input channel (SR3, Saharia et al. 2021).

How `UNetConfig` selects them (cfg.family == "reference"):
- `resolution`, `channels` (one level each, a 2x max-pool after each), `bottleneck_channels`;
- `attention_resolutions`: () is the plain variant; every encoder side (base 64: (64, 32, 16))
  is the attention variant, with self-attention and gates; other choices did not exist and are
  refused;
- `use_swin`, `swin_heads`, `swin_window`, `swin_token_order` ("spatial" or "reference", see
  `ReferenceSwinBlock`); `swin_depth` must be 1;
- `time_embed_dim`: the number of tiled embedding channels (128 in the reference);
- `cond_channels`: 1 for SR stages, 0 otherwise;
- `num_res_blocks` must be 1 (one double convolution per level), `dropout` 0 and `num_labels` 0;
  `norm_groups` is unused (the family has no group normalisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import SwinTransformerBlock
from torch import Tensor, nn

from mrnet_utils.config import UNetConfig
from mrnet_utils.diffusion.conditioning import concat_condition
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.unet import IMAGE_CHANNELS

# The largest period of the reference's time embedding (its `max_len`).
TIME_EMBEDDING_MAX_PERIOD = 10000.0
# SAGAN's query and key are this many times narrower than the feature map.
SAGAN_QUERY_REDUCTION = 8


def reference_time_embedding(t: Tensor, dim: int) -> Tensor:
    """(B,) timesteps -> (B, dim): sines then cosines at frequencies 10000^(-k / (dim/2 - 1)), k < dim/2.

    The reference's formula; it differs from `networks.sinusoidal_embedding` (cosines first,
    exponent k / (dim/2)), so the lowest frequency here is exactly 1/10000.
    """
    half = dim // 2
    exponent = -math.log(TIME_EMBEDDING_MAX_PERIOD) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * exponent)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by ReLU: the block of the original U-Net (Ronneberger et al. 2015)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(),
        )


class SAGANSelfAttention(nn.Module):
    """Single-head self-attention over all pixels, scaled by a learnt gamma starting at 0 (SAGAN, Zhang et al. 2019)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels // SAGAN_QUERY_REDUCTION, 1)
        self.key = nn.Conv2d(channels, channels // SAGAN_QUERY_REDUCTION, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        # Zero: the block starts as the identity and lets the network learn how much attention to mix in.
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = (conv(x).flatten(2).transpose(1, 2) for conv in (self.query, self.key, self.value))
        # softmax(q k^T) v over the H*W pixels; SAGAN does not scale the logits by 1/sqrt(C/8).
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return x + self.gamma * out.transpose(1, 2).reshape(b, c, h, w)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip (Attention U-Net, Oktay et al. 2018): the reference's CrossAttentionBlock.

    The upsampled decoder features `gate` and the encoder features `skip` are projected to
    `inner_channels`, summed, and turned into one sigmoid weight per pixel that scales `skip`.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inner_channels: int) -> None:
        super().__init__()
        self.project_gate = nn.Sequential(nn.Conv2d(gate_channels, inner_channels, 1), nn.BatchNorm2d(inner_channels))
        self.project_skip = nn.Sequential(nn.Conv2d(skip_channels, inner_channels, 1), nn.BatchNorm2d(inner_channels))
        self.weight = nn.Sequential(nn.Conv2d(inner_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, gate: Tensor, skip: Tensor) -> Tensor:
        return skip * self.weight(F.relu(self.project_gate(gate) + self.project_skip(skip)))


class ReferenceSwinBlock(nn.Module):
    """One Swin-transformer block, regular windows, no shift (Liu et al. 2021; MONAI's block), in either token order.

    The weights (layer norms, windowed attention with a relative position bias, MLP of
    width 4C, qkv with bias) are MONAI's `SwinTransformerBlock`, parameter for parameter the
    reference's block. Only the order in which the (B, C, S, S) bottleneck map reaches them
    differs:
    - "spatial": tokens are pixels (C features each) and windows are w x w pixel windows of
      the map; the block is what Swin means.
    - "reference": the notebooks' order, reproduced exactly. They hand the map to the block
      with `view(B, S*S, C)`, without moving channels last, so "token" i is the i-th run of C
      consecutive numbers in channel-major memory: all S*S pixels of C/(S*S) channels when
      C >= S*S (C=512: 8 channels at 8x8, 2 at 16x16), else C pixels (C/S rows) of one channel
      (32x32: 16 of its 32 rows). Layer norms and the MLP act on these runs. The window
      partition, written for a (B, C, H, W) map, is given the normalised tokens as a
      (B, S, S, C) array, so it reads them as a map with S "channels" and an S x C "image", and
      cuts that into w x w "windows": the array viewed as (B, S, S/w, w, C/w, w) is permuted to
      (B, S/w, C/w, w, w, S) and read as S*S/w^2 windows of w^2 "tokens" of C numbers. After
      attention the windows are taken as w x w pixel windows of C channels and written back
      into a (B, C, S, S) map (channels first, which is the layout the residual adds to). The
      two permutations are not inverses: attention outputs land elsewhere than their inputs.
    Both orders cost the same: S*S/w^2 windows of w^2 tokens of width C.
    """

    def __init__(self, channels: int, heads: int, window: int, token_order: str) -> None:
        super().__init__()
        self.window = window
        self.token_order = token_order
        self.block = SwinTransformerBlock(
            dim=channels,
            num_heads=heads,
            window_size=(window, window),
            shift_size=(0, 0),
            qkv_bias=True,
            # SDPA when autograd is off (sampling); the same numbers as MONAI's explicit path.
            use_flash_attention=True,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.token_order == "spatial":
            return self.block(x.permute(0, 2, 3, 1), None).permute(0, 3, 1, 2)  # MONAI works channels-last
        return self._reference_order(x)

    def _reference_order(self, x: Tensor) -> Tensor:
        b, c, side, _ = x.shape
        w = self.window
        tokens = x.reshape(b, side * side, c)  # runs of C numbers of the channel-major map
        normed = self.block.norm1(tokens)
        # The (B, S, S, C) array read as a (B, C'=S, H'=S, W'=C) map and cut into w x w windows of it.
        windows = normed.reshape(b, side, side // w, w, c // w, w).permute(0, 2, 4, 3, 5, 1).reshape(-1, w * w, c)
        attended = self.block.attn(windows, None)
        # The windows written back as w x w pixel windows of a channel-major (B, C, S, S) map.
        merged = attended.reshape(b, side // w, side // w, w, w, c).permute(0, 5, 1, 3, 2, 4).reshape(b, side * side, c)
        tokens = tokens + merged
        tokens = tokens + self.block.forward_part2(tokens)  # MLP(LayerNorm) on the same runs
        return tokens.reshape(b, c, side, side)


class ReferenceUNet(nn.Module):
    """The reference study's denoising U-Nets, `AttentionUNet` and `SuperResUNet` of its notebooks (2024), as one class.

    Same call as `networks.UNet`: `forward(x, t, cond, aug_level, labels)` returns the (B, 1, H, W)
    noise prediction for the noisy image `x` (B, 1, H, W) at timesteps `t` (B,) (or a scalar);
    SR stages take the upsampled low-res image as `cond` (B, cfg.cond_channels, H, W). The input
    is [x, cond, tiled time embedding] on channels, in the reference's order.
    - `aug_level`: the reference has no conditioning augmentation and no input for its level.
      None or 0 is accepted (it is what the project's training and pipeline pass with
      augmentation disabled); a non-zero level raises MRNetError rather than being ignored.
      Numbers and CPU tensors are checked here; a tensor on an accelerator is not read back,
      which would stall every sampling step, so `StageConfig.validate` refuses family="reference"
      with conditioning augmentation enabled instead.
    - `labels`: the reference networks are unconditional; giving labels raises MRNetError.
    See the module docstring for which UNetConfig fields apply.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        check_reference_config(cfg)
        self.cfg = cfg
        attention = bool(cfg.attention_resolutions)
        widths = [IMAGE_CHANNELS + cfg.cond_channels + cfg.time_embed_dim, *cfg.channels]
        self.encoder = nn.ModuleList(DoubleConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.self_attention = nn.ModuleList(
            SAGANSelfAttention(width) if attention else nn.Identity() for width in cfg.channels
        )
        self.bottleneck = DoubleConv(cfg.channels[-1], cfg.bottleneck_channels)

        # Decoder level i: upsample the level below to channels[i], gate encoder level i, concatenate, convolve.
        below = [*cfg.channels[1:], cfg.bottleneck_channels]
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(below[i], width, 2, stride=2) for i, width in enumerate(cfg.channels)
        )
        self.gates = (
            nn.ModuleList(AttentionGate(width, width, width // 2) for width in cfg.channels) if attention else None
        )
        self.decoder = nn.ModuleList(DoubleConv(2 * width, width) for width in cfg.channels)
        self.output = nn.Conv2d(cfg.channels[0], IMAGE_CHANNELS, 1)

        # Built last (the reference builds it after the bottleneck) so that, from the same seed, the
        # Swin and no-Swin variants draw identical weights for everything they share.
        self.swin = (
            ReferenceSwinBlock(cfg.bottleneck_channels, cfg.swin_heads, cfg.swin_window, cfg.swin_token_order)
            if cfg.use_swin
            else nn.Identity()
        )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        aug_level: Tensor | float | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(x, aug_level, labels)
        h = torch.cat([concat_condition(x, cond, self.cfg.cond_channels, "ReferenceUNet"), self._tiled_time_embedding(t, x)], dim=1)

        skips = []
        for encode, attend in zip(self.encoder, self.self_attention):
            h = attend(encode(h))
            skips.append(h)
            h = F.max_pool2d(h, 2)

        h = self.swin(self.bottleneck(h))

        for i in reversed(range(len(self.decoder))):
            h = self.upsamples[i](h)
            skip = skips[i] if self.gates is None else self.gates[i](h, skips[i])
            h = self.decoder[i](torch.cat([h, skip], dim=1))
        return self.output(h)

    def _check_inputs(self, x: Tensor, aug_level: Tensor | float | None, labels: Tensor | None) -> None:
        side = self.cfg.resolution
        if x.ndim != 4 or x.shape[1] != IMAGE_CHANNELS or x.shape[2] != side or x.shape[3] != side:
            raise MRNetError(
                f"ReferenceUNet input has shape {tuple(x.shape)}; this network takes (B, {IMAGE_CHANNELS}, {side}, "
                f"{side}) (UNetConfig.resolution={side})"
            )
        if labels is not None:
            raise MRNetError(
                "labels were given to a reference-family network; the reference networks are unconditional "
                "(label conditioning needs family='project' and num_labels > 0)"
            )
        if aug_level is not None and _known_nonzero(aug_level):
            raise MRNetError(
                "a non-zero aug_level was given to a reference-family network; the reference has no "
                "conditioning augmentation and no input for its level: disable it (conditioning.enabled=False) "
                "or use family='project'"
            )

    def _tiled_time_embedding(self, t: Tensor, x: Tensor) -> Tensor:
        """The time embedding repeated over every pixel: time_embed_dim extra input channels."""
        batch = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise MRNetError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        emb = reference_time_embedding(t, self.cfg.time_embed_dim).to(x.dtype)
        return emb[:, :, None, None].expand(-1, -1, *x.shape[2:])


def _known_nonzero(level: Tensor | float) -> bool:
    """Whether a level is non-zero, for numbers and CPU tensors; False for tensors elsewhere (no host sync)."""
    if isinstance(level, Tensor):
        return level.device.type == "cpu" and bool((level != 0).any())
    return level != 0


def check_reference_config(cfg: UNetConfig) -> None:
    """Raise MRNetError naming the field when `cfg` asks for something the reference family does not have."""
    cfg.validate()
    if cfg.family != "reference":
        raise MRNetError(f"ReferenceUNet builds family='reference' configs, not family={cfg.family!r}")
    sides = [cfg.resolution // 2**i for i in range(len(cfg.channels))]
    if cfg.attention_resolutions and sorted(cfg.attention_resolutions) != sorted(sides):
        raise MRNetError(
            f"attention_resolutions={cfg.attention_resolutions}: the reference networks have self-attention after "
            f"every encoder stage (attention_resolutions={tuple(sides)}, with attention gates on the skips) or "
            "none (())"
        )
    if cfg.attention_resolutions and min(cfg.channels) < SAGAN_QUERY_REDUCTION:
        raise MRNetError(
            f"channels={cfg.channels}: self-attention needs every width >= {SAGAN_QUERY_REDUCTION} "
            f"(its query and key are {SAGAN_QUERY_REDUCTION}x narrower)"
        )
    if min(cfg.channels) < 2:
        raise MRNetError(f"channels={cfg.channels}: every width must be at least 2")
    if cfg.time_embed_dim % 2 or cfg.time_embed_dim < 4:
        raise MRNetError(
            f"time_embed_dim={cfg.time_embed_dim} must be even and at least 4 (sines and cosines at "
            "time_embed_dim/2 >= 2 frequencies)"
        )
    unsupported = {
        "num_res_blocks": (cfg.num_res_blocks, 1, "one double convolution per level"),
        "dropout": (cfg.dropout, 0.0, "no dropout"),
        "num_labels": (cfg.num_labels, 0, "no label conditioning"),
    }
    if cfg.use_swin:
        unsupported["swin_depth"] = (cfg.swin_depth, 1, "one Swin block, no shift")
    for name, (value, allowed, why) in unsupported.items():
        if value != allowed:
            raise MRNetError(f"{name}={value} is not available in family='reference' ({why}); use {name}={allowed}")
    if cfg.use_swin and cfg.swin_token_order == "reference" and cfg.bottleneck_channels % cfg.swin_window:
        raise MRNetError(
            f"swin_token_order='reference' cuts the bottleneck_channels={cfg.bottleneck_channels} axis into "
            f"windows of swin_window={cfg.swin_window}; choose widths divisible by the window"
        )


__all__ = [
    "ReferenceUNet",
    "ReferenceSwinBlock",
    "SAGANSelfAttention",
    "AttentionGate",
    "DoubleConv",
    "reference_time_embedding",
    "check_reference_config",
]
