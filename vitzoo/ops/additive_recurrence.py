"""LightNet's additive linear recurrence: one scan gives every token the global (order-independent) state.

Paper: "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet", Qin et al.,
arXiv:2405.21022. Origin of the exact op: the first author's library ``Doraemonzzz/xopes``
(``xopes/ops/additive/``, commit 1dfa3df; its license is not recorded in the golden notes); re-implemented from
the maths, not copied.

Queries, keys and gate logits are [B, heads, N, D], values [B, heads, N, E]. Per head, with key features as the
rows of the state:

    S_t = S_{t-1} + (exp(g_t) ⊙ k_t)ᵀ v_t          [D, E]
    Δ_t = Δ_{t-1} + exp(g_t)                         [D]
    o_t = q_t (S_t / Δ_t)                            (row i of S divided by Δ_t[i])

so S_t / Δ_t = Σ_{s≤t} softmax_{s≤t}(g)_s ⊙ k_s ⊗ v_s, a softmax over the prefix separately for each key channel.
With ``causal=False`` every token reads the final state, o = q (S_N / Δ_N) = q Σ_s softmax_N(g)_s ⊙ k_s ⊗ v_s,
which does not depend on the token order: one scan replaces the forward and backward scans of a directional
recurrence. LightNet's attention is the case k ≡ 1, g = key (:func:`lightnet_attention`).

Both forms shift g by a running maximum (the shift cancels between S and Δ), so gate logits of any size are safe.
See ``ops/README.md`` for the chunked parallel form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ._backend import use_naive

__all__ = [
    "additive_recurrence",
    "additive_recurrence_naive",
    "additive_recurrence_state",
    "additive_recurrence_state_naive",
    "lightnet_attention",
    "lightnet_attention_naive",
]

# Tokens per chunk of the parallel causal form: the intra-chunk weights are a [C, C, D] tensor per chunk.
# 8 was the fastest of 4/8/16/32 on CPU at B=2, heads=4, N=4096, D=32 (the exponentials dominate).
CHUNK_SIZE = 8


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gate: torch.Tensor) -> None:
    shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}, gate {tuple(gate.shape)}"
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4 or gate.dim() != 4:
        raise ValueError(f"expected query, key, gate of shape [B, heads, N, D] and value [B, heads, N, E], got {shapes}")
    if query.shape != key.shape or gate.shape != key.shape or value.shape[:3] != key.shape[:3]:
        raise ValueError(f"got {shapes}: query, key and gate need the same [B, heads, N, D] and value the same "
                         "[B, heads, N] with any E")


@register_notrace_function
@torch.fx.wrap
def _scan_naive(key: torch.Tensor, value: torch.Tensor,
                gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stable scan in fp32: every normalised state S_t/Δ_t [B, heads, N, D, E] and the final S, Δ, m.

    S and Δ are kept relative to the running maximum m_t of g (xopes' stable form): with λ_t = exp(m_{t-1} - m_t),
    S_t = λ_t S_{t-1} + (exp(g_t - m_t) k_t)ᵀ v_t and Δ_t = λ_t Δ_{t-1} + exp(g_t - m_t).
    """
    with torch.autocast(device_type=key.device.type, enabled=False):
        k, v, g = key.float(), value.float(), gate.float()
        states = []
        for t in range(k.shape[-2]):
            g_t = g[:, :, t]  # [B, heads, D]
            if t == 0:
                m = g_t
                weight = torch.exp(g_t - m)
                s = (weight * k[:, :, t])[..., None] * v[:, :, t, None, :]
                denom = weight
            else:
                m_new = torch.maximum(m, g_t)
                decay, weight = torch.exp(m - m_new), torch.exp(g_t - m_new)
                s = decay[..., None] * s + (weight * k[:, :, t])[..., None] * v[:, :, t, None, :]
                denom = decay * denom + weight
                m = m_new
            states.append(s / denom[..., None])  # [B, heads, D, E]
        return torch.stack(states, dim=2), s, denom[..., None], m[..., None]


def additive_recurrence_naive(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        gate: torch.Tensor,
        *,
        causal: bool = True,
) -> torch.Tensor:
    """Reference: the explicit sequential scan, one token at a time, in fp32.

    Args:
        query: [B, heads, N, D].
        key: [B, heads, N, D].
        value: [B, heads, N, E].
        gate: logits g [B, heads, N, D]; token s weighs exp(g_s) in key channel i's running softmax.
        causal: token t reads S_t/Δ_t; otherwise every token reads the final state S_N/Δ_N.

    Returns:
        [B, heads, N, E] in the dtype of ``value``.
    """
    _check(query, key, value, gate)
    states, _, _, _ = _scan_naive(key, value, gate)
    q = query.float()
    if causal:
        out = (q[..., None] * states).sum(dim=-2)  # o_t = q_t (S_t / Δ_t)
    else:
        out = q @ states[:, :, -1]
    return out.to(value.dtype)


def additive_recurrence(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        gate: torch.Tensor,
        *,
        causal: bool = True,
) -> torch.Tensor:
    """Fast path: same contract as :func:`additive_recurrence_naive`.

    Non-causal is one softmax of g over the tokens per key channel and one [D, E] state; causal is chunked
    (``CHUNK_SIZE`` tokens) with exact running-max shifts, so it stays finite for any g. Computed in fp32 with
    autocast off and cast back to the dtype of ``value``.
    """
    if use_naive():
        return additive_recurrence_naive(query, key, value, gate, causal=causal)
    _check(query, key, value, gate)
    if causal:
        return _causal_chunked(query, key, value, gate, CHUNK_SIZE)
    return _non_causal(query, key, value, gate)


