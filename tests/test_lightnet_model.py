"""LightNet classifier (vitzoo.models.lightnet): its configuration of the plain ViT, parameter count by hand,
the single-scan property at model level, and the VzViT options it uses (pos_embed, mlp_layer, norm_layer,
fc_norm). The timm contract (features, export, compile, checkpoints) is covered for every registered model by
tests/test_models.py."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import vitzoo
from vitzoo.layers.lightnet_pe import MdTpe

TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8, num_classes=5)


def _model(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("lightnet_tiny", **dict(TINY, **kwargs)).eval()


def _expected_params(D, depth, heads, classes, patch, glu_ratio=2.0):
    """LightNet parameters counted from the layout (spec §5 and vitzoo's choices), not from the model."""
    d, M = D // heads, int(D * glu_ratio)
    embed = 3 * patch * patch * D + D
    tpe = 2 * (D * D + 3 * D + heads)  # two axes: q, k, RMSNorm weight (3D), o_proj (D²), log_decay (h)
    mixer = 3 * (D * D + D) + (D * d + d) + (d * D + D) + 2 * D + (D * D + D)  # q/k/v, gate, LayerNorm, o_proj
    block = D + mixer + D + 3 * D * M  # two RMSNorm weights, GLU without biases
    return embed + tpe + depth * block + D + D * classes + classes


def test_configuration_is_lightnets():
    model = _model()
    assert model.cls_token is None and model.pos_embed is None and isinstance(model.tpe, MdTpe)
    assert model.global_pool == "avg" and isinstance(model.fc_norm, nn.RMSNorm) and isinstance(model.norm, nn.Identity)
    for block in model.blocks:
        assert type(block.attn).__name__ == "LightNetMixer" and block.attn.use_lrpe and not block.attn.causal
        assert isinstance(block.norm1, nn.RMSNorm) and isinstance(block.norm2, nn.RMSNorm)
        assert block.mlp.fc1_g.bias is None and block.mlp.fc2.out_features == 32 and block.mlp.fc1_g.out_features == 64
    assert model.no_weight_decay() == set()


@pytest.mark.parametrize("name, D, heads", [("lightnet_tiny", 192, 3), ("lightnet_small", 384, 6),
                                            ("lightnet_base", 768, 12)])
def test_parameter_count_matches_the_layout(name, D, heads):
    with torch.device("meta"):
        model = timm.create_model(name)
    # lrpe.theta is a buffer, not a parameter
    assert sum(p.numel() for p in model.parameters()) == _expected_params(D, 12, heads, 1000, 16)


def test_lrpe_switch_and_mixer_kwargs():
    assert not any(b.attn.use_lrpe for b in _model(lrpe=False).blocks)
    assert not any(b.attn.use_lrpe for b in _model(mixer_kwargs=dict(use_lrpe=False)).blocks)
    mixed = _model(mixer=["lightnet", "softmax"])
    assert mixed.blocks[0].attn.use_lrpe and type(mixed.blocks[1].attn).__name__ == "SoftmaxMixer"
    # lrpe only reaches lightnet mixers: a softmax classifier builds with it on
    softmax = _model(mixer="softmax")
    assert all(type(b.attn).__name__ == "SoftmaxMixer" for b in softmax.blocks)
    assert softmax(torch.randn(1, 3, 32, 40)).shape == (1, 5)


def _shuffle_patches(x, patch, perm):
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    tiles = x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    tiles = tiles[:, perm].reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(b, c, h, w)


def test_single_scan_model_is_blind_to_patch_order_without_position_encodings():
    """Without MD-TPE and MD-LRPE every LightNet layer is per token or a global softmax-over-tokens state, and the
    pooling is a mean: shuffling the patches changes nothing. With either encoding it does."""
    x = torch.randn(2, 3, 32, 40)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    shuffled = _shuffle_patches(x, 8, perm)
    blind = _model(pos_embed="none", lrpe=False)
    with torch.no_grad():
        torch.testing.assert_close(blind(shuffled), blind(x), atol=1e-5, rtol=1e-5)
        for kwargs in (dict(), dict(lrpe=False), dict(pos_embed="none")):
            model = _model(**kwargs)
            assert (model(shuffled) - model(x)).abs().max() > 1e-3, kwargs


def test_runs_at_other_sizes_and_trains():
    model = _model().train()
    for size in ((32, 32), (48, 24), (64, 96)):
        out = model(torch.randn(2, 3, *size))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_fc_norm_normalises_the_pooled_feature():
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    torch.testing.assert_close(pooled, model.fc_norm(tokens.mean(1)))
    rms = pooled.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-4, rtol=0)  # RMSNorm weight is 1 at init


