"""Kernelized linear attention (Katharopoulos et al., "Transformers are RNNs", arXiv:2006.16236).

softmax(QKᵀ) is replaced by φ(Q)φ(K)ᵀ with a feature map φ (elu+1, ReLU or identity), computed
in the order φ(Q)(φ(K)ᵀV) so the cost is linear in tokens. Non-causal.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops import get_feature_map, linear_attention
from ._base import TokenMixer, check_heads, register_mixer


@register_mixer("linear")
class LinearMixer(TokenMixer):
    """Multi-head linear attention with a choice of feature map.

    Args:
        dim: token width C.
        num_heads: heads; C must divide evenly.
        feature_map: ``"elu"`` (elu+1), ``"relu"`` or ``"identity"``.
        normalize: divide by φ(q)·mean φ(k) + eps. Defaults to True for the positive maps and False
            for ``"identity"``, whose normaliser can cross zero.
        eps: added to the normaliser (mean form, see ``vitzoo/ops/README.md``).
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            feature_map: str = "elu",
            normalize: Optional[bool] = None,
            eps: float = 1e-6,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.feature_map_name = feature_map
        self.feature_map = get_feature_map(feature_map)
        self.normalize = feature_map != "identity" if normalize is None else normalize
        self.eps = eps
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = linear_attention(self.feature_map(q), self.feature_map(k), v, normalize=self.normalize, eps=self.eps)
        out = out.transpose(1, 2).reshape(batch, tokens, self.dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"feature_map={self.feature_map_name}, normalize={self.normalize}, " + super().extra_repr()
