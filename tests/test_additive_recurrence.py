"""LightNet's additive recurrence: both forms against the first author's outputs (golden), against each other
(forward and gradients, fp32 and bf16, odd lengths), the one-scan order independence, and huge gate logits."""

from __future__ import annotations

import importlib

import pytest
import torch

from conftest import error_ratio, golden_case
from vitzoo import ops

FORMS = [pytest.param((ops.additive_recurrence_naive, ops.additive_recurrence_state_naive,
                       ops.lightnet_attention_naive), id="naive"),
         pytest.param((ops.additive_recurrence, ops.additive_recurrence_state, ops.lightnet_attention), id="fast")]
CAUSAL = [pytest.param(True, id="causal"), pytest.param(False, id="noncausal")]


def _inputs(b, h, n, d, e, dtype=torch.float32, gate_scale=2.0):
    q, k = torch.randn(b, h, n, d), torch.randn(b, h, n, d)
    v, g = torch.randn(b, h, n, e), gate_scale * torch.randn(b, h, n, d)
    return [x.to(dtype) for x in (q, k, v, g)]


def _rms(x):
    return x.double().pow(2).mean().sqrt().item()


@pytest.mark.parametrize("forms", FORMS)
def test_matches_golden(forms):
    recurrence, state, lightnet = forms
    case = golden_case("lightnet", "mixer_additive_recurrence")
    q, k, v, g = (case.io[f"in.{name}"] for name in "qkvg")
    tol = dict(atol=1e-4, rtol=1e-4)
    # The author's plain and running-max scans are the same function; both forms must give both.
    for name in ("o_causal_naive", "o_causal_stable"):
        torch.testing.assert_close(recurrence(q, k, v, g, causal=True), case.io[f"out.{name}"], **tol)
    torch.testing.assert_close(recurrence(q, k, v, g, causal=False), case.io["out.o_noncausal"], **tol)
    for tensor, name in zip(state(k, v, g), ("final_s", "final_denom", "final_m")):
        torch.testing.assert_close(tensor, case.io[f"out.{name}"], **tol)
    torch.testing.assert_close(lightnet(q, k, v, causal=True), case.io["out.lightnet_o_causal"], **tol)
    torch.testing.assert_close(lightnet(q, k, v, causal=False), case.io["out.lightnet_o_noncausal"], **tol)


def test_naive_is_the_formula():
    """The reference equals S_t/Δ_t written out with plain exponentials (small logits, no shift needed)."""
    q, k, v, g = _inputs(1, 1, 5, 3, 2, gate_scale=0.5)
    out = ops.additive_recurrence_naive(q, k, v, g)
    for t in range(5):
        weight = g[0, 0, : t + 1].exp()  # [t+1, D]
        state = (weight * k[0, 0, : t + 1]).T @ v[0, 0, : t + 1] / weight.sum(0)[:, None]
        torch.testing.assert_close(out[0, 0, t], q[0, 0, t] @ state)


