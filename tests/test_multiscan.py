"""The decay recurrence (chunked against the sequential reference, forward and gradients, fp32 and bf16, and a
closed form) and the four-direction ``multiscan`` mixer (against an explicit float64 re-computation, order
dependence, prefix tokens, size errors, inside vzvit)."""

from __future__ import annotations

import importlib
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import vitzoo
from conftest import error_ratio
from vitzoo import ops

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
# (tokens, chunk): shorter than a chunk, one chunk, k chunks + 1, odd lengths, the default chunk
LENGTHS = [(1, 16), (5, 16), (16, 16), (33, 16), (47, 16), (129, 64)]


def _inputs(b=2, h=3, n=33, d=5, e=4):
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, h, n, d), torch.randn(b, h, n, e)
    # a fast, a medium and an almost-flat decay
    return q, k, v, torch.log(torch.tensor([0.3, 0.9, 0.999]))[:h]


def _max_rel(actual, expected):
    """Largest absolute difference relative to the largest reference entry (a zero reference must be matched)."""
    scale = expected.double().abs().max().clamp_min(1e-12)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, chunk", LENGTHS, ids=lambda x: str(x))
def test_chunked_matches_naive(n, chunk, dtype):
    """Forward and the gradients of q, k, v and log λ; bf16 is compared with the fp32 reference."""
    inputs = _inputs(n=n)
    leaves_ref = [x.clone().requires_grad_() for x in inputs]
    leaves = [x.to(dtype).requires_grad_() for x in inputs[:3]] + [inputs[3].clone().requires_grad_()]
    ref = ops.decay_recurrence_naive(*leaves_ref)
    out = ops.decay_recurrence(*leaves, chunk_size=chunk)
    assert out.dtype == dtype and out.shape == ref.shape
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out.backward(grad.to(dtype))
    if dtype == torch.float32:
        assert _max_rel(out, ref) < 1e-5
        for leaf, leaf_ref in zip(leaves, leaves_ref):
            assert _max_rel(leaf.grad, leaf_ref.grad) < 1e-5
    else:
        assert error_ratio(out, ref) < 2e-2
        for leaf, leaf_ref in zip(leaves, leaves_ref):
            assert error_ratio(leaf.grad, leaf_ref.grad) < 3e-2


@pytest.mark.parametrize("form", [ops.decay_recurrence_naive, ops.decay_recurrence], ids=["naive", "chunked"])
def test_closed_form_three_tokens(form):
    """n = 3, d = e = 1: o_1 = q1 k1 v1, o_2 = q2 (λ k1 v1 + k2 v2), o_3 = q3 (λ² k1 v1 + λ k2 v2 + k3 v3)."""
    lam = 0.5
    q = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 3, 1)
    k = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64).view(1, 1, 3, 1)
    v = torch.tensor([1.0, 4.0, -2.0], dtype=torch.float64).view(1, 1, 3, 1)
    kv = [2.0, -4.0, -1.0]
    expected = [1 * kv[0], 2 * (lam * kv[0] + kv[1]), 3 * (lam ** 2 * kv[0] + lam * kv[1] + kv[2])]
    out = form(q, k, v, torch.tensor([math.log(lam)], dtype=torch.float64))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.flatten(), torch.tensor(expected, dtype=torch.float64))


def test_naive_accumulates_in_fp32_and_returns_the_input_dtype():
    q, k, v, log_decay = _inputs(n=9)
    out = ops.decay_recurrence_naive(q.bfloat16(), k.bfloat16(), v.bfloat16(), log_decay)
    assert out.dtype == torch.bfloat16
    assert error_ratio(out, ops.decay_recurrence_naive(q, k, v, log_decay)) < 2e-2


def test_naive_backend_routes_to_the_reference(monkeypatch):
    def fail(*args):
        raise AssertionError("the chunked form ran under the naive backend")

    monkeypatch.setattr(importlib.import_module("vitzoo.ops.decay_recurrence"), "_chunked", fail)
    inputs = _inputs(n=4)
    previous = ops.get_backend()
    ops.set_backend("naive")
    try:
        out = ops.decay_recurrence(*inputs)
    finally:
        ops.set_backend(previous)
    torch.testing.assert_close(out, ops.decay_recurrence_naive(*inputs), atol=0, rtol=0)


@pytest.mark.parametrize("form", [ops.decay_recurrence_naive, ops.decay_recurrence], ids=["naive", "chunked"])
def test_bad_shapes_raise(form):
    q, k, v, log_decay = _inputs(n=6)
    with pytest.raises(ValueError, match="one log decay per head"):
        form(q, k, v, log_decay[:2])
    with pytest.raises(ValueError, match="query and key"):
        form(q, k[:, :, :5], v, log_decay)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size"):
        ops.decay_recurrence(*_inputs(n=4), chunk_size=0)


def _scan_orders(height, width):
    """The four scan orders as explicit lists of row-major grid indices."""
    rows = [r * width + c for r in range(height) for c in range(width)]
    columns = [r * width + c for c in range(width) for r in range(height)]
    return [rows, rows[::-1], columns, columns[::-1]]


