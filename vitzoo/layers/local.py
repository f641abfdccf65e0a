"""Local convolutional terms on token maps: conditional position encoding (CPE) and L²ViT's local
concentration module (LCM).

CPE: Chu et al., "Conditional Positional Encodings for Vision Transformers", arXiv:2102.10882.
LCM: Zheng, "The Linear Attention Resurrection in Vision Transformer", arXiv:2501.16182, origin
https://github.com/ChuanyangZheng/L2ViT (MIT license); re-implemented, not copied. Both keep the
official parameter names (``proj``; ``conv1``, ``bn``, ``conv2``), so official keys map one to one.
"""

from __future__ import annotations

from typing import Callable

import torch
from timm.layers import register_notrace_function
from torch import nn

from .conv import DepthwiseConv2d
from .shape import map_to_tokens, tokens_to_map

__all__ = ["ConvPosEnc", "LocalConcentration"]


def _to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    _check_spatial_tokens(x, size)
    return tokens_to_map(x, size)


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_spatial_tokens(x: torch.Tensor, size: tuple[int, int]) -> None:
    """``ValueError`` unless x is [B, H·W, C]; an FX leaf, so it also runs inside traced graphs."""
    height, width = size
    if x.dim() != 3 or x.shape[1] != height * width:
        raise ValueError(f"expected spatial tokens [B, {height}*{width}, C], got {tuple(x.shape)}")


class ConvPosEnc(nn.Module):
    """Conditional position encoding: ``x + DWConv(x)`` on the token map (no activation).

    Args:
        dim: channels C.
        kernel_size: side of the depthwise kernel (odd, "same" zero padding).

    ``forward(x [B, H·W, C], size (H, W)) -> [B, H·W, C]``.
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = DepthwiseConv2d(dim, kernel_size)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x + map_to_tokens(self.proj(_to_map(x, size)))


class LocalConcentration(nn.Module):
    """L²ViT's local concentration module: DWConv k×k -> GELU -> BatchNorm -> DWConv k×k on the token map.

    It follows the enhanced linear attention in every LGA block (``x + LCM(norm3(x))``) and restores
    the local detail that a global linear attention spreads out. BatchNorm sits after the activation,
    as in the official code.

    Args:
        dim: channels C.
        kernel_size: side of both depthwise kernels (7 in every L²ViT variant).
        act_layer: activation between the convolutions.

    ``forward(x [B, H·W, C], size (H, W)) -> [B, H·W, C]`` (the branch only, without the residual).
    """

    def __init__(self, dim: int, kernel_size: int = 7, act_layer: Callable[[], nn.Module] = nn.GELU):
        super().__init__()
        self.conv1 = DepthwiseConv2d(dim, kernel_size)
        self.act = act_layer()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = DepthwiseConv2d(dim, kernel_size)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return map_to_tokens(self.conv2(self.bn(self.act(self.conv1(_to_map(x, size))))))
