"""Triton kernels for the non-causal linear-attention core (:func:`vitzoo.ops.linear_attention`) on GPU.

The same contract as the PyTorch fast form: feature-mapped queries [B, heads, Nq, D], keys [B, heads, N, D], values
[B, heads, N, Dv] in any strides, the state and the normaliser accumulated in fp32 whatever the input dtype, the result
cast back to the value dtype. Two kernels compute the forward pass:

1. ``_state_kernel``: the [D, Dv] state Σ_j k_j v_jᵀ and the key sum Σ_j k_j. Each program sums one slice of the
   tokens of one head; the partial sums of the slices are added and divided by N afterwards, so that a batch of one
   image with a few heads still fills the GPU (a program per head would leave most of it idle).
2. ``_apply_kernel``: out_i = q_i S / (q_i · mean k + eps), one block of queries per program, with the division in
   the same pass (``normalize=False`` returns q_i S alone).

Backward, with g_i = dout_i / den_i and a_i = −(dout_i · out_i) / den_i (the gradient through the denominator):
dq_i = g_i Sᵀ + a_i mean k, dS = Σ_i q_iᵀ g_i, d(mean k) = Σ_i a_i q_i; then dk_j = (v_j dSᵀ + d(mean k)) / N and
dv_j = k_j dS / N. ``_query_grad_kernel`` recomputes out_i from q_i and the saved state (nothing of size N is saved
besides the inputs) and sums dS and d(mean k) per slice of queries; ``_key_value_grad_kernel`` maps them back to the
keys and values.

fp16 / bf16 inputs do not overflow: tiles are widened to fp32 on load, products are accumulated in fp32, the state
is kept in fp32, and only the results are cast back. fp32 inputs use IEEE fp32 products (``input_precision="ieee"``,
not TF32), so the kernels agree with the PyTorch form to fp32 rounding; half-precision inputs use TF32 products, which
hold their 10 / 7 mantissa bits exactly.

The op is a ``torch.library.triton_op`` (``vitzoo::linear_attention_core``) with its backward registered through
``register_autograd``: ``torch.compile`` traces into the kernels instead of breaking the graph around them. The
kernels run on a CPU with ``TRITON_INTERPRET=1`` (Triton's interpreter), which is how the tests check them against
the naive reference on machines without a GPU.
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["MAX_HEAD_DIM", "linear_attention_triton", "triton_available"]

MAX_HEAD_DIM = 128
"""Head widths (D and Dv) up to this run in the kernels: a program holds one [D, Dv] fp32 state in registers."""

_BLOCK_N = 64


_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether Triton is installed (it comes with CUDA builds of PyTorch; a CPU-only install may lack it). Looked up
    once at import, without importing it, so that the check costs nothing inside ``torch.compile``."""
    return _TRITON_INSTALLED


def _block(width: int) -> int:
    """The power-of-two block that holds ``width`` columns; ``tl.dot`` needs at least 16."""
    return max(16, 1 << (width - 1).bit_length())


def linear_attention_triton(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, normalize: bool = True,
                            eps: float = 1e-6) -> torch.Tensor:
    """:func:`vitzoo.ops.linear_attention` through the Triton kernels (differentiable; see the module docstring)."""
    if not triton_available():
        raise RuntimeError("linear_attention_triton needs Triton (pip install triton)")
    if max(query.shape[-1], value.shape[-1]) > MAX_HEAD_DIM:
        raise ValueError(f"the Triton kernels take head widths up to {MAX_HEAD_DIM}, got D={query.shape[-1]}, "
                         f"Dv={value.shape[-1]}")
    _register()
    out, _, _ = torch.ops.vitzoo.linear_attention_core(query, key, value, normalize, eps)
    return out


_REGISTERED = False


def _register() -> None:
    """Define the kernels and register the ops once (importing vitzoo alone never imports Triton on a machine without
    CUDA; with CUDA it registers at import, so that ``torch.compile`` never traces the registration)."""
    global _REGISTERED
    if not _REGISTERED:
        from . import _linear_attention_kernels

        _linear_attention_kernels.register()
        _REGISTERED = True


if torch.cuda.is_available() and triton_available():
    _register()