@pytest.mark.parametrize("kwargs, match", [
    (dict(pos_embed="sincos"), "pos_embed must be one of 'learn', 'md_tpe', 'none'"),
    (dict(mlp_layer="swiglu"), "mlp_layer must be one of 'mlp', 'glu'"),
    (dict(norm_layer="batchnorm"), "norm_layer must be one of 'layernorm', 'rmsnorm'"),
    (dict(global_pool="token"), "global_pool='token' needs class_token=True"),
    (dict(lrpe="maybe"), "lrpe must be True or False, got 'maybe'"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("lightnet_tiny", **dict(TINY, **kwargs))


def test_vzvit_keeps_deits_layout_and_takes_the_new_options():
    deit = timm.create_model("vzvit_tiny", **TINY)
    assert deit.pos_embed is not None and deit.tpe is None and isinstance(deit.norm, nn.LayerNorm)
    assert isinstance(deit.fc_norm, nn.Identity) and deit.blocks[0].mlp.fc1.bias is not None
    glu = timm.create_model("vzvit_tiny", mlp_layer="glu", norm_layer="rmsnorm", global_pool="avg", fc_norm=True,
                            pos_embed="md_tpe", **TINY)
    assert glu(torch.randn(1, 3, 32, 48)).shape == (1, 5)
    assert isinstance(glu.fc_norm, nn.RMSNorm) and glu.no_weight_decay() == {"cls_token"}


def test_the_authors_causal_lm_composed_from_vitzoo_parts_matches_golden():
    """xmixers' LightNetForCausalLM (golden ``lightnet_lm_tiny``): embedding -> TPE (replacing it) -> 2 x [x +
    LNA(RMSNorm(x)); x + GLU(RMSNorm(x))] -> RMSNorm -> lm_head, built from vitzoo's Tpe, causal ``lightnet`` mixer
    and timm's SwiGLU, loaded from the author's weights by name. xopes' RMSNorm sqrt(C)·x/sqrt(Σx² + eps) is
    torch's RMSNorm with eps/C."""
    from timm.layers import SwiGLU

    from conftest import golden_case
    from vitzoo.layers import Tpe

    case = golden_case("lightnet", "lightnet_lm_tiny")
    kw = case.meta["kwargs"]
    D, heads, layers = kw["embed_dim"], kw["num_heads"], kw["num_layers"]
    w = {k.removeprefix("model."): v for k, v in case.weights.items()}

    def rms(prefix):
        norm = nn.RMSNorm(D, eps=1e-5 / D)
        norm.load_state_dict({"weight": w[f"{prefix}.weight"]})
        return norm

    def part(module, prefix, rename=None):
        rename = rename or {}
        state = {k[len(prefix) + 1:]: v for k, v in w.items() if k.startswith(prefix + ".")}
        module.load_state_dict({rename.get(k, k): v for k, v in state.items()}, strict=True)
        return module

    tpe = part(Tpe(D, heads), "tpe")
    glu_names = {"w1.weight": "fc1_g.weight", "w2.weight": "fc1_x.weight", "w3.weight": "fc2.weight"}
    x = torch.nn.functional.embedding(case.io["in.input_ids"], w["embed_tokens.weight"])
    with torch.no_grad():
        x = tpe(x)
        torch.testing.assert_close(x, case.io["out.hidden_states.0"], atol=1e-4, rtol=1e-4)
        size = (1, x.shape[1])
        for i in range(layers):
            mixer = part(vitzoo.create_mixer("lightnet", D, heads, causal=True, bias=False),
                         f"layers.{i}.token_mixer")
            glu = part(SwiGLU(D, kw["mid_dim"], bias=False), f"layers.{i}.channel_mixer", glu_names)
            x = x + mixer(rms(f"layers.{i}.token_norm")(x), size)
            x = x + glu(rms(f"layers.{i}.channel_norm")(x))
            if i + 1 < layers:
                torch.testing.assert_close(x, case.io[f"out.hidden_states.{i + 1}"], atol=1e-4, rtol=1e-4)
        x = rms("final_norm")(x)
        torch.testing.assert_close(x, case.io[f"out.hidden_states.{layers}"], atol=1e-4, rtol=1e-4)
        logits = x @ w["lm_head.weight"].T
    torch.testing.assert_close(logits, case.io["out.logits"], atol=1e-4, rtol=1e-4)
