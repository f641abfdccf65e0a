"""2-D RoPE (vitzoo.ops.rope_2d): fast vs naive, the official tables, and the relative-position property."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import error_ratio, golden_case
from vitzoo import ops

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
SHAPES = [
    pytest.param((2, 3, (17, 23), 16), id="B2-h3-17x23-D16"),
    pytest.param((1, 2, (6, 10), 64), id="B1-h2-6x10-D64"),
    pytest.param((1, 1, (1, 7), 4), id="B1-h1-1x7-D4"),
    pytest.param((2, 1, (5, 3), 12), id="B2-h1-5x3-D12"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rope_2d_matches_naive(shape, dtype):
    batch, heads, size, dim = shape
    x = torch.randn(batch, heads, size[0] * size[1], dim, dtype=dtype)
    fast_in, naive_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, naive = ops.rope_2d(fast_in, size), ops.rope_2d_naive(naive_in, size)
    assert fast.dtype == dtype and fast.shape == x.shape
    grad = torch.randn_like(fast)
    fast.backward(grad)
    naive.backward(grad)
    if dtype == torch.float32:
        torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast_in.grad, naive_in.grad, atol=1e-5, rtol=1e-5)
    else:
        assert error_ratio(fast, naive) < 1e-2 and error_ratio(fast_in.grad, naive_in.grad) < 1e-2


def test_rope_2d_naive_is_the_formula():
    """Token (r, c), pair t of the row half turns by r·f_t, pair t of the column half by c·f_t."""
    size, dim = (3, 4), 8
    x = torch.randn(1, 12, dim)
    out = ops.rope_2d_naive(x, size, base=100.0)
    freqs = [1.0 / 100.0 ** (t / (dim // 4 - 1)) for t in range(dim // 4)]
    for n in range(12):
        row, col = divmod(n, size[1])
        for pair in range(dim // 2):
            angle = (row if pair < dim // 4 else col) * freqs[pair % (dim // 4)]
            a, b = x[0, n, 2 * pair].item(), x[0, n, 2 * pair + 1].item()
            expected = (a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle))
            torch.testing.assert_close(out[0, n, 2 * pair:2 * pair + 2], torch.tensor(expected))


def test_rope_2d_scores_depend_only_on_offsets():
    """(R_a q)·(R_b k) is unchanged when both tokens move by the same (Δrow, Δcol)."""
    size, dim = (6, 7), 16
    q, k = torch.randn(dim), torch.randn(dim)

    def score(a, b):
        qs = torch.zeros(1, 42, dim)
        ks = torch.zeros(1, 42, dim)
        qs[0, a[0] * 7 + a[1]] = q
        ks[0, b[0] * 7 + b[1]] = k
        rq, rk = ops.rope_2d(qs, size), ops.rope_2d(ks, size)
        return rq[0, a[0] * 7 + a[1]] @ rk[0, b[0] * 7 + b[1]]

    reference = score((1, 2), (3, 0))
    torch.testing.assert_close(score((3, 5), (5, 3)), reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score((1, 2), (3, 1)), reference, atol=1e-3)


def test_rope_2d_tables_equal_the_official_ones():
    case = golden_case("rala", "mixer")
    size = (case.meta["H"], case.meta["W"])
    sin, cos = ops.rope_2d_tables(size, 16)
    torch.testing.assert_close(sin, case.io["sin"], atol=1e-6, rtol=0)
    torch.testing.assert_close(cos, case.io["cos"], atol=1e-6, rtol=0)
    torch.testing.assert_close(ops.rope_2d_frequencies(16).repeat_interleave(2), case.io["rope_angle"])
    # the official rotation of φ(q) in the RALA mixer
    torch.testing.assert_close(ops.rope_2d(case.io["inter_q_phi"], size), case.io["inter_q_rope"], atol=1e-6, rtol=1e-6)


def test_rope_2d_backend_switch_and_errors():
    x = torch.randn(1, 12, 8)
    ops.set_backend("naive")
    try:
        naive = ops.rope_2d(x, (3, 4))
    finally:
        ops.set_backend("auto")
    torch.testing.assert_close(naive, ops.rope_2d_naive(x, (3, 4)))
    with pytest.raises(ValueError, match="divisible by 4"):
        ops.rope_2d(torch.randn(1, 12, 6), (3, 4))
    with pytest.raises(ValueError, match="3x5 = 15 tokens"):
        ops.rope_2d(torch.randn(1, 12, 8), (3, 5))
