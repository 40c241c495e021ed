"""The networks: the project's UNet with its Swin-transformer bottleneck, and the reference study's family.

`build_network(cfg)` is the one place that picks a family (`UNetConfig.family`), as DiT keeps
its variants in one registry of named constructors.
"""

from __future__ import annotations

from torch import nn

from mrnet_utils.config import UNetConfig
from mrnet_utils.networks.reference import ReferenceUNet
from mrnet_utils.networks.unet import UNet

FAMILIES = {"project": UNet, "reference": ReferenceUNet}


def build_network(cfg: UNetConfig) -> nn.Module:
    """The network `cfg` describes: the project's `UNet` or the reference study's `ReferenceUNet`."""
    return FAMILIES[cfg.family](cfg)