@pytest.mark.parametrize("causal", CAUSAL)
@pytest.mark.parametrize("shape", [(2, 3, 1, 5, 4), (1, 2, 7, 8, 8), (2, 2, 33, 17, 6), (1, 1, 48, 4, 3)],
                         ids=lambda s: "B{}-H{}-N{}-D{}-E{}".format(*s))
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")])
def test_fast_matches_naive(shape, causal, dtype):
    """Forward and the gradients of q, k, v, g; bf16 is compared with the fp32 reference."""
    inputs = _inputs(*shape)
    leaves_ref = [x.clone().requires_grad_() for x in inputs]
    leaves = [x.to(dtype).requires_grad_() for x in inputs]
    ref = ops.additive_recurrence_naive(*leaves_ref, causal=causal)
    out = ops.additive_recurrence(*leaves, causal=causal)
    assert out.dtype == dtype and out.shape == ref.shape
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out.backward(grad.to(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
        for leaf, leaf_ref in zip(leaves, leaves_ref):
            torch.testing.assert_close(leaf.grad, leaf_ref.grad, atol=1e-4, rtol=1e-3)
    else:
        assert error_ratio(out, ref) < 2e-2
        for leaf, leaf_ref in zip(leaves, leaves_ref):
            # With N = 1 the gate gradient is exactly zero: a floor keeps the ratio meaningful.
            assert _rms(leaf.grad - leaf_ref.grad) < 5e-2 * _rms(leaf_ref.grad) + 1e-4


def test_naive_handles_bf16_like_the_fast_form():
    """The reference computes in fp32 and returns the input dtype."""
    inputs = _inputs(1, 2, 9, 4, 3)
    out = ops.additive_recurrence_naive(*(x.bfloat16() for x in inputs))
    assert out.dtype == torch.bfloat16
    assert error_ratio(out, ops.additive_recurrence_naive(*inputs)) < 2e-2


@pytest.mark.parametrize("forms", FORMS)
def test_one_scan_state_ignores_token_order(forms):
    recurrence, state, _ = forms
    q, k, v, g = _inputs(2, 2, 21, 6, 5)
    perm = torch.randperm(21)
    permuted = [x[:, :, perm] for x in (q, k, v, g)]
    for a, b in zip(state(k, v, g), state(*permuted[1:])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    out = recurrence(q, k, v, g, causal=False)
    torch.testing.assert_close(recurrence(*permuted, causal=False), out[:, :, perm], atol=1e-5, rtol=1e-5)
    # The causal output is order-dependent, which is what makes the check above meaningful.
    assert not torch.allclose(recurrence(*permuted, causal=True), recurrence(q, k, v, g, causal=True)[:, :, perm])


@pytest.mark.parametrize("causal", CAUSAL)
@pytest.mark.parametrize("forms", FORMS)
def test_large_gate_logits_stay_finite(forms, causal):
    """A per-channel shift of g cancels, so g + 80 (exp overflows fp32 above ~88) gives the result of g, and a
    spread of ±100 within one sequence stays finite and agrees between the forms."""
    recurrence, state, _ = forms
    q, k, v, g = _inputs(1, 2, 37, 5, 4, gate_scale=1.0)
    reference = recurrence(q, k, v, g, causal=causal)
    shifted = g + 80.0 + 20.0 * torch.arange(5.0)  # up to 160 in the last channel
    torch.testing.assert_close(recurrence(q, k, v, shifted, causal=causal), reference, atol=1e-5, rtol=1e-4)
    s, denom, _ = state(k, v, shifted)
    s_ref, denom_ref, _ = state(k, v, g)
    torch.testing.assert_close(s / denom, s_ref / denom_ref, atol=1e-5, rtol=1e-4)
    spread = 100.0 * torch.sign(torch.randn_like(g))
    out = recurrence(q, k, v, spread, causal=causal)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ops.additive_recurrence_naive(q, k, v, spread, causal=causal), atol=1e-5,
                               rtol=1e-4)


def test_large_gate_logits_have_finite_gradients():
    q, k, v, g = (x.requires_grad_() for x in _inputs(1, 1, 35, 4, 3))
    g_big = g * 30.0 + 80.0
    (ops.additive_recurrence(q, k, v, g_big).sum() + ops.additive_recurrence(q, k, v, g_big, causal=False).sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v, g))


@pytest.mark.parametrize("fn", [ops.additive_recurrence, ops.additive_recurrence_naive], ids=["fast", "naive"])
def test_wrong_shapes_are_refused(fn):
    q, k, v, g = _inputs(1, 2, 6, 4, 3)
    with pytest.raises(ValueError, match=r"\[B, heads, N, D\]"):
        fn(q[0], k, v, g)
    with pytest.raises(ValueError, match=r"gate \(1, 2, 6, 3\)"):
        fn(q, k, v, g[..., :3])
    with pytest.raises(ValueError, match="value"):
        fn(q, k, v[:, :, :5], g)


def test_naive_backend_routes_to_the_reference(monkeypatch):
    inputs = _inputs(1, 1, 20, 3, 2)
    calls = []
    module = importlib.import_module("vitzoo.ops.additive_recurrence")
    monkeypatch.setattr(module, "_causal_chunked", lambda *args: calls.append(args))
    ops.set_backend("naive")
    try:
        ops.additive_recurrence(*inputs)
    finally:
        ops.set_backend("auto")
    assert not calls
    ops.additive_recurrence(*inputs)
    assert len(calls) == 1
