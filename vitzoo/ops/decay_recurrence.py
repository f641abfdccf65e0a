"""Causal linear recurrence with a multiplicative per-head decay (RetNet-style retention, no normaliser).

It is the directional scan that multi-scan vision models run several times over an image, and the baseline
LightNet ("You Only Scan Once", Qin et al., arXiv:2405.21022) argues against: a decay recurrence only reaches
tokens before the current one, so an image needs forward and backward scans along rows and columns. The decay is
data-independent, one λ = exp(log_decay) per head, as in RetNet (Sun et al., arXiv:2307.08621, eq. 1-5).
Written for vitzoo from the equations.

Queries and keys are [B, heads, N, D], values [B, heads, N, E], ``log_decay`` is [heads] (log λ ≤ 0). Per head:

    S_t = λ S_{t-1} + k_tᵀ v_t          [D, E], S_0 = 0
    o_t = q_t S_t = Σ_{s≤t} λ^{t−s} (q_t·k_s) v_s

The chunked form splits the tokens into chunks of C. For token t at position i (0 ≤ i < C) of chunk j, with
S_in(j) the state carried out of chunk j − 1:

    o_t = λ^{i+1} q_t S_in(j) + Σ_{s in chunk j, s≤t} λ^{t−s} (q_t·k_s) v_s
    S_in(j+1) = λ^C S_in(j) + Σ_{s in chunk j} λ^{C−1−i_s} k_sᵀ v_s

The intra-chunk term is (q kᵀ ⊙ M) v with the decay mask M_ts = λ^{t−s} for s ≤ t (0 above the diagonal), so
memory is O(N·C) per head and the carried states are a loop over N/C chunks of [D, E] updates. Every decay power
has an exponent ≤ 0 for log λ ≤ 0 (the exponent of the masked entries is −inf, not a large positive number), so
nothing overflows. A positive ``log_decay`` is not rejected (a value check would be data-dependent and break
``torch.compile``); both forms then compute the same growing recurrence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ._backend import use_naive

__all__ = ["decay_recurrence", "decay_recurrence_naive"]

# Tokens per chunk of the parallel form: the intra-chunk scores are a [C, C] matrix per chunk and head.
CHUNK_SIZE = 64


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, log_decay: torch.Tensor) -> None:
    shapes = (f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}, "
              f"log_decay {tuple(log_decay.shape)}")
    if query.dim() != 4 or query.shape != key.shape or value.dim() != 4 or value.shape[:3] != key.shape[:3]:
        raise ValueError(f"expected query and key [B, heads, N, D] and value [B, heads, N, E], got {shapes}")
    if log_decay.shape != (query.shape[1],):
        raise ValueError(f"expected one log decay per head, log_decay [{query.shape[1]}], got {shapes}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half inputs, float64 kept (so a float64 re-computation can test the op at full precision)."""
    return torch.promote_types(dtype, torch.float32)


@register_notrace_function
@torch.fx.wrap
def _scan(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, log_decay: torch.Tensor) -> torch.Tensor:
    """The sequential scan, one token at a time; an FX leaf because it loops over the token count."""
    dtype = _compute_dtype(value.dtype)
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
        decay = torch.exp(log_decay.to(dtype))[None, :, None, None]  # λ per head [1, heads, 1, 1]
        state = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=dtype, device=k.device)
        outputs = []
        for t in range(k.shape[2]):
            state = decay * state + k[:, :, t, :, None] * v[:, :, t, None, :]  # S_t = λ S_{t-1} + k_tᵀ v_t
            outputs.append((q[:, :, t, None, :] @ state)[:, :, 0])  # o_t = q_t S_t
        return torch.stack(outputs, dim=2).to(value.dtype)


def decay_recurrence_naive(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        log_decay: torch.Tensor,
) -> torch.Tensor:
    """Reference: the explicit causal scan S_t = λ S_{t-1} + k_tᵀ v_t, o_t = q_t S_t, per head.

    Args:
        query: [B, heads, N, D].
        key: [B, heads, N, D].
        value: [B, heads, N, E].
        log_decay: log λ per head [heads], expected ≤ 0 (not checked, see the module docstring).

    Returns:
        [B, heads, N, E] in the dtype of ``value``; accumulated in float32 (float64 inputs stay float64).
    """
    _check(query, key, value, log_decay)
    return _scan(query, key, value, log_decay)


def decay_recurrence(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        log_decay: torch.Tensor,
        chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """Fast path: same contract as :func:`decay_recurrence_naive`, chunked (``chunk_size`` tokens per chunk).

    Any N works (the last chunk is padded with zero keys and values, which add nothing to any state).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tokens, got {chunk_size}")
    if use_naive():
        return decay_recurrence_naive(query, key, value, log_decay)
    _check(query, key, value, log_decay)
    return _chunked(query, key, value, log_decay, chunk_size)


@register_notrace_function
@torch.fx.wrap
def _chunked(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, log_decay: torch.Tensor,
             chunk: int) -> torch.Tensor:
    """The chunked form; an FX leaf because it pads and loops over chunks by size (see ops/README.md)."""
    dtype = _compute_dtype(value.dtype)
    (b, h, n, d), e = query.shape, value.shape[-1]
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
        a = log_decay.to(dtype)[:, None, None]  # [heads, 1, 1]
        pad = (-n) % chunk
        if pad:
            q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        c = (n + pad) // chunk
        q, k = (x.reshape(b, h, c, chunk, d) for x in (q, k))
        v = v.reshape(b, h, c, chunk, e)

        position = torch.arange(chunk, device=q.device, dtype=dtype)
        distance = position[:, None] - position[None, :]  # t - s
        # -inf above the diagonal before the exp: exp(log λ · (t - s)) there would be a large positive power.
        mask = torch.exp((a * distance).masked_fill(distance < 0, float("-inf")))  # [heads, C, C]
        intra = ((q @ k.transpose(-2, -1)) * mask[:, None]) @ v  # [B, heads, c, C, E]

        to_end = torch.exp(a[..., 0] * (chunk - 1 - position))  # λ^{C-1-i} [heads, C]
        update = (k * to_end[:, None, :, None]).transpose(-2, -1) @ v  # [B, heads, c, D, E]
        carry = torch.exp(a * chunk)  # λ^C [heads, 1, 1]
        states = [torch.zeros_like(update[:, :, 0])]
        for j in range(c - 1):
            states.append(carry * states[-1] + update[:, :, j])
        incoming = torch.stack(states, dim=2)  # S_in per chunk [B, heads, c, D, E]

        from_start = torch.exp(a[..., 0] * (position + 1))[:, None, :, None]  # λ^{i+1} [heads, 1, C, 1]
        out = intra + (q * from_start) @ incoming
        return out.reshape(b, h, c * chunk, e)[:, :, :n].to(value.dtype)
