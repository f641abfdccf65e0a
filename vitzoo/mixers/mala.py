"""Magnitude-aware linear attention (MALA), the linear mixer of MAViT.

Paper: Qihang Fan, Huaibo Huang, Yuang Ai, Ran He, "Rectifying Magnitude Neglect in Linear
Attention", ICCV 2025, arXiv:2507.00698. Origin: https://github.com/qhfan/MALA (no license file;
re-implemented from the reference notes, not copied).

The official code is RAVLT's with one attention class swapped, so MALA reuses RALA's skeleton
(:class:`~vitzoo.mixers.rala.GatedRopeAttention`: ``qkvo`` projection, LePE on V, 2-D RoPE, output
gate, ``proj``) and replaces only the core. Ordinary linear attention divides by φ(q_i)·Σφ(k), which
cancels the query's magnitude; MALA normalises additively instead, so the magnitude of φ(q_i) scales
the attention scores.
"""

from __future__ import annotations

import torch

from ..ops import get_feature_map, linear_attention
from ._base import register_mixer
from .rala import GatedRopeAttention

__all__ = ["MalaMixer"]


@register_mixer("mala")
class MalaMixer(GatedRopeAttention):
    """Magnitude-aware linear attention (MALA), Fan et al., ICCV 2025, arXiv:2507.00698. Linear in tokens.

    Per head and query i, with φ = elu + 1, R_t the RoPE rotation of token t, s = d^-½,
    k̄ = mean_j φ(k_j), v̄ = mean_j v_j and the unrotated magnitude term z_i = s · φ(q_i)·k̄:

        y_i = (1 + 1/(z_i + eps)) · (s/N) Σ_j (R_i φ(q_i))·(R_j φ(k_j)) v_j − z_i · v̄

    Without RoPE the weights on v_j sum to one; the paper's β = 1 + 1/z and γ = z·v̄, with the
    official code's s and 1/N factors (the paper's symbols omit them; the weights follow the code).

    Args:
        dim, num_heads, lepe_kernel, rope_base, qkv_bias, proj_drop: see
            :class:`~vitzoo.mixers.rala.GatedRopeAttention`.
        feature_map: kernel φ by name (``"elu"`` = elu + 1, the official choice).
        eps: added to z inside the reciprocal only (the subtracted term uses z itself), as officially.
    """

    complexity = "linear"

    def __init__(self, dim: int, num_heads: int = 8, *, feature_map: str = "elu", eps: float = 1e-6, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self.feature_map_name = feature_map
        self.feature_map = get_feature_map(feature_map)
        self.eps = eps

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotate) -> torch.Tensor:
        q, k = self.feature_map(q), self.feature_map(k)
        z = q @ k.mean(dim=2, keepdim=True).transpose(-2, -1) * self.scale  # [B, heads, N, 1], no RoPE
        numerator = linear_attention(rotate(q), rotate(k), v, normalize=False) * self.scale
        return numerator * (1 + 1 / (z + self.eps)) - z * v.mean(dim=2, keepdim=True)

    def extra_repr(self) -> str:
        return f"feature_map={self.feature_map_name}, " + super().extra_repr()
