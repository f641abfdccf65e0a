"""Global multi-head softmax attention (Vaswani et al., 2017), the quadratic baseline of the zoo.

Parameter names (``qkv``, ``proj``) match timm's ``Attention``, so DeiT/ViT weights load into
``vzvit`` with this mixer. Cost: quadratic in tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops import softmax_attention
from ._base import TokenMixer, check_heads, register_mixer


@register_mixer("softmax")
class SoftmaxMixer(TokenMixer):
    """Softmax attention over all tokens (prefix tokens included), computed with SDPA."""

    complexity = "quadratic"

    def __init__(self, dim: int, num_heads: int = 8, *, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = softmax_attention(q, k, v)  # [B, heads, N, D]
        out = out.transpose(1, 2).reshape(batch, tokens, self.dim)
        return self.proj_drop(self.proj(out))
