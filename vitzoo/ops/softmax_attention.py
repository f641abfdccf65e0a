"""Multi-head softmax attention, the quadratic baseline every linear mixer is measured against."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ._backend import use_naive

__all__ = ["softmax_attention", "softmax_attention_naive"]


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    if query.dim() != 4 or key.shape[:3] != value.shape[:3] or query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"expected query [B, heads, Nq, D], key [B, heads, Nk, D], value [B, heads, Nk, Dv]; got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )


def softmax_attention_naive(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        bias: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
) -> torch.Tensor:
    """Reference: softmax(scale·QKᵀ + bias)·V with the explicit [Nq, Nk] matrix in fp32.

    Args:
        query: [B, heads, Nq, D]; key: [B, heads, Nk, D]; value: [B, heads, Nk, Dv].
        bias: additive scores broadcastable to [B, heads, Nq, Nk] (relative position bias, masks with -inf).
        scale: defaults to D ** -0.5.
    """
    _check(query, key, value)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = (query.float() * scale) @ key.float().transpose(-2, -1)
    if bias is not None:
        scores = scores + bias.float()
    return (scores.softmax(dim=-1) @ value.float()).to(value.dtype)


def softmax_attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        bias: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
) -> torch.Tensor:
    """Fast path: same contract as :func:`softmax_attention_naive`, through ``F.scaled_dot_product_attention``."""
    if use_naive():
        return softmax_attention_naive(query, key, value, bias=bias, scale=scale)
    _check(query, key, value)
    if bias is not None:
        bias = bias.to(query.dtype)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scale)
