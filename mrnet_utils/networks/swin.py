"""The Swin-transformer bottleneck (Liu et al. 2021, "Swin Transformer"), built from MONAI's blocks.

Windowed multi-head self-attention over the bottleneck's feature map, alternating regular
and shifted windows, so that every position can reach every other in two blocks.
"""

from __future__ import annotations

from monai.networks.nets.swin_unetr import SwinTransformerBlock, compute_mask
from torch import Tensor, nn


class SwinBottleneck(nn.Module):
    """Swin-transformer blocks alternating regular and shifted windows (Liu et al. 2021), from MONAI."""

    def __init__(self, channels: int, side: int, heads: int, window: int, depth: int) -> None:
        super().__init__()
        window_size = (window, window)
        shift_size = (window // 2, window // 2)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=channels,
                num_heads=heads,
                window_size=window_size,
                shift_size=shift_size if i % 2 else (0, 0),
                # SDPA when autograd is off (sampling); the same numbers as MONAI's explicit path.
                use_flash_attention=True,
            )
            for i in range(depth)
        )
        # The mask that keeps shifted windows from attending across the wrapped-around border;
        # the bottleneck side is fixed, so it is built once. Not persistent: it is not a weight.
        self.register_buffer("attn_mask", compute_mask([side, side], window_size, shift_size, None), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        h = x.permute(0, 2, 3, 1)  # MONAI's blocks work channels-last: (B, H, W, C)
        for block in self.blocks:
            h = block(h, self.attn_mask)
        return h.permute(0, 3, 1, 2)


__all__ = ["SwinBottleneck"]
