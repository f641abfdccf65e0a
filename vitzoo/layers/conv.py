"""Depthwise convolutions on token maps: the local terms the mixers and blocks share
(LePE on V, CPE before a block, a DWC residual on V)."""

from __future__ import annotations

import torch
from torch import nn

from .shape import map_to_tokens, tokens_to_map

__all__ = ["DepthwiseConv2d"]


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``kernel_size``×``kernel_size`` convolution with "same" zero padding.

    It *is* an ``nn.Conv2d`` (parameters ``weight`` [C, 1, k, k] and ``bias`` [C]), so official keys
    such as ``attn.lepe.weight`` map one to one. ``forward`` takes NCHW maps; :meth:`tokens` takes
    spatial tokens [B, H·W, C] with their (H, W).
    """

    def __init__(self, dim: int, kernel_size: int = 3, *, bias: bool = True):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)

    def tokens(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[B, H·W, C] -> [B, H·W, C] through the convolution on the (H, W) map."""
        return map_to_tokens(self(tokens_to_map(x, size)))
