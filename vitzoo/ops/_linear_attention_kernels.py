"""The Triton kernels behind :mod:`vitzoo.ops.linear_attention_triton` and their registration as a torch op.

Imported only when the kernels are first used (it imports Triton). Every kernel takes a [B, heads, N, width] tensor
by its four strides, so views of a fused qkv projection run without a copy; program (bh, i) reads head bh % heads of
sample bh // heads. The states are contiguous fp32 [B·heads, D, Dv] and [B·heads, D].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .linear_attention_triton import _BLOCK_N, _block

# slices of the tokens summed by separate programs: enough programs for a batch of one with a few heads
_TARGET_PROGRAMS = 256


@triton.jit
def _tile(ptr, bh, heads, rows, row_count, cols, col_count, s_b, s_h, s_n, s_d):
    """Load a [rows, cols] tile of head bh of a [B, heads, N, width] tensor, zero outside, as fp32."""
    base = ptr + (bh // heads) * s_b + (bh % heads) * s_h
    mask = (rows[:, None] < row_count) & (cols[None, :] < col_count)
    return tl.load(base + rows[:, None] * s_n + cols[None, :] * s_d, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_tile(ptr, values, bh, heads, rows, row_count, cols, col_count, s_b, s_h, s_n, s_d):
    base = ptr + (bh // heads) * s_b + (bh % heads) * s_h
    mask = (rows[:, None] < row_count) & (cols[None, :] < col_count)
    tl.store(base + rows[:, None] * s_n + cols[None, :] * s_d, values.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _state_kernel(K, V, STATE, KSUM, heads, tokens, dim, dim_v, per_slice,
                  k_b, k_h, k_n, k_d, v_b, v_h, v_n, v_d,
                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                  PRECISION: tl.constexpr):
    """Partial Σ_j k_j v_jᵀ and Σ_j k_j over tokens [slice·per_slice, (slice + 1)·per_slice) of head bh."""
    bh = tl.program_id(0)
    part = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    state = tl.zeros([BLOCK_D, BLOCK_DV], dtype=tl.float32)
    key_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    start = part * per_slice
    end = tl.minimum(start + per_slice, tokens)
    for offset in range(start, end, BLOCK_N):
        n = offset + tl.arange(0, BLOCK_N)
        k = _tile(K, bh, heads, n, end, d, dim, k_b, k_h, k_n, k_d)
        v = _tile(V, bh, heads, n, end, e, dim_v, v_b, v_h, v_n, v_d)
        state += tl.dot(tl.trans(k), v, input_precision=PRECISION)
        key_sum += tl.sum(k, axis=0)
    slot = bh * tl.num_programs(1) + part
    tl.store(STATE + slot * BLOCK_D * BLOCK_DV + d[:, None] * BLOCK_DV + e[None, :], state)
    tl.store(KSUM + slot * BLOCK_D + d, key_sum)


@triton.jit
def _apply_kernel(Q, STATE, KMEAN, OUT, heads, queries, dim, dim_v, eps,
                  q_b, q_h, q_n, q_d, o_b, o_h, o_n, o_d,
                  NORMALIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                  PRECISION: tl.constexpr):
    """out_i = q_i S (/ (q_i · mean k + eps)) for one block of queries of head bh."""
    bh = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    q = _tile(Q, bh, heads, n, queries, d, dim, q_b, q_h, q_n, q_d)
    state = tl.load(STATE + bh * BLOCK_D * BLOCK_DV + d[:, None] * BLOCK_DV + e[None, :])
    out = tl.dot(q, state, input_precision=PRECISION)
    if NORMALIZE:
        key_mean = tl.load(KMEAN + bh * BLOCK_D + d)
        out = out / (tl.sum(q * key_mean[None, :], axis=1) + eps)[:, None]
    _store_tile(OUT, out, bh, heads, n, queries, e, dim_v, o_b, o_h, o_n, o_d)


@triton.jit
def _query_grad_kernel(Q, STATE, KMEAN, DOUT, DQ, DSTATE, DKMEAN, heads, queries, dim, dim_v, eps, per_slice,
                       q_b, q_h, q_n, q_d, g_b, g_h, g_n, g_d, dq_b, dq_h, dq_n, dq_d,
                       NORMALIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_DV: tl.constexpr,
                  PRECISION: tl.constexpr):
    """dq for one slice of queries, and that slice's partial dS = Σ_i q_iᵀ g_i and d(mean k) = Σ_i a_i q_i."""
    bh = tl.program_id(0)
    part = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    state = tl.load(STATE + bh * BLOCK_D * BLOCK_DV + d[:, None] * BLOCK_DV + e[None, :])
    key_mean = tl.load(KMEAN + bh * BLOCK_D + d)
    d_state = tl.zeros([BLOCK_D, BLOCK_DV], dtype=tl.float32)
    d_key_mean = tl.zeros([BLOCK_D], dtype=tl.float32)
    start = part * per_slice
    end = tl.minimum(start + per_slice, queries)
    for offset in range(start, end, BLOCK_N):
        n = offset + tl.arange(0, BLOCK_N)
        q = _tile(Q, bh, heads, n, end, d, dim, q_b, q_h, q_n, q_d)
        grad = _tile(DOUT, bh, heads, n, end, e, dim_v, g_b, g_h, g_n, g_d)
        if NORMALIZE:
            den = tl.sum(q * key_mean[None, :], axis=1) + eps
            out = tl.dot(q, state, input_precision=PRECISION) / den[:, None]
            through_den = -tl.sum(grad * out, axis=1) / den
            grad = grad / den[:, None]
            dq = tl.dot(grad, tl.trans(state), input_precision=PRECISION)
            dq += through_den[:, None] * key_mean[None, :]
            d_key_mean += tl.sum(through_den[:, None] * q, axis=0)
        else:
            dq = tl.dot(grad, tl.trans(state), input_precision=PRECISION)
        d_state += tl.dot(tl.trans(q), grad, input_precision=PRECISION)
        _store_tile(DQ, dq, bh, heads, n, end, d, dim, dq_b, dq_h, dq_n, dq_d)
    slot = bh * tl.num_programs(1) + part
    tl.store(DSTATE + slot * BLOCK_D * BLOCK_DV + d[:, None] * BLOCK_DV + e[None, :], d_state)
    tl.store(DKMEAN + slot * BLOCK_D + d, d_key_mean)


