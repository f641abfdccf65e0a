"""Inference-time fusion (vitzoo.optimize / vitzoo.models.fuse, layers.fold_batchnorm): every registered model gives
the same outputs fused and unfused, BatchNorms that follow a conv are gone, the rest stays."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import vitzoo
from vitzoo.layers import FusedLinear, fold_batchnorm, fold_batchnorm_sequence, fuse_linear, fuse_linears
from vitzoo.models import fuse, reduced_config

MODELS = vitzoo.list_models()
# BatchNorms that do not directly follow a conv: L²ViT's local concentration module (DWConv, GELU, BN, DWConv)
UNFUSABLE_BN = {"l2vit": 1}


def _count(model, kind=nn.BatchNorm2d):
    return sum(isinstance(m, kind) for m in model.modules())


def _with_running_stats(model):
    """Non-trivial BatchNorm statistics and affine terms, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.num_features, generator=generator))
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))
    return model


@pytest.mark.parametrize("name", MODELS)
def test_fused_model_equals_unfused(name):
    config = reduced_config(name)
    torch.manual_seed(0)
    model = _with_running_stats(timm.create_model(name, **config["kwargs"])).eval()
    x = torch.randn(2, *config["input_size"])
    fused = vitzoo.optimize(model)
    assert fused is not model and not fused.training
    blocks = sum(1 for m in model.modules() if type(m).__name__ == "LocalConcentration")
    assert _count(fused) == UNFUSABLE_BN.get(vitzoo.models.model_family(name), 0) * blocks
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
        channels_last = vitzoo.optimize(model, channels_last=True)
        torch.testing.assert_close(channels_last(x.contiguous(memory_format=torch.channels_last)), model(x),
                                   atol=1e-5, rtol=1e-5)
    assert _count(model) >= _count(fused)  # the original is left as it was
    assert not any(type(m) is nn.Linear for m in fused.modules())  # every Linear runs through FusedLinear


def test_ravlt_head_projection_is_folded_too():
    """timm's reparameterize_model visits children only; vitzoo's fuse also folds the model's own head BatchNorm."""
    config = reduced_config("ravlt_t")
    model = _with_running_stats(timm.create_model("ravlt_t", **config["kwargs"])).eval()
    assert _count(timm.utils.reparameterize_model(model)) == 1  # the head projection's norm
    fused = fuse(model)
    assert _count(fused) == 0 and isinstance(fused.norm, nn.Identity)
    x = torch.randn(1, *config["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    assert fuse(model, inplace=True) is model and _count(model) == 0


def test_compiled_model_equals_eager():
    config = reduced_config("mavit_t")
    model = _with_running_stats(timm.create_model("mavit_t", **config["kwargs"])).eval()
    x = torch.randn(1, *config["input_size"])
    compiled = vitzoo.optimize(model, compile=True, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_is_the_affine_algebra():
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    bn = _with_running_stats(nn.Sequential(nn.BatchNorm2d(4)))[0]
    folded = fold_batchnorm(conv, bn)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.weight, conv.weight * scale[:, None, None, None])
    torch.testing.assert_close(folded.bias, (conv.bias - bn.running_mean) * scale + bn.bias)
    seq = fold_batchnorm_sequence(nn.Sequential(conv, bn, nn.GELU(), nn.BatchNorm2d(4)))
    # a BatchNorm after an activation is not a conv's: it stays
    assert [type(m).__name__ for m in seq] == ["Conv2d", "GELU", "BatchNorm2d"]


def test_fold_batchnorm_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="takes a Conv2d and a BatchNorm"):
        fold_batchnorm(nn.Linear(2, 2), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="without running statistics"):
        fold_batchnorm(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="3 output channels, the BatchNorm 2"):
        fold_batchnorm(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(2))


def test_bench_times_the_optimized_model():
    from vitzoo.benchmark import bench_model

    config = reduced_config("ravlt_t")
    rows = bench_model("ravlt_t", [32], model_kwargs=config["kwargs"], fuse=True, min_iters=1, max_seconds=0.2)
    assert [(r.target, r.status) for r in rows] == [("ravlt_t+fuse", "ok")] and rows[0].ms > 0


@pytest.mark.parametrize("mixer, kwargs", [("lightnet", {}), ("lightnet", dict(use_lrpe=True)),
                                           ("lightnet", dict(causal=True)), ("lit", {})],
                         ids=["lightnet", "lightnet_lrpe", "lightnet_causal", "lit"])
def test_merged_projections_give_the_same_mixer(mixer, kwargs):
    """Mixers whose q / k / v (and gate) projections are separate Linears merge them into one on fuse()."""
    torch.manual_seed(0)
    module = vitzoo.create_mixer(mixer, 32, 4, **kwargs).eval()
    x, size = torch.randn(2, 1 + 12, 32), (3, 4)
    prefix = 0 if kwargs.get("causal") else 1
    x = x[:, 1 - prefix:]
    with torch.no_grad():
        expected = module(x, size, num_prefix_tokens=prefix)
        fused = timm.utils.reparameterize_model(nn.Sequential(module))[0]
        linears = [m for m in fused.modules() if isinstance(m, nn.Linear)]
        torch.testing.assert_close(fused(x, size, num_prefix_tokens=prefix), expected, atol=1e-6, rtol=1e-6)
    # one input projection left, plus the output projection (and, for lightnet, the gate's second half)
    assert len(linears) == (3 if mixer == "lightnet" else 2)


def test_merge_linears_concatenates_outputs():
    from vitzoo.layers import merge_linears

    a, b = nn.Linear(4, 3), nn.Linear(4, 2, bias=False)
    merged = merge_linears(a, b)
    x = torch.randn(5, 4)
    out_a, out_b = merged(x).split([3, 2], dim=-1)
    torch.testing.assert_close(out_a, a(x))
    torch.testing.assert_close(out_b, b(x))
    with pytest.raises(ValueError, match="different widths"):
        merge_linears(a, nn.Linear(5, 2))


@pytest.mark.parametrize("activation, module", [("none", nn.Identity()), ("gelu", nn.GELU()), ("relu", nn.ReLU()),
                                                ("silu", nn.SiLU())])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fused_linear_equals_linear_then_activation(activation, module, bias, monkeypatch):
    """oneDNN's inner product with the activation as a post-op, and the eager path it falls back to for gradients
    and small inputs, both equal activation(linear(x)); the oneDNN kernel is really the one called without grad."""
    import vitzoo.layers.fuse as fuse_module

    calls = []
    kernel = fuse_module._onednn_linear
    monkeypatch.setattr(fuse_module, "_onednn_linear", lambda *a: calls.append(a[3]) or kernel(*a))
    monkeypatch.setattr(fuse_module, "_onednn_is_faster", lambda *a: True)
    linear = nn.Linear(48, 80, bias=bias)
    fused = fuse_linear(linear, activation)
    assert fused.weight is linear.weight and fused.bias is linear.bias
    x = torch.randn(3, 150, 48)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), module(linear(x)), atol=1e-5, rtol=1e-5)
    assert len(calls) == 1
    small = torch.randn(2, 5, 48)
    with torch.no_grad():
        torch.testing.assert_close(fused(small), module(linear(small)), atol=1e-6, rtol=1e-6)
    leaf = x.clone().requires_grad_()
    fused(leaf).sum().backward()  # with gradients: the eager path, which autograd differentiates
    expected = x.clone().requires_grad_()
    module(linear(expected)).sum().backward()
    torch.testing.assert_close(leaf.grad, expected.grad)
    assert len(calls) == 1