def _reference_mixer(mixer, x, size, prefix):
    """The mixer in float64 with explicit loops: each scan walks its grid order then the prefix tokens."""
    weights = {name: p.detach().double() for name, p in mixer.named_parameters()}
    heads, d = mixer.num_heads, mixer.head_dim
    x = x.double()[0]
    q, k, v = F.linear(x, weights["qkv.weight"], weights["qkv.bias"]).view(-1, 3, heads, d).unbind(1)
    q, k = F.silu(q) / math.sqrt(d), F.silu(k)
    decays = torch.sigmoid(weights["decay_logit"]).view(4, heads)
    out = torch.zeros_like(v)
    for direction, order in enumerate(_scan_orders(*size)):
        sequence = [prefix + i for i in order] + list(range(prefix))
        for h in range(heads):
            state = torch.zeros(d, d, dtype=torch.float64)
            for t in sequence:
                state = decays[direction, h] * state + torch.outer(k[t, h], v[t, h])
                out[t, h] += q[t, h] @ state
    out = F.layer_norm(out.reshape(-1, heads * d), (heads * d,), weights["norm.weight"], weights["norm.bias"],
                       mixer.norm.eps)
    return F.linear(out, weights["proj.weight"], weights["proj.bias"])[None]


def _mixer(dim=6, heads=2, **kwargs):
    mixer = vitzoo.create_mixer("multiscan", dim=dim, num_heads=heads, **kwargs).eval()
    with torch.no_grad():
        # distinct decays per direction and head, so a mixed-up direction or head would show
        mixer.decay_logit.copy_(torch.linspace(-1.0, 4.0, mixer.decay_logit.numel()))
    return mixer


@pytest.mark.parametrize("size, prefix", [((3, 5), 0), ((3, 5), 2), ((4, 1), 1), ((1, 1), 0)])
def test_mixer_matches_explicit_four_scans(size, prefix):
    mixer = _mixer(chunk_size=4)  # several chunks per scan
    x = torch.randn(1, prefix + size[0] * size[1], 6, dtype=torch.float64)
    expected = _reference_mixer(mixer, x, size, prefix)
    torch.testing.assert_close(mixer.double()(x, size, num_prefix_tokens=prefix), expected, atol=1e-10, rtol=1e-10)


def test_output_depends_on_token_order_unlike_lightnet():
    x = torch.randn(1, 20, 16)
    perm = torch.randperm(20)
    multiscan = vitzoo.create_mixer("multiscan", dim=16, num_heads=2).eval()
    assert not torch.allclose(multiscan(x[:, perm], (4, 5)), multiscan(x, (4, 5))[:, perm], atol=1e-3)
    lightnet = vitzoo.create_mixer("lightnet", dim=16, num_heads=2).eval()
    torch.testing.assert_close(lightnet(x[:, perm], (4, 5)), lightnet(x, (4, 5))[:, perm])


def test_transposed_grid_swaps_row_and_column_scans():
    """Transposing the grid turns the row scans into the column scans, so with the decays swapped accordingly
    the output is the transposed output: the directions are the four promised ones."""
    mixer = _mixer(dim=8)
    x = torch.randn(1, 1 + 12, 8)
    height, width = 3, 4
    transposed = torch.cat([x[:, :1], x[:, 1:].view(1, height, width, 8).transpose(1, 2).reshape(1, 12, 8)], dim=1)
    swapped = _mixer(dim=8)
    swapped.load_state_dict(mixer.state_dict())
    with torch.no_grad():
        swapped.decay_logit.copy_(mixer.decay_logit.view(4, -1)[[2, 3, 0, 1]].flatten())
    out = mixer(x, (height, width), num_prefix_tokens=1)
    out_t = swapped(transposed, (width, height), num_prefix_tokens=1)
    torch.testing.assert_close(out_t[:, :1], out[:, :1])
    torch.testing.assert_close(out_t[:, 1:], out[:, 1:].view(1, height, width, 8).transpose(1, 2).reshape(1, 12, 8))


def test_prefix_tokens_read_every_grid_token_and_feed_none():
    mixer = _mixer(dim=8, decay_init=0.9)
    x = torch.randn(1, 2 + 20, 8, requires_grad=True)
    out = mixer(x, (4, 5), num_prefix_tokens=2)
    # the cls token's output reaches every grid token through one scan or another
    (grad,) = torch.autograd.grad(out[0, 0].sum(), x)
    assert (grad[0, 2:].abs().sum(-1) > 0).all()
    # and the grid outputs do not depend on the prefix tokens
    x2 = x.detach().clone()
    x2[:, :2] += 1.0
    torch.testing.assert_close(mixer(x2, (4, 5), num_prefix_tokens=2)[:, 2:], out[:, 2:].detach())


def test_decay_init():
    retnet = vitzoo.create_mixer("multiscan", dim=12, num_heads=3)
    expected = (1 - 2.0 ** -torch.arange(5, 8, dtype=torch.float64)).repeat(4)
    torch.testing.assert_close(retnet.log_decay().double().exp(), expected, rtol=1e-6, atol=0)
    fixed = vitzoo.create_mixer("multiscan", dim=12, num_heads=3, decay_init=0.8)
    torch.testing.assert_close(fixed.log_decay().exp(), torch.full((12,), 0.8))
    with pytest.raises(ValueError, match="decay_init"):
        vitzoo.create_mixer("multiscan", dim=12, num_heads=3, decay_init=1.0)


def test_wrong_size_raises():
    mixer = vitzoo.create_mixer("multiscan", dim=8, num_heads=2)
    with pytest.raises(ValueError, match="21 tokens for 1 prefix \\+ a 4x4 map"):
        mixer(torch.randn(1, 21, 8), (4, 4), num_prefix_tokens=1)


def test_in_vzvit_forward_backward():
    model = timm.create_model("vzvit_tiny", mixer="multiscan", embed_dim=32, depth=2, num_heads=2, img_size=32,
                              patch_size=8, num_classes=5)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.blocks[0].attn.decay_logit.grad.abs().sum() > 0
