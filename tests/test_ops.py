"""Every op's fast form against its naive reference: forward and gradients, odd sizes, fp32 and bf16."""

from __future__ import annotations

import importlib

import pytest
import torch

from conftest import error_ratio
from vitzoo import ops

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]


def _compare(fast, naive, inputs, dtype):
    """Run both with the same inputs; compare outputs and every input gradient."""
    leaves_fast = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    leaves_naive = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out_fast, out_naive = fast(*leaves_fast), naive(*leaves_naive)
    assert out_fast.dtype == dtype and out_fast.shape == out_naive.shape
    grad = torch.randn_like(out_fast)
    out_fast.backward(grad)
    out_naive.backward(grad)
    if dtype == torch.float32:
        torch.testing.assert_close(out_fast, out_naive, atol=1e-5, rtol=1e-4)
        for a, b in zip(leaves_fast, leaves_naive):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3)
    else:
        assert error_ratio(out_fast, out_naive) < 2e-2
        for a, b in zip(leaves_fast, leaves_naive):
            assert error_ratio(a.grad, b.grad) < 5e-2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "raw"])
@pytest.mark.parametrize("shape", [(2, 3, 63, 17), (1, 2, 17 * 23, 16), (1, 1, 5, 8)], ids=lambda s: "B{}-H{}-N{}-D{}".format(*s))
def test_linear_attention_matches_naive(shape, normalize, dtype):
    b, h, n, d = shape
    q = torch.rand(b, h, n, d, dtype=dtype)
    k = torch.rand(b, h, n, d, dtype=dtype)
    v = torch.randn(b, h, n, d + 3, dtype=dtype)
    fast = lambda q, k, v: ops.linear_attention(q, k, v, normalize=normalize)
    naive = lambda q, k, v: ops.linear_attention_naive(q, k, v, normalize=normalize)
    _compare(fast, naive, [q, k, v], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_attention_terms_match_naive(dtype):
    """Numerator and q·mean k come out of one state product (the column of ones) and equal the score-matrix form."""
    q, k = torch.rand(2, 3, 41, 8, dtype=dtype), torch.rand(2, 3, 41, 8, dtype=dtype)
    v = torch.randn(2, 3, 41, 5, dtype=dtype)
    fast = lambda q, k, v: torch.cat(ops.linear_attention_terms(q, k, v), dim=-1).to(dtype)
    naive = lambda q, k, v: torch.cat(ops.linear_attention_terms_naive(q, k, v), dim=-1).to(dtype)
    _compare(fast, naive, [q, k, v], dtype)
    numerator, mean_score = ops.linear_attention_terms(q.float(), k.float(), v.float())
    torch.testing.assert_close(mean_score, q.float() @ k.float().mean(dim=-2, keepdim=True).transpose(-2, -1))
    assert numerator.dtype == mean_score.dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("queries", [29, 7], ids=["self", "fewer-queries"])
def test_injective_linear_attention_matches_naive(queries, dtype):
    """InLine's rank-one-corrected state equals numerator + (1 − q·mean k)·mean v term by term."""
    q = torch.randn(2, 3, queries, 8, dtype=dtype)
    k, v = torch.randn(2, 3, 29, 8, dtype=dtype), torch.randn(2, 3, 29, 6, dtype=dtype)
    _compare(lambda q, k, v: ops.injective_linear_attention(q, k, v, scale=0.3),
             lambda q, k, v: ops.injective_linear_attention_naive(q, k, v, scale=0.3), [q, k, v], dtype)
    with torch.no_grad():  # the scale is the queries' factor
        torch.testing.assert_close(ops.injective_linear_attention(q.float(), k.float(), v.float(), scale=0.3),
                                   ops.injective_linear_attention_naive(q.float() * 0.3, k.float(), v.float()),
                                   atol=1e-5, rtol=1e-5)


def test_injective_linear_attention_naive_is_the_formula():
    q, k, v = torch.randn(1, 1, 5, 3), torch.randn(1, 1, 5, 3), torch.randn(1, 1, 5, 2)
    out = ops.injective_linear_attention_naive(q, k, v)
    for i in range(5):
        weights = torch.stack([q[0, 0, i] @ k[0, 0, j] for j in range(5)])
        expected = (weights[:, None] * v[0, 0]).sum(0) / 5 + (1 - weights.mean()) * v[0, 0].mean(0)
        torch.testing.assert_close(out[0, 0, i], expected)


@pytest.mark.parametrize("op", ["normalized", "raw", "terms", "injective"])
def test_chunked_streaming_equals_one_pass(op, monkeypatch):
    """Above CHUNK_TOKENS half-precision keys and queries stream in chunks (an odd count, a short last chunk): the
    fp32 copies are chunk-sized, and values and gradients are those of one pass."""
    module = importlib.import_module("vitzoo.ops.linear_attention")
    run = {
        "normalized": lambda q, k, v: ops.linear_attention(q, k, v),
        "raw": lambda q, k, v: ops.linear_attention(q, k, v, normalize=False),
        "terms": lambda q, k, v: torch.cat(ops.linear_attention_terms(q, k, v), dim=-1),
        "injective": ops.injective_linear_attention,
    }[op]
    q, k, v = (torch.rand(2, 2, 37, 4, dtype=torch.bfloat16), torch.rand(2, 2, 37, 4, dtype=torch.bfloat16),
               torch.randn(2, 2, 37, 3, dtype=torch.bfloat16))
    leaves = [[t.clone().requires_grad_() for t in (q, k, v)] for _ in range(2)]
    whole = run(*leaves[0])
    calls = []
    monkeypatch.setattr(module, "CHUNK_TOKENS", 8)
    monkeypatch.setattr(torch.Tensor, "float", lambda t: calls.append(t.shape[-2]) or t.to(torch.float32))
    chunked = run(*leaves[1])
    monkeypatch.undo()
    assert calls and max(calls) == 8  # half precision streams: no fp32 copy of more than one chunk
    grad = torch.randn_like(whole)
    whole.backward(grad)
    chunked.backward(grad)
    assert error_ratio(chunked, whole) < 1e-2
    for a, b in zip(leaves[1], leaves[0]):
        assert error_ratio(a.grad, b.grad) < 2e-2


def test_linear_attention_naive_is_the_formula():
    """The reference equals the paper's sum form written out with loops over queries."""
    q, k, v = torch.rand(1, 1, 6, 3), torch.rand(1, 1, 6, 3), torch.randn(1, 1, 6, 2)
    out = ops.linear_attention_naive(q, k, v, eps=0.0)
    for i in range(6):
        weights = torch.stack([q[0, 0, i] @ k[0, 0, j] for j in range(6)])
        expected = (weights[:, None] * v[0, 0]).sum(0) / weights.sum()
        torch.testing.assert_close(out[0, 0, i], expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_softmax_attention_matches_naive(with_bias, dtype):
    q, k, v = (torch.randn(2, 3, 37, 17, dtype=dtype) for _ in range(3))
    bias = torch.randn(3, 37, 37, dtype=dtype) if with_bias else None
    _compare(lambda q, k, v: ops.softmax_attention(q, k, v, bias=bias),
             lambda q, k, v: ops.softmax_attention_naive(q, k, v, bias=bias), [q, k, v], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,window,shift", [((8, 12), 4, 0), ((8, 12), 4, 2), ((6, 9), 3, 1), ((4, 4), 4, 0)],
                         ids=["8x12-w4", "8x12-w4-s2", "6x9-w3-s1", "4x4-w4"])
@pytest.mark.parametrize("prefix", [0, 1], ids=["noprefix", "prefix"])
def test_window_attention_matches_naive(size, window, shift, prefix, dtype):
    heads, dim = 2, 8
    n = size[0] * size[1]
    q, k, v = (torch.randn(2, heads, n, dim, dtype=dtype) for _ in range(3))
    bias = torch.randn(heads, window * window, window * window, dtype=dtype)
    gk = torch.randn(2, heads, prefix, dim, dtype=dtype) if prefix else None
    gv = torch.randn(2, heads, prefix, dim, dtype=dtype) if prefix else None
    kw = dict(bias=bias, global_key=gk, global_value=gv)
    _compare(lambda q, k, v: ops.window_attention(q, k, v, size, window, shift, **kw),
             lambda q, k, v: ops.window_attention_naive(q, k, v, size, window, shift, **kw), [q, k, v], dtype)


def test_window_without_shift_is_block_diagonal():
    """A token's output depends only on tokens of its own window."""
    q, k, v = (torch.randn(1, 1, 16, 4) for _ in range(3))
    out = ops.window_attention(q, k, v, (4, 4), 2)
    v2 = v.clone()
    v2[0, 0, 15] += 10.0  # bottom-right window only
    out2 = ops.window_attention(q, k, v2, (4, 4), 2)
    changed = (out2 - out).abs().sum(-1)[0, 0].view(4, 4) > 0
    assert changed[2:, 2:].all() and not changed[:2].any() and not changed[:, :2].any()


def test_shifted_window_mask_regions():
    mask = ops.shifted_window_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    assert (mask[0] == 0).all()  # the top-left window lies inside one region
    assert torch.isinf(mask[-1]).any()  # the bottom-right window mixes wrapped strips


def test_relative_position_index_range():
    index = ops.relative_position_index(3)
    assert index.shape == (9, 9) and index.min() == 0 and index.max() == 24
    assert (index.diagonal() == 12).all()


def test_backend_switch_routes_to_naive(monkeypatch):
    calls = []
    module = importlib.import_module("vitzoo.ops.linear_attention")  # the module, not the same-named function
    monkeypatch.setattr(module, "linear_attention_naive", lambda *a, **k: calls.append(1) or a[2])
    q = torch.rand(1, 1, 4, 2)
    ops.set_backend("naive")
    try:
        ops.linear_attention(q, q, q)
    finally:
        ops.set_backend("auto")
    assert calls == [1]
    with pytest.raises(ValueError, match="backend"):
        ops.set_backend("triton-please")


def test_ops_reject_bad_shapes():
    with pytest.raises(ValueError, match="B, heads, N, D"):
        ops.linear_attention(torch.rand(4, 2), torch.rand(4, 2), torch.rand(4, 2))
    with pytest.raises(ValueError, match="multiple of the window"):
        ops.window_attention(*(torch.rand(1, 1, 30, 2) for _ in range(3)), (5, 6), 4)


@pytest.mark.parametrize("op", ["linear", "injective"])
def test_linear_attention_accumulates_in_fp32_under_autocast(op):
    fast, naive = {"linear": (ops.linear_attention, ops.linear_attention_naive),
                   "injective": (ops.injective_linear_attention, ops.injective_linear_attention_naive)}[op]
    q = torch.rand(1, 1, 4096, 8, dtype=torch.bfloat16)
    v = torch.randn(1, 1, 4096, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(q * 0.1, q, v)
    reference = naive((q * 0.1).float(), q.float(), v.float())
    assert out.dtype == torch.bfloat16 and error_ratio(out, reference) < 1e-2