@triton.jit
def _key_value_grad_kernel(K, V, DSTATE, DKMEAN, DK, DV, heads, tokens, dim, dim_v,
                           k_b, k_h, k_n, k_d, v_b, v_h, v_n, v_d, dk_b, dk_h, dk_n, dk_d, dv_b, dv_h, dv_n, dv_d,
                           BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                  PRECISION: tl.constexpr):
    """dk_j = v_j dSᵀ + d(mean k) and dv_j = k_j dS for one block of keys; dS and d(mean k) arrive divided by N."""
    bh = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    d_state = tl.load(DSTATE + bh * BLOCK_D * BLOCK_DV + d[:, None] * BLOCK_DV + e[None, :])
    d_key_mean = tl.load(DKMEAN + bh * BLOCK_D + d)
    k = _tile(K, bh, heads, n, tokens, d, dim, k_b, k_h, k_n, k_d)
    v = _tile(V, bh, heads, n, tokens, e, dim_v, v_b, v_h, v_n, v_d)
    dk = tl.dot(v, tl.trans(d_state), input_precision=PRECISION) + d_key_mean[None, :]
    dv = tl.dot(k, d_state, input_precision=PRECISION)
    _store_tile(DK, dk, bh, heads, n, tokens, d, dim, dk_b, dk_h, dk_n, dk_d)
    _store_tile(DV, dv, bh, heads, n, tokens, e, dim_v, dv_b, dv_h, dv_n, dv_d)


