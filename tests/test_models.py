"""The timm model contract, checked for every registered vitzoo model on its reduced configuration.

A family registers models and a ``REDUCED_CONFIGS`` table; everything here then applies to it
without new test code. Full-size variants are only built on the meta device.
"""

from __future__ import annotations

import re

import pytest
import timm
import torch

import vitzoo
from conftest import assert_exports_and_compiles
from vitzoo.models import PretrainedWeightsError, reduced_config
from vitzoo.models._hierarchical import HierarchicalBackbone

MODELS = vitzoo.list_models()


def _build(name, **overrides):
    config = reduced_config(name)
    kwargs = dict(config["kwargs"], **overrides)
    return timm.create_model(name, **kwargs), config["input_size"]


def _input(input_size, batch=2):
    return torch.randn(batch, *input_size)


@pytest.mark.parametrize("name", MODELS)
def test_full_size_builds_on_meta(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert model.num_classes == 1000


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name):
    model, input_size = _build(name, num_classes=7)
    model.train()
    out = model(_input(input_size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters without gradient: {unused[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_features_and_head(name):
    model, input_size = _build(name, num_classes=5)
    model.eval()
    x = _input(input_size)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert pre_logits.shape == (2, model.head_hidden_size)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, model(x))
    assert model.num_features > 0 and model.in_chans == input_size[0]


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier(name):
    model, input_size = _build(name, num_classes=5)
    model.eval()
    x = _input(input_size)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(3)
    assert model.get_classifier() is not None
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0, "")
    with torch.no_grad():
        unpooled = model.forward_head(model.forward_features(x))
    assert unpooled.dim() > 2


@pytest.mark.parametrize("name", MODELS)
def test_no_head_at_construction(name):
    model, input_size = _build(name, num_classes=0, global_pool="")
    model.eval()
    with torch.no_grad():
        out = model(_input(input_size))
    assert out.dim() > 2 and model.num_classes == 0


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_same_output(name):
    model, input_size = _build(name, num_classes=4)
    model.train()  # checkpointing acts when grads are on; no dropout/drop-path in reduced configs
    x = _input(input_size)
    torch.manual_seed(0)
    reference = model(x)
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    checkpointed = model(x)
    torch.testing.assert_close(checkpointed, reference)
    checkpointed.sum().backward()


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    config = reduced_config(name)
    model = timm.create_model(name, features_only=True, **config["kwargs"]).eval()
    x = _input(config["input_size"], batch=1)
    with torch.no_grad():
        maps = model(x)
    info = model.feature_info
    assert len(maps) == len(info.channels())
    for fmap, channels, reduction in zip(maps, info.channels(), info.reduction()):
        assert fmap.shape[1] == channels
        expected = [-(-s // reduction) for s in x.shape[-2:]]
        assert list(fmap.shape[-2:]) == expected, f"stride {reduction}: {tuple(fmap.shape)} for {tuple(x.shape)}"


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates_agrees(name):
    model, input_size = _build(name, num_classes=3)
    model.eval()
    x = _input(input_size)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        only = model.forward_intermediates(x, indices=1, intermediates_only=True)
    assert len(only) == 1
    torch.testing.assert_close(only[0], intermediates[-1])


@pytest.mark.parametrize("name", MODELS)
def test_group_matcher_and_no_weight_decay_name_real_parameters(name):
    model, _ = _build(name)
    names = [n for n, _ in model.named_parameters()]
    for key in model.no_weight_decay():
        assert any(n == key or n.startswith(key + ".") for n in names), f"no_weight_decay names {key!r}"
    patterns = []
    for value in model.group_matcher().values():
        patterns += [value] if isinstance(value, str) else [v[0] if isinstance(v, (tuple, list)) else v for v in value]
    for pattern in patterns:
        assert any(re.match(pattern, n) for n in names), f"group_matcher pattern {pattern!r} matches no parameter"
    grouped = [n for n in names if any(re.match(p, n) for p in patterns)]
    assert len(grouped) >= len(names) // 2


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_names_exist(name):
    model, _ = _build(name)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state
    assert f"{cfg['classifier']}.weight" in state


@pytest.mark.parametrize("name", MODELS)
def test_unknown_argument_is_a_type_error(name):
    config = reduced_config(name)
    with pytest.raises(TypeError):
        timm.create_model(name, **config["kwargs"], no_such_argument=1)


@pytest.mark.parametrize("name", MODELS)
def test_other_input_size_and_bad_inputs(name):
    config = reduced_config(name)
    model, (chans, height, width) = _build(name, num_classes=2)
    model.eval()
    alt = config.get("alt_input_size", (chans, height + 32, width))
    with torch.no_grad():
        assert model(torch.randn(1, *alt)).shape == (1, 2)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, chans + 1, height, width))


@pytest.mark.parametrize("name", MODELS)
def test_in_chans(name):
    model, (_, height, width) = _build(name, in_chans=1, num_classes=2)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, height, width)).shape == (1, 2)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_without_a_file_says_how(name):
    with pytest.raises(PretrainedWeightsError, match="pretrained_cfg_overlay"):
        timm.create_model(name, pretrained=True)