@pytest.mark.parametrize("onednn_ms, aten_ms", [(1.0, 2.0), (2.0, 1.0)], ids=["onednn-faster", "mkl-faster"])
def test_fused_linear_keeps_the_kernel_that_timed_faster(onednn_ms, aten_ms, monkeypatch):
    """The first call of a shape times both kernels and the faster one runs from then on, for every row count of
    the same power-of-two bucket; another bucket is timed anew. Either way the output is activation(linear(x))."""
    import vitzoo.layers.fuse as fuse_module

    monkeypatch.setattr(fuse_module, "_FASTER_KERNEL", {})
    timings = iter([onednn_ms, aten_ms, onednn_ms, aten_ms])
    monkeypatch.setattr(fuse_module, "_best_time", lambda call: next(timings))
    calls = []
    kernel = fuse_module._onednn_linear
    monkeypatch.setattr(fuse_module, "_onednn_linear", lambda *a: calls.append(a[3]) or kernel(*a))
    linear = nn.Linear(24, 40)
    fused = fuse_linear(linear, "gelu")
    with torch.no_grad():
        for rows in (150, 200, 256, 300):  # 150-256 share the 256 bucket, 300 is timed again (512)
            x = torch.randn(rows, 24)
            torch.testing.assert_close(fused(x), F.gelu(linear(x)), atol=1e-5, rtol=1e-5)
    assert sorted(key[0] for key in fuse_module._FASTER_KERNEL) == [256, 512]
    assert len(calls) == (4 if onednn_ms < aten_ms else 0)
    assert next(timings, None) is None


def test_fuse_linears_folds_mlp_activations_and_keeps_the_rest():
    from timm.layers import Mlp

    model = nn.Sequential(Mlp(16, 64, act_layer=nn.GELU), Mlp(16, 32, act_layer=lambda: nn.GELU(approximate="tanh")),
                          nn.Linear(16, 8)).eval()
    x = torch.randn(2, 200, 16)
    keys = model.state_dict().keys()
    with torch.no_grad():
        expected = model(x)
        fuse_linears(model)
    assert model.state_dict().keys() == keys
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    assert isinstance(model[0].act, nn.Identity) and model[0].fc1.activation == "gelu"
    assert isinstance(model[1].act, nn.GELU) and model[1].fc1.activation == "none"  # tanh GELU is not the post-op
    assert type(model[2]) is FusedLinear and model[2].activation == "none"
    with pytest.raises(ValueError, match="activation must be one of"):
        FusedLinear(4, 4, activation="gelu_tanh")
    with pytest.raises(TypeError, match="nn.Linear"):
        fuse_linear(nn.Conv2d(3, 3, 1))