@register_notrace_function
@torch.fx.wrap
def _non_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k, v, g = query.float(), key.float(), value.float(), gate.float()
        state = (torch.softmax(g, dim=-2) * k).transpose(-2, -1) @ v  # S_N / Δ_N [B, heads, D, E]
        return (q @ state).to(value.dtype)


@register_notrace_function
@torch.fx.wrap
def _causal_chunked(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gate: torch.Tensor,
                    chunk: int) -> torch.Tensor:
    """Chunked causal form; an FX leaf because it pads and loops over chunks by size (see ops/README.md)."""
    dtype, (b, h, n, d), e = value.dtype, query.shape, value.shape[-1]
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k, v, g = query.float(), key.float(), value.float(), gate.float()
        # The running maximum is only a shift that cancels, so it carries no gradient.
        m = torch.cummax(g.detach(), dim=-2).values
        pad = (-n) % chunk
        if pad:
            # Padding sits after every real token: it changes only the padded outputs, which are cut off.
            q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
            g = F.pad(g, (0, 0, 0, pad), value=float("-inf"))
            m = torch.cat([m, m[:, :, -1:].expand(b, h, pad, d)], dim=-2)
        c = (n + pad) // chunk
        q, k, g, m = (x.reshape(b, h, c, chunk, d) for x in (q, k, g, m))
        v = v.reshape(b, h, c, chunk, e)

        # Intra-chunk weights exp(g_s - m_t) for s <= t, all <= 1.
        causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()[..., None]
        log_w = (g[:, :, :, None, :, :] - m[:, :, :, :, None, :]).masked_fill(~causal, float("-inf"))
        w = torch.exp(log_w)  # [B, heads, C, t, s, D]

        # State at each chunk end relative to that end's maximum, then carried chunk to chunk (a short loop).
        m_end = m[:, :, :, -1]  # [B, heads, C, D]
        z = (w[:, :, :, -1] * k).transpose(-2, -1) @ v  # [B, heads, C, D, E]
        z_denom = w[:, :, :, -1].sum(dim=-2)  # [B, heads, C, D]
        s_in, denom_in = [torch.zeros_like(z[:, :, 0])], [torch.zeros_like(z_denom[:, :, 0])]
        for i in range(c - 1):
            decay = torch.exp(m_end[:, :, i - 1] - m_end[:, :, i]) if i else torch.zeros_like(m_end[:, :, 0])
            s_in.append(decay[..., None] * s_in[-1] + z[:, :, i])
            denom_in.append(decay * denom_in[-1] + z_denom[:, :, i])
        s_in, denom_in = torch.stack(s_in, dim=2), torch.stack(denom_in, dim=2)
        # Reference maximum of each chunk's incoming state; the first chunk has none (its state is zero).
        m_in = torch.cat([m[:, :, :1, 0], m_end[:, :, :-1]], dim=2)

        decay = torch.exp(m_in[:, :, :, None] - m)  # [B, heads, C, t, D], <= 1
        denom = decay * denom_in[:, :, :, None] + w.sum(dim=-2)  # Δ_t relative to m_t, >= 1
        q = q / denom
        scores = torch.einsum("bhcti,bhcsi,bhctsi->bhcts", q, k, w)
        out = (q * decay) @ s_in + scores @ v  # [B, heads, C, t, E]
        return out.reshape(b, h, c * chunk, e)[:, :, :n].to(dtype)


def additive_recurrence_state_naive(
        key: torch.Tensor,
        value: torch.Tensor,
        gate: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: the final state of the scan, ``(S [B, heads, D, E], Δ [B, heads, D, 1], m [B, heads, D, 1])``.

    S and Δ are relative to m = max_t g_t (xopes' stable scan state); S / Δ is the state every token reads when
    ``causal=False``, and it is the same for any token order. Float32.
    """
    _check(key, key, value, gate)
    _, s, denom, m = _scan_naive(key, value, gate)
    return s, denom, m


def additive_recurrence_state(
        key: torch.Tensor,
        value: torch.Tensor,
        gate: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast path: same contract as :func:`additive_recurrence_state_naive`, without a scan."""
    if use_naive():
        return additive_recurrence_state_naive(key, value, gate)
    _check(key, key, value, gate)
    return _final_state(key, value, gate)


@register_notrace_function
@torch.fx.wrap
def _final_state(key: torch.Tensor, value: torch.Tensor,
                 gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.autocast(device_type=key.device.type, enabled=False):
        k, v, g = key.float(), value.float(), gate.float()
        m = g.amax(dim=-2, keepdim=True)  # [B, heads, 1, D]
        weight = torch.exp(g - m)
        s = (weight * k).transpose(-2, -1) @ v
        return s, weight.sum(dim=-2)[..., None], m.transpose(-2, -1)


def lightnet_attention_naive(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        causal: bool = True,
) -> torch.Tensor:
    """Reference: LightNet attention, o_t = q_t Σ_{s≤t} softmax_{s≤t}(key)_sᵀ v_s (all tokens when not causal).

    The additive recurrence with k ≡ 1 and g = key (how the first author's ``LightNetAttention`` calls it); the key
    softmax runs over tokens, per key channel. The causal xmixers mixer additionally prepends a virtual token with
    key 0 and value 0 (its ``1 +`` in the log-sum-exp); that belongs to the mixer, not to this op.
    """
    return additive_recurrence_naive(query, torch.ones_like(key), value, key, causal=causal)


def lightnet_attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        causal: bool = True,
) -> torch.Tensor:
    """Fast path: same contract as :func:`lightnet_attention_naive`."""
    return additive_recurrence(query, torch.ones_like(key), value, key, causal=causal)