def test_list_models_is_vitzoo_only_and_filters():
    assert "resnet50" not in MODELS and "vzvit_small" in MODELS
    assert vitzoo.list_models("vzvit_t*") == ["vzvit_tiny"]


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match="vzvit_small"):
        vitzoo.create_model("vzvit_smal")


def test_vzvit_takes_any_mixer_per_block():
    mixers = vitzoo.list_mixers()
    model = timm.create_model("vzvit_tiny", embed_dim=32, num_heads=2, depth=len(mixers), mixer=mixers, img_size=64)
    assert [type(b.attn).__name__ for b in model.blocks] == [type(vitzoo.create_mixer(m, 32, 2)).__name__ for m in mixers]
    assert model(torch.randn(1, 3, 64, 80)).shape == (1, 1000)


def _one_per_family() -> list[str]:
    seen, names = set(), []
    for name in MODELS:
        family = vitzoo.models.model_family(name)
        if family not in seen:
            seen.add(family)
            names.append(name)
    return names


@pytest.mark.parametrize("name", MODELS)
def test_device_keyword_builds_on_meta(name):
    model = timm.create_model(name, device="meta")
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.is_meta for t in tensors)


@pytest.mark.parametrize("name", MODELS)
def test_fx_symbolic_trace_of_forward_and_features(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    model, input_size = _build(name, num_classes=3)
    model.eval()
    traced = torch.fx.symbolic_trace(model)
    last = model.feature_info[-1]["module"]
    features = create_feature_extractor(model, return_nodes={last: "last"})
    for size in (input_size, (input_size[0], input_size[1] + 32, input_size[2] - 32 or input_size[2] + 32)):
        x = _input(size, batch=1)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), model(x))
            expected = model.forward_intermediates(x, indices=1, intermediates_only=True)[0]
            torch.testing.assert_close(_as_map(features(x)["last"], expected), expected)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, input_size[0] + 1, *input_size[1:]))


@pytest.mark.parametrize("name", MODELS)
def test_features_only_fx_path(name):
    """timm's ``feature_cls="fx"`` traces the model and returns the feature modules' outputs; for the
    hierarchical backbones built without output norms they equal the default (getter) features."""
    config = reduced_config(name)
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "projection"}
    with torch.device("meta"):
        hierarchical = isinstance(timm.create_model(name), HierarchicalBackbone)
    if hierarchical:
        kwargs["out_norms"] = False
    torch.manual_seed(0)
    fx_model = timm.create_model(name, features_only=True, feature_cls="fx", **kwargs).eval()
    torch.manual_seed(0)
    getter = timm.create_model(name, features_only=True, **kwargs).eval()
    x = _input(config["input_size"], batch=1)
    with torch.no_grad():
        traced, reference = fx_model(x), getter(x)
    assert len(traced) == len(reference)
    for a, b in zip(traced, reference):
        torch.testing.assert_close(_as_map(a, b), b)


def _as_map(output: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A traced module output as the NCHW map ``like``: hierarchical stages give maps already; isotropic
    blocks give tokens [B, prefix + H·W, C], whose spatial tokens are the map."""
    if output.dim() == 4:
        return output
    batch, channels, height, width = like.shape
    return output[:, -height * width:].transpose(1, 2).reshape(batch, channels, height, width)


@pytest.mark.parametrize("name", _one_per_family())
def test_torch_export_and_compile_fullgraph(name):
    model, input_size = _build(name, num_classes=3)
    assert_exports_and_compiles(model.eval(), _input(input_size, batch=1))
