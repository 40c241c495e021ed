"""The networks: the project's UNet with its Swin-transformer bottleneck, and the reference study's family.

`build_network(cfg)` is the one place that picks a family (`UNetConfig.family`), as DiT keeps
its variants in one registry of named constructors.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mrnet_utils.config import UNetConfig
from mrnet_utils.networks.reference import ReferenceUNet
from mrnet_utils.networks.unet import UNet

FAMILIES = {"project": UNet, "reference": ReferenceUNet}


def build_network(cfg: UNetConfig) -> nn.Module:
    """The network `cfg` describes: the project's `UNet` or the reference study's `ReferenceUNet`."""
    return FAMILIES[cfg.family](cfg)


def forward_flops(cfg: UNetConfig) -> int:
    """Floating-point operations of one forward pass of one image (matrix products and convolutions, as
    torch's FlopCounterMode counts them), on the meta device: no weights are allocated."""
    with torch.device("meta"):
        model = build_network(cfg)
        x, t = torch.zeros(1, 1, cfg.resolution, cfg.resolution), torch.zeros(1, dtype=torch.long)
        extra = {"cond": torch.zeros(1, cfg.cond_channels, cfg.resolution, cfg.resolution),
                 "aug_level": torch.zeros(1)} if cfg.cond_channels else {}
    with FlopCounterMode(display=False) as counter:
        model(x, t, **extra)
    return counter.get_total_flops()
