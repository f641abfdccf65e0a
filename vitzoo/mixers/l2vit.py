"""L²ViT's enhanced linear global attention (Zheng, "The Linear Attention Resurrection in Vision
Transformer", arXiv:2501.16182).

Origin: https://github.com/ChuanyangZheng/L2ViT (MIT license); re-implemented, not copied.

With the ReLU kernel φ, a learnable per-head temperature τ and a constant denominator floor f,

    out_i = τ · Σ_j (φ(q_i)·φ(k_j)) v_j / max(φ(q_i)·Σ_j φ(k_j), f)          f = 100 in the paper

The floor is part of the model, not a numerical guard: wherever φ(q_i)·Σ_j φ(k_j) < f the output is
the unnormalised linear attention divided by f (in the released code that is most queries of the
late, small maps). τ scales the numerator only. The numerator comes from the shared mean-scaled op
(:func:`vitzoo.ops.linear_attention` with ``normalize=False``, which returns Σ_j(...)/N), so the
mixer divides it by max(φ(q_i)·mean_j φ(k_j), f/N): the same quotient, with every term kept at the
scale of a mean so that low-precision inputs stay in range. Cost: linear in tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from ..ops import linear_attention_terms
from ._base import TokenMixer, check_heads, register_mixer

__all__ = ["L2ViTMixer", "DENOMINATOR_FLOOR"]

# torch.clamp(min=1e2) on the sum-form denominator in the official LinearAttention
DENOMINATOR_FLOOR = 100.0


@register_notrace_function
@torch.fx.wrap
def _floored_quotient(numerator: torch.Tensor, mean_score: torch.Tensor, temperature: torch.Tensor,
                      floor: float, tokens: int) -> torch.Tensor:
    """τ · numerator / max(q_i·mean k, f / N) in fp32 with autocast off (an FX leaf: FX drops autocast regions)."""
    with torch.autocast(device_type=numerator.device.type, enabled=False):
        # max(q_i·Σk, f) / N == max(q_i·mean k, f / N): the floor in the op's mean scale
        return numerator * (temperature.float() / mean_score.clamp_min(floor / tokens))


@register_mixer("l2vit")
class L2ViTMixer(TokenMixer):
    """Enhanced linear attention of L²ViT's LGA blocks: global over all tokens, ReLU kernel, clamped
    sum-form denominator and a learnable per-head temperature on the numerator.

    Prefix tokens (a cls token) are ordinary tokens to this global mixer: they attend to, and are
    attended by, every token.

    Args:
        dim: token width C.
        num_heads: heads; C must divide evenly.
        denominator_floor: f, the lower clamp of φ(q_i)·Σ_j φ(k_j) (sum form, i.e. independent of the
            token count). 100 in every official model; must be positive.
        qkv_bias: bias of the qkv projection (True in L²ViT's LGA blocks).
        proj_drop: dropout after the output projection (0 in L²ViT).

    Parameters keep the official names: ``qkv``, ``proj`` and ``temperature`` [heads, 1, 1],
    initialised to head_dim^-0.5.
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            denominator_floor: float = DENOMINATOR_FLOOR,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        if not denominator_floor > 0:
            raise ValueError(f"denominator_floor must be positive (ReLU features can make φ(q)·Σφ(k) zero), "
                             f"got {denominator_floor}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.denominator_floor = float(denominator_floor)
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), self.head_dim ** -0.5))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = F.relu(q), F.relu(k)
        numerator, mean_score = linear_attention_terms(q, k, v)  # (1/N) Σ_j (q_i·k_j) v_j and q_i·mean k, fp32
        out = _floored_quotient(numerator, mean_score, self.temperature, self.denominator_floor, tokens)
        out = out.to(x.dtype).transpose(1, 2).reshape(batch, tokens, self.dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"denominator_floor={self.denominator_floor:g}, " + super().extra_repr()