def _slices(rows: int, heads_total: int) -> tuple[int, int]:
    """(number of slices, rows per slice, a multiple of the block) for a reduction over ``rows`` per head."""
    blocks = triton.cdiv(rows, _BLOCK_N)
    count = max(1, min(blocks, _TARGET_PROGRAMS // max(heads_total, 1)))
    per_slice = triton.cdiv(blocks, count) * _BLOCK_N
    return triton.cdiv(rows, per_slice), per_slice


def _precision(*tensors: torch.Tensor) -> str:
    """IEEE fp32 products for fp32 inputs (agreement with PyTorch to fp32 rounding); TF32 for fp16 / bf16 inputs, whose
    10 / 7 mantissa bits TF32 holds exactly (the fp32 state is rounded to TF32 in the output product, which is then
    rounded to the input's half precision anyway)."""
    return "ieee" if all(t.dtype == torch.float32 for t in tensors) else "tf32"


def register() -> None:
    """Register ``vitzoo::linear_attention_core`` (forward) and ``vitzoo::linear_attention_core_backward``."""

    @triton_op("vitzoo::linear_attention_core", mutates_args=())
    def core(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, normalize: bool,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(out in the value dtype, state S = KᵀV / N [B·heads, BD, BDV] fp32, mean k [B·heads, BD] fp32)."""
        batch, heads, tokens, dim = key.shape
        queries, dim_v = query.shape[2], value.shape[-1]
        block_d, block_dv = _block(dim), _block(dim_v)
        precision = _precision(query, key, value)
        count, per_slice = _slices(tokens, batch * heads)
        partial_state = query.new_empty(batch * heads * count, block_d, block_dv, dtype=torch.float32)
        partial_sum = query.new_empty(batch * heads * count, block_d, dtype=torch.float32)
        wrap_triton(_state_kernel)[(batch * heads, count)](
            key, value, partial_state, partial_sum, heads, tokens, dim, dim_v, per_slice, *key.stride(),
            *value.stride(), BLOCK_N=_BLOCK_N, BLOCK_D=block_d, BLOCK_DV=block_dv,
            PRECISION=precision)
        state = partial_state.view(batch * heads, count, block_d, block_dv).sum(1) / tokens
        key_mean = partial_sum.view(batch * heads, count, block_d).sum(1) / tokens
        out = value.new_empty(batch, heads, queries, dim_v)
        wrap_triton(_apply_kernel)[(batch * heads, triton.cdiv(queries, _BLOCK_N))](
            query, state, key_mean, out, heads, queries, dim, dim_v, eps, *query.stride(), *out.stride(),
            NORMALIZE=normalize, BLOCK_N=_BLOCK_N, BLOCK_D=block_d, BLOCK_DV=block_dv,
            PRECISION=precision)
        return out, state, key_mean

    @triton_op("vitzoo::linear_attention_core_backward", mutates_args=())
    def core_backward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, state: torch.Tensor,
                      key_mean: torch.Tensor, grad_out: torch.Tensor, normalize: bool,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dq, dk, dv) in the dtypes of query, key and value."""
        batch, heads, tokens, dim = key.shape
        queries, dim_v = query.shape[2], value.shape[-1]
        block_d, block_dv = state.shape[-2], state.shape[-1]
        precision = _precision(query, key, value)
        count, per_slice = _slices(queries, batch * heads)
        d_query = torch.empty_like(query)
        partial_state = query.new_empty(batch * heads * count, block_d, block_dv, dtype=torch.float32)
        partial_mean = query.new_empty(batch * heads * count, block_d, dtype=torch.float32)
        wrap_triton(_query_grad_kernel)[(batch * heads, count)](
            query, state, key_mean, grad_out, d_query, partial_state, partial_mean, heads, queries, dim, dim_v, eps,
            per_slice, *query.stride(), *grad_out.stride(), *d_query.stride(),
            NORMALIZE=normalize, BLOCK_N=_BLOCK_N, BLOCK_D=block_d, BLOCK_DV=block_dv,
            PRECISION=precision)
        d_state = partial_state.view(batch * heads, count, block_d, block_dv).sum(1) / tokens
        d_key_mean = partial_mean.view(batch * heads, count, block_d).sum(1) / tokens
        d_key, d_value = torch.empty_like(key), torch.empty_like(value)
        wrap_triton(_key_value_grad_kernel)[(batch * heads, triton.cdiv(tokens, _BLOCK_N))](
            key, value, d_state, d_key_mean, d_key, d_value, heads, tokens, dim, dim_v, *key.stride(),
            *value.stride(), *d_key.stride(), *d_value.stride(), BLOCK_N=_BLOCK_N, BLOCK_D=block_d,
            BLOCK_DV=block_dv, PRECISION=precision)
        return d_query, d_key, d_value

    def setup_context(ctx, inputs, output):
        query, key, value, normalize, eps = inputs
        _, state, key_mean = output
        ctx.save_for_backward(query, key, value, state, key_mean)
        ctx.mark_non_differentiable(state, key_mean)
        ctx.normalize, ctx.eps = normalize, eps

    def backward(ctx, grad_out, _grad_state, _grad_mean):
        query, key, value, state, key_mean = ctx.saved_tensors
        grads = core_backward(query, key, value, state, key_mean, grad_out, ctx.normalize, ctx.eps)
        return (*grads, None, None)

    core.register_autograd(backward, setup_context=setup_context)
