"""LiT's simplified linear attention: few heads, a ReLU kernel, and a 5x5 depthwise convolution on V.

Paper: Wang et al., "LiT: Delving into a Simple Linear Diffusion Transformer for Image Generation",
ICCV 2025, arXiv:2501.12976. Origin: https://github.com/techmonsterwang/LiT (license not recorded;
the repository could not be obtained, see ``../shared/specs/lit.md`` §0). Re-implemented from the
structure reported for the official module (keys ``q``, ``kv``, ``proj``, ``dwc``) and the paper's
figure: ``out = proj(Norm(φ(Q)(φ(K)ᵀV)) + DWC(V))`` with φ(u) = ReLU(u) + 1e-6.
Cost: linear in tokens, O(N·C²/heads) for the attention state.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DepthwiseConv2d, merge_linears
from ..ops import linear_attention
from ._base import TokenMixer, check_heads, register_mixer

__all__ = ["LiTMixer"]


@register_mixer("lit")
class LiTMixer(TokenMixer):
    """LiT linear attention (the self-attention of every LiT block).

    Per head, with φ(u) = ReLU(u) + 1e-6 applied to q and k::

        o_i = φ(q_i)ᵀ mean_j(φ(k_j) v_jᵀ) / (φ(q_i)ᵀ mean_j φ(k_j) + eps) + DWC(V)_i

    which is the sum form ``q_i·Σ k_j v_j / (q_i·Σ k_j + N·eps)`` written with means (the form the
    reconstructed module computes, spec §2.2). The depthwise 5x5 convolution runs on V of each head
    reshaped to a [head_dim, H, W] map, so one kernel of shape [head_dim, 1, 5, 5] is shared by all
    heads, and is added before the output projection.

    Prefix tokens (a cls token) take part in the global linear attention as queries, keys and values;
    the convolution only sees the H·W map, so prefix tokens get no DWC term.

    Args:
        dim: token width C.
        num_heads: heads; LiT uses few (2 for S/2, 3 for B/2, 4 for L/2 and XL/2).
        qkv_bias: biases on ``q`` and ``kv`` (DiT builds its attention with ``qkv_bias=True``).
        kernel_size: side of the depthwise convolution on V.
        eps: added to the mean-form normaliser.
        proj_drop: dropout after the output projection.
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 2,
            *,
            qkv_bias: bool = True,
            kernel_size: int = 5,
            eps: float = 1e-6,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.eps = eps
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        # one Linear for k and v: channels [0, C) are k, [C, 2C) are v (official layout)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.dwc = DepthwiseConv2d(self.head_dim, kernel_size)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # set by fuse(): q and kv as one Linear
        self.qkv: Optional[nn.Linear] = None

    def fuse(self) -> "LiTMixer":
        """Inference (timm's ``fuse()`` convention): q and kv both read x, so they become one Linear."""
        if self.qkv is None:
            self.qkv = merge_linears(self.q, self.kv)
            self.q = self.kv = None
        return self

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, heads, N, head_dim]."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        if self.qkv is None:
            query = self.q(x)
            key, value = self.kv(x).chunk(2, dim=-1)
        else:
            query, key, value = self.qkv(x).chunk(3, dim=-1)
        # the kernel and its 1e-6 are applied before the head split, as in the reconstructed module
        query = self._heads(F.relu(query) + 1e-6)
        key = self._heads(F.relu(key) + 1e-6)
        value = self._heads(value)  # [B, heads, N, D]
        out = linear_attention(query, key, value, eps=self.eps)
        spatial = tokens - num_prefix_tokens
        local = self.dwc.tokens(value[:, :, num_prefix_tokens:].reshape(-1, spatial, self.head_dim), size)
        local = local.view(batch, self.num_heads, spatial, self.head_dim)
        if num_prefix_tokens:
            local = torch.cat([local.new_zeros(batch, self.num_heads, num_prefix_tokens, self.head_dim), local], dim=2)
        out = out + local
        out = out.transpose(1, 2).reshape(batch, tokens, self.dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, eps={self.eps}, " + super().extra_repr()
