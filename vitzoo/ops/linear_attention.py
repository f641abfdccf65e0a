"""Non-causal kernelized linear attention: the core every linear mixer of the zoo shares.

All functions take feature-mapped queries and keys (apply φ first, see :mod:`vitzoo.ops.feature_maps`)
of shape [B, heads, N, D] and values [B, heads, N, Dv], and compute, per head and query i,

    numerator_i   = (1/N) Σ_j (q_i · k_j) v_j
    denominator_i = q_i · mean_j(k_j) + eps
    out_i         = numerator_i / denominator_i        (normalize=True)
    out_i         = numerator_i                        (normalize=False)

Sums are taken as means (K scaled by 1/N) so that they do not grow with the token count; the paper
forms that divide by Σ_j q_i·k_j are the same expression with eps scaled by N. The family variations
built on the same state: :func:`linear_attention_terms` returns the numerator and q_i · mean k from one
product (L²ViT's clamped normaliser), :func:`injective_linear_attention` is InLine's additive correction.
See ``ops/README.md`` for the derivations of the fast forms.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ._backend import use_naive, use_triton
from .linear_attention_triton import MAX_HEAD_DIM, linear_attention_triton, triton_available

__all__ = [
    "CHUNK_TOKENS",
    "injective_linear_attention",
    "injective_linear_attention_naive",
    "linear_attention",
    "linear_attention_naive",
    "linear_attention_terms",
    "linear_attention_terms_naive",
]

CHUNK_TOKENS = 16384
"""Above this many tokens the fast forms stream half-precision keys and queries in chunks of this size, so that
their fp32 working copies are chunk-sized instead of sequence-sized (fp32 inputs need no copy and run in one pass)."""


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

    With ``normalize=True`` the normaliser is folded into the state: [KV/N | mean kᵀ] is one [D, Dv + 1] matrix,
    so one product of the queries with it gives the numerator and the denominator together. The state is accumulated
    in fp32 with autocast off and the result cast back to the input dtype (the habit of timm's ``LiteMLA`` and
    diffusers' Sana processor), because a sum over tens of thousands of tokens overflows fp16; sequences longer than
    :data:`CHUNK_TOKENS` are streamed in chunks. On CUDA the same computation runs in Triton kernels
    (:mod:`vitzoo.ops.linear_attention_triton`).
    """
    if use_naive():
        return linear_attention_naive(query, key, value, normalize=normalize, eps=eps)
    _check(query, key, value)
    return _linear_attention_fast(query, key, value, normalize, eps)


@register_notrace_function
@torch.fx.wrap
def _linear_attention_fast(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, normalize: bool,
                           eps: float) -> torch.Tensor:
    """The Triton kernels for CUDA tensors of head width up to :data:`MAX_HEAD_DIM` (backend ``"auto"``), else the
    PyTorch form. An FX leaf: it branches on the device."""
    if use_triton(query) and max(query.shape[-1], value.shape[-1]) <= MAX_HEAD_DIM and triton_available():
        return linear_attention_triton(query, key, value, normalize=normalize, eps=eps)
    kv, key_mean, _ = _kv_state(key, value, False)
    if not normalize:
        return _apply_state(query, kv, value.dtype)
    return _normalized_fp32(query, torch.cat([kv, key_mean.transpose(-2, -1)], dim=-1), value.dtype, eps)


