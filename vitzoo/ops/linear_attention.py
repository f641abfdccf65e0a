"""Non-causal kernelized linear attention: the core every linear mixer of the zoo shares.

Both functions take feature-mapped queries and keys (apply φ first, see :mod:`vitzoo.ops.feature_maps`)
of shape [B, heads, N, D] and values [B, heads, N, Dv], and compute, per head and query i,

    numerator_i   = (1/N) Σ_j (q_i · k_j) v_j
    denominator_i = q_i · mean_j(k_j) + eps
    out_i         = numerator_i / denominator_i        (normalize=True)
    out_i         = numerator_i                        (normalize=False)

Sums are taken as means (K scaled by 1/N) so that they do not grow with the token count; the paper
forms that divide by Σ_j q_i·k_j are the same expression with eps scaled by N. Families whose
normaliser differs (InLine's additive correction, L²ViT's clamp, MALA's magnitude term) take the
unnormalised numerator and build their own denominator. See ``ops/README.md`` for the derivation.
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_function

from ._backend import use_naive

__all__ = ["linear_attention", "linear_attention_naive"]


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            f"expected query, key, value of shape [B, heads, N, D], got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(value.shape)}"
        )
    if key.shape[:3] != value.shape[:3] or query.shape[:2] != key.shape[:2] or query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query {tuple(query.shape)}, key {tuple(key.shape)} and value {tuple(value.shape)} do not agree: "
            "key and value need the same [B, heads, N], query and key the same [B, heads, ., D]"
        )


def linear_attention_naive(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        normalize: bool = True,
        eps: float = 1e-6,
) -> torch.Tensor:
    """Reference: builds the explicit [N, N] score matrix in fp32. Shapes [B, heads, N, D]."""
    _check(query, key, value)
    dtype = value.dtype
    q, k, v = query.float(), key.float(), value.float()
    scores = q @ k.transpose(-2, -1) / k.shape[-2]  # [B, heads, Nq, Nk]
    out = scores @ v
    if normalize:
        out = out / (scores.sum(dim=-1, keepdim=True) + eps)
    return out.to(dtype)


def linear_attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        normalize: bool = True,
        eps: float = 1e-6,
) -> torch.Tensor:
    """Fast path: same contract as :func:`linear_attention_naive`, O(N·D·Dv) via the [D, Dv] KV state.

    The KV state and the normaliser are accumulated in fp32 with autocast off and the result is cast
    back to the input dtype (the habit of timm's ``LiteMLA`` and diffusers' Sana processor), because
    a sum over tens of thousands of tokens overflows fp16.
    """
    if use_naive():
        return linear_attention_naive(query, key, value, normalize=normalize, eps=eps)
    _check(query, key, value)
    return _linear_attention_fp32(query, key, value, normalize, eps)


@register_notrace_function
@torch.fx.wrap
def _linear_attention_fp32(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, normalize: bool,
                           eps: float) -> torch.Tensor:
    """The KV-state form with autocast off; an FX leaf because torch.fx cannot record the autocast region."""
    dtype = value.dtype
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        kv = k.transpose(-2, -1) @ v / k.shape[-2]  # [B, heads, D, Dv]
        out = q @ kv
        if normalize:
            out = out / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + eps)
    return out.to(dtype)
