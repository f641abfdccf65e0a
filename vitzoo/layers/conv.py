"""Convolutions the mixers and blocks share: depthwise convolutions on token maps (LePE on V, CPE before a
block, a DWC residual on V) and grouped 1×1 convolutions computed as batched matrix products."""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers import register_notrace_function
from torch import nn

from .shape import map_to_tokens, tokens_to_map

__all__ = ["DepthwiseConv2d", "GroupedPointwiseConv1d", "grouped_pointwise_conv1d"]


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


class GroupedPointwiseConv1d(nn.Conv1d):
    """A grouped 1×1 ``nn.Conv1d`` computed as one batched matrix product over the groups.

    Same parameters and keys as ``nn.Conv1d(in, out, 1, groups=groups)``, same function. On short sequences (InLine's
    kernel generator reads one mean token per sample) the convolution kernel's setup dominates: on this 2-core CPU a
    [1, 192, 1] input through two such convs (6 groups, 192 -> 192 -> 1,728) took about 125 µs per conv, the product
    a few µs.
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grouped_pointwise_conv1d(x, self.weight, self.bias, self.groups)


@register_notrace_function
@torch.fx.wrap
def grouped_pointwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             groups: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, groups=groups)`` for a 1×1 ``weight`` [O, I / G, 1], as ``G`` products
    [O / G, I / G] @ [I / G, B·L]. An FX leaf: it checks the input's shape."""
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    if x.dim() != 3 or x.shape[1] != in_per_group * groups:
        raise ValueError(f"expected [B, {in_per_group * groups}, L], got {list(x.shape)}")
    batch, _, length = x.shape
    inputs = x.view(batch, groups, in_per_group, length).permute(1, 2, 0, 3).reshape(groups, in_per_group, -1)
    out = weight.view(groups, out_channels // groups, in_per_group) @ inputs  # [G, O / G, B·L]
    out = out.view(out_channels, batch, length).transpose(0, 1)
    return out + bias.view(1, -1, 1) if bias is not None else out