def linear_attention_terms_naive(query: torch.Tensor, key: torch.Tensor,
                                 value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`linear_attention_terms`: the score matrix in fp32, returned in fp32."""
    _check(query, key, value)
    q, k, v = query.float(), key.float(), value.float()
    scores = q @ k.transpose(-2, -1) / k.shape[-2]
    return scores @ v, scores.sum(dim=-1, keepdim=True)


def linear_attention_terms(query: torch.Tensor, key: torch.Tensor,
                           value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator [B, heads, Nq, Dv], q_i · mean_j k_j [B, heads, Nq, 1]), both in fp32, from one state product.

    For the families that build their own normaliser from q · mean k (L²ViT clamps it from below).
    """
    if use_naive():
        return linear_attention_terms_naive(query, key, value)
    _check(query, key, value)
    kv, key_mean, _ = _kv_state(key, value, False)
    out = _apply_state(query, torch.cat([kv, key_mean.transpose(-2, -1)], dim=-1), torch.float32)
    return out[..., :-1], out[..., -1:]


def injective_linear_attention_naive(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                                     scale: float = 1.0) -> torch.Tensor:
    """Reference for :func:`injective_linear_attention`: the score matrix and the correction term, in fp32."""
    numerator, mean_score = linear_attention_terms_naive(query.float() * scale, key, value)
    out = numerator + (1 - mean_score) * value.float().mean(dim=-2, keepdim=True)
    return out.to(value.dtype)


def injective_linear_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                               scale: float = 1.0) -> torch.Tensor:
    """InLine's global term (Eq. 5 of arXiv:2412.04431) for the queries times ``scale``:
    ``(1/N) Σ_j (s q_i·k_j) v_j + (1 − s q_i·mean k) mean v``.

    Fast form: the correction is rank one in the state, ``out_i = q_i (KV/N − mean k mean vᵀ) + mean v``, so the
    whole term is one product with a corrected [D, Dv] state plus a broadcast add (``baddbmm``), instead of the
    numerator, a second product for q_i·mean k and an [N, Dv] multiply-add. fp32 accumulation and chunking as in
    :func:`linear_attention`.

    Args:
        query: [B, heads, Nq, D]; the attention scale s goes into the [D, Dv] state, not over the queries.
        key: [B, heads, N, D]; value: [B, heads, N, Dv].
        scale: s.

    Returns:
        [B, heads, Nq, Dv] in the value dtype.
    """
    if use_naive():
        return injective_linear_attention_naive(query, key, value, scale=scale)
    _check(query, key, value)
    kv, key_mean, value_mean = _kv_state(key, value, True)
    corrected = (kv - key_mean.transpose(-2, -1) * value_mean) * scale  # s (KV/N − mean k mean vᵀ): [B, h, D, Dv]
    return _apply_state(query, corrected, value.dtype, bias=value_mean)


@register_notrace_function
@torch.fx.wrap
def _normalized_fp32(query: torch.Tensor, state: torch.Tensor, dtype: torch.dtype, eps: float) -> torch.Tensor:
    """numerator / (q·mean k + eps) from one product with the state [KV/N | mean kᵀ]; an FX leaf (autocast)."""
    out = _apply_state(query, state, torch.float32)
    with torch.autocast(device_type=query.device.type, enabled=False):
        return (out[..., :-1] / (out[..., -1:] + eps)).to(dtype)


@register_notrace_function
@torch.fx.wrap
def _kv_state(key: torch.Tensor, value: torch.Tensor,
              with_value_mean: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(KV/N [B, heads, D, Dv], mean k [B, heads, 1, D], mean v [B, heads, 1, Dv] or an empty tensor) in fp32.

    Accumulated with autocast off over chunks of :data:`CHUNK_TOKENS` tokens, so the fp32 copies of keys and values
    are chunk-sized. An FX leaf: it loops over the token count.
    """
    tokens = key.shape[-2]
    chunk = tokens if key.dtype == value.dtype == torch.float32 else CHUNK_TOKENS
    with torch.autocast(device_type=key.device.type, enabled=False):
        kv = key_sum = value_sum = None
        for start in range(0, tokens, chunk):
            k = key[..., start:start + chunk, :].float()
            v = value[..., start:start + chunk, :].float()
            parts = (k.transpose(-2, -1) @ v, k.sum(dim=-2, keepdim=True),
                     v.sum(dim=-2, keepdim=True) if with_value_mean else v.new_empty(0))
            kv, key_sum, value_sum = parts if kv is None else (kv + parts[0], key_sum + parts[1], value_sum + parts[2])
        return kv / tokens, key_sum / tokens, value_sum / tokens


@register_notrace_function
@torch.fx.wrap
def _apply_state(query: torch.Tensor, state: torch.Tensor, dtype: torch.dtype,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``query @ state (+ bias)`` in fp32 with autocast off, cast to ``dtype``, streamed over chunks of queries."""
    tokens = query.shape[-2]
    with torch.autocast(device_type=query.device.type, enabled=False):
        if tokens <= CHUNK_TOKENS or query.dtype == torch.float32:
            q = query.float()
            out = q @ state if bias is None else torch.baddbmm(bias.flatten(0, -3), q.flatten(0, -3),
                                                                 state.flatten(0, -3)).view(*q.shape[:-1], -1)
            return out.to(dtype)
        out = query.new_empty(*query.shape[:-1], state.shape[-1], dtype=dtype)
        for start in range(0, tokens, CHUNK_TOKENS):
            q = query[..., start:start + CHUNK_TOKENS, :].float()
            part = q @ state if bias is None else q @ state + bias
            out[..., start:start + CHUNK_TOKENS, :] = part
        return out
