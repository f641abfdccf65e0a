"""The one hierarchical backbone base (vitzoo.models._hierarchical) and the timm contract pieces it adds:
device / dtype keywords, typed paper facts, mixer layouts, drop-path schedules, intermediates."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import LayerNorm2d

import vitzoo
from vitzoo.models import paper_facts, reduced_config
from vitzoo.models._hierarchical import (HierarchicalBackbone, classifier_head_keys, expand_mixers, per_stage,
                                         stage_drop_path_rates)

HIERARCHICAL = [n for n in vitzoo.list_models() if n.split("_")[0] in ("ravlt", "mavit", "l2vit")
                or n.startswith(("inline_pvt", "inline_swin", "inline_cswin"))]


def test_every_hierarchical_family_stands_on_the_base():
    families = {vitzoo.models.model_family(n) for n in HIERARCHICAL}
    assert families == {"ravlt", "l2vit", "inline_pvt", "inline_swin", "inline_cswin"}
    for name in HIERARCHICAL:
        with torch.device("meta"):
            assert isinstance(timm.create_model(name), HierarchicalBackbone), name


def test_stage_drop_path_rates_are_the_official_linspace():
    rates = stage_drop_path_rates(0.1, [2, 2, 6, 2])
    assert [len(r) for r in rates] == [2, 2, 6, 2]
    flat = [r for stage in rates for r in stage]
    torch.testing.assert_close(torch.tensor(flat), torch.linspace(0, 0.1, 12))
    assert stage_drop_path_rates(0.5, [1]) == [[0.0]]


def test_mixer_layouts_and_per_stage_values():
    assert expand_mixers("rala", [1, 2]) == [["rala"], ["rala", "rala"]]
    assert expand_mixers(["a", ["b", "c"]], [2, 2]) == [["a", "a"], ["b", "c"]]
    with pytest.raises(ValueError, match="stage 1 has 2 blocks but 1 mixers"):
        expand_mixers(["a", ["b"]], [1, 2])
    with pytest.raises(ValueError, match="one value per stage"):
        per_stage((1, 2, 3), 4, "mlp_ratios")
    assert per_stage(4.0, 2, "mlp_ratio") == [4.0, 4.0]


def test_classifier_head_keys_are_idempotent():
    sd = {"head.weight": torch.zeros(2, 3), "head.bias": torch.zeros(2), "headless.weight": torch.zeros(1)}
    once = classifier_head_keys(sd)
    assert sorted(once) == ["head.fc.bias", "head.fc.weight", "headless.weight"]
    assert classifier_head_keys(once).keys() == once.keys()


@pytest.mark.parametrize("name", ["ravlt_t", "l2vit_tiny", "inline_swin_tiny", "inline_pvt_tiny", "inline_cswin_tiny"])
def test_intermediates_nhwc_norm_and_stop_early(name):
    config = reduced_config(name)
    model = timm.create_model(name, **config["kwargs"]).eval()
    x = torch.randn(1, *config["input_size"])
    with torch.no_grad():
        nchw = model.forward_intermediates(x, intermediates_only=True)
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)
        final, early = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
    for a, b in zip(nchw, nhwc):
        torch.testing.assert_close(a.permute(0, 2, 3, 1), b)
    expected = model.norm(nchw[3]) if model.final_is_norm else nchw[3]
    torch.testing.assert_close(normed[0], expected)
    torch.testing.assert_close(early[1], nchw[1])
    torch.testing.assert_close(final, nchw[1])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("name", ["ravlt_t", "l2vit_tiny", "inline_swin_tiny"])
def test_prune_intermediate_layers_keeps_the_wanted_features(name):
    config = reduced_config(name)
    model = timm.create_model(name, **config["kwargs"]).eval()
    x = torch.randn(1, *config["input_size"])
    with torch.no_grad():
        reference = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1], prune_norm=True) == [0, 1]
    assert len(model.stages) == 2 and model.num_classes == 0
    with torch.no_grad():
        pruned = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        model(x)
    for a, b in zip(pruned, reference):
        torch.testing.assert_close(a, b)


def test_out_norms_are_one_argument_for_every_family():
    for name in ("ravlt_t", "l2vit_tiny", "inline_swin_tiny"):
        kwargs = dict(reduced_config(name)["kwargs"], num_classes=0)
        kwargs.pop("projection", None)
        model = timm.create_model(name, out_norms=(1, 3), **kwargs)
        assert [type(m).__name__ for m in model.out_norms] == ["Identity", "LayerNorm2d", "Identity", "LayerNorm2d"]
        with pytest.raises(ValueError, match="out_norms must be stage indices"):
            timm.create_model(name, out_norms=(4,), **kwargs)


def test_device_and_dtype_keywords():
    config = reduced_config("ravlt_t")
    meta = timm.create_model("ravlt_t", device="meta")
    assert {p.device.type for p in meta.parameters()} | {b.device.type for b in meta.buffers()} == {"meta"}
    half = timm.create_model("ravlt_t", dtype=torch.bfloat16, **config["kwargs"])
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="floating-point"):
        timm.create_model("ravlt_t", dtype=torch.int64, **config["kwargs"])


def test_paper_facts_are_typed_and_keyed_by_arch_and_tag():
    facts = paper_facts("inline_swin_tiny")
    assert facts == paper_facts("inline_swin_tiny.official_in1k") and facts.top1 == 82.4
    assert isinstance(facts.gflops, float) and facts.params_m == 30
    assert paper_facts("l2vit_base.official_in22k").top1 is None
    assert paper_facts("vzvit_tiny") is None


def test_every_model_has_an_arch_tag_cfg():
    for name in vitzoo.list_models():
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.tag, f"{name} has no pretrained tag"
        assert "notes" not in cfg.to_dict() or not cfg.notes, f"{name} still carries facts in notes"


@pytest.mark.parametrize("name,eps", [("l2vit_tiny", 1e-5), ("inline_swin_tiny", 1e-5), ("inline_cswin_tiny", 1e-5),
                                      ("inline_pvt_tiny", 1e-5), ("ravlt_t", 1e-6)])
def test_channel_layer_norms_keep_the_official_eps(name, eps):
    """timm's LayerNorm2d defaults to eps 1e-6, the official nn.LayerNorm to 1e-5: every norm over channels
    of a map (stem, merges, final norm, output norms) must carry the official value."""
    with torch.device("meta"):
        model = timm.create_model(name, out_norms=True)
    norms = [m for m in model.modules() if isinstance(m, LayerNorm2d)]
    assert norms and all(m.eps == eps for m in norms), sorted({m.eps for m in norms})
