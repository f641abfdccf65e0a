"""The four InLine backbones: parity with the official models, official key manifests, official
checkpoint files, resolved per-block configurations, and cost that grows linearly in tokens."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

import vitzoo
from conftest import golden_case, golden_manifest, write_official_checkpoint
from vitzoo.commands.convert import convert
from vitzoo.mixers.cswin import CSwinMixer
from vitzoo.mixers.inline import InLineMixer
from vitzoo.mixers.window import WindowMixer
from vitzoo.models import inline_cswin, inline_deit, inline_pvt, inline_swin, reduced_config
from vitzoo.models._inline_common import mixers_from_attn_type

LOGIT_TOL = dict(atol=1e-4, rtol=1e-4)
FILTERS = {"deit": inline_deit, "pvt": inline_pvt, "swin": inline_swin, "cswin": inline_cswin}
VARIANTS = [f"inline_deit_{s}" for s in ("tiny", "small", "base")] + \
           [f"inline_pvt_{s}" for s in ("tiny", "small", "medium", "large")] + \
           [f"inline_swin_{s}" for s in ("tiny", "small", "base", "base_384")] + \
           [f"inline_cswin_{s}" for s in ("tiny", "small", "base", "base_384")]


def _golden_kwargs(case: str) -> tuple[str, dict]:
    """The vitzoo model and arguments of a golden case, from the official constructor kwargs in its json."""
    kw = golden_case("inline", case).meta["kwargs"]
    if case.startswith("inline_deit"):
        return "inline_deit_tiny", dict(img_size=kw["img_size"], embed_dim=kw["embed_dim"], depth=kw["depth"],
                                        num_heads=kw["num_heads"])
    if case.startswith("inline_pvt"):
        assert kw["attn_type"] == "IIII" and kw["la_sr_ratios"] == "1111"
        return "inline_pvt_tiny", dict(img_size=kw["img_size"], embed_dims=kw["embed_dims"], num_heads=kw["num_heads"],
                                       mlp_ratios=kw["mlp_ratios"], depths=kw["depths"])
    if case.startswith("inline_swin"):
        window, first_map = kw["window_size"], kw["img_size"] // 4
        return "inline_swin_tiny", dict(
            img_size=kw["img_size"], embed_dim=kw["embed_dim"], depths=kw["depths"], num_heads=kw["num_heads"],
            mixers=mixers_from_attn_type(kw["attn_type"], kw["depths"]),
            # a window covering the first map makes every InLine block global (the official rule)
            window_size=None if window >= first_map else window, softmax_window_size=max(7, window // 8))
    la_split = [int(s) for s in kw["la_split_size"].split("-")]
    assert kw["attn_type"] == "IISS" and la_split[:2] == [kw["img_size"] // 4, kw["img_size"] // 8]
    return "inline_cswin_tiny", dict(img_size=kw["img_size"], embed_dim=kw["embed_dim"], depths=kw["depth"],
                                     num_heads=kw["num_heads"], split_sizes=kw["split_size"])


def _check_outputs(model, golden) -> None:
    x = golden.io["input"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), golden.io["logits"], **LOGIT_TOL)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                                   golden.io["pooled"], **LOGIT_TOL)
        if isinstance(model, inline_deit.InLineDeiT):
            feats = model.forward_intermediates(x, indices=2, output_fmt="NLC", return_prefix_tokens=True,
                                                intermediates_only=True)
            feats = [torch.cat([prefix, spatial], dim=1) for spatial, prefix in feats]
        else:
            feats = model.forward_intermediates(x, intermediates_only=True)
    for i, feat in enumerate(feats):
        torch.testing.assert_close(feat, golden.io[f"feat{i}"], **LOGIT_TOL)


GOLDEN_MODELS = ["inline_deit_tiny_cfg", "inline_pvt_tiny_cfg", "inline_swin_tiny_cfg", "inline_swin_windowed_cfg",
                 "inline_cswin_tiny_cfg"]


@pytest.mark.parametrize("case", GOLDEN_MODELS)
def test_official_weights_give_official_outputs(case):
    golden = golden_case("inline", case)
    name, kwargs = _golden_kwargs(case)
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    family = FILTERS[case.split("_")[1]]
    model.load_state_dict(family.checkpoint_filter_fn(golden.weights, model))
    assert sum(p.numel() for p in model.parameters()) == golden.meta["num_params"]
    _check_outputs(model, golden)


@pytest.mark.parametrize("case", GOLDEN_MODELS)
def test_official_checkpoint_file_loads_through_timm(case, tmp_path):
    """A file built like the official ones (weights in a container next to a pickled yacs CfgNode) loads
    through timm.create_model(pretrained=True) and gives the official outputs; CSwin takes the EMA
    weights, the others the raw model, as their official evaluations do."""
    golden = golden_case("inline", case)
    name, kwargs = _golden_kwargs(case)
    decoy = {k: v + 1 if v.is_floating_point() else v for k, v in golden.weights.items()}
    if case.startswith("inline_cswin"):
        container = {"model": decoy, "state_dict_ema": golden.weights, "max_accuracy_e": 83.0}
    else:
        container = {"model": golden.weights, "state_dict_ema": decoy}
    path = tmp_path / "official.pth"
    write_official_checkpoint(path, container, config_kind="yacs")
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what timm's own loader would do
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                              num_classes=10, **kwargs).eval()
    _check_outputs(model, golden)


def test_convert_writes_safetensors_that_reload(tmp_path):
    """``vitzoo convert`` (tools/convert.py) on an official-format file keeps the checkpoint's own head."""
    golden = golden_case("inline", "inline_pvt_tiny_cfg")
    name, kwargs = _golden_kwargs("inline_pvt_tiny_cfg")
    official = tmp_path / "official.pth"
    write_official_checkpoint(official, {"model": golden.weights}, config_kind="yacs")
    out = convert(name, str(official), str(tmp_path / "pvt.safetensors"), num_classes=10, **kwargs)
    tensors = load_file(str(out))
    assert "stages.0.blocks.0.attn.qkv.weight" in tensors and "block1.0.attn.q.weight" not in tensors
    torch.testing.assert_close(tensors["head.fc.weight"], golden.weights["head.weight"])
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(out), num_classes=10),
                              num_classes=10, **kwargs).eval()
    _check_outputs(model, golden)


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_key_manifest_converts_exactly(variant):
    """Every official key and shape maps onto vitzoo's state dict with nothing missing or left over,
    and the parameter count is the official one."""
    manifest = golden_manifest("inline", variant)
    with torch.device("meta"):
        model = timm.create_model(variant)
    family = FILTERS[variant.split("_")[1]]
    official = {name: torch.empty(shape, device="meta") for name, shape in manifest["keys"]}
    mapped = {k: tuple(v.shape) for k, v in family.checkpoint_filter_fn(official, model).items()}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(own) - set(mapped)) == [], "missing"
    assert sorted(set(mapped) - set(own)) == [], "unexpected"
    assert {k: mapped[k] for k in own} == own
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


@pytest.mark.parametrize("name", ["inline_deit_tiny", "inline_pvt_tiny", "inline_swin_tiny", "inline_cswin_tiny"])
def test_filters_are_idempotent_on_vitzoo_weights(name):
    config = reduced_config(name)
    model = timm.create_model(name, **config["kwargs"])
    state = model.state_dict()
    family = FILTERS[name.split("_")[1]]
    assert family.checkpoint_filter_fn(state, model).keys() == state.keys()
    detector = {f"backbone.{k}": v for k, v in state.items()} | {"neck.fpn.weight": torch.zeros(1)}
    assert family.checkpoint_filter_fn(detector, model).keys() == state.keys()


def _resolved(model) -> list[list[str]]:
    """Per stage, each block's mixer as I (global InLine), I<w>/<shift> (windowed InLine),
    S<w>/<shift> (softmax window) or C<branches> (CSwin stripes)."""
    out = []
    for stage in model.stages:
        row = []
        for block in stage.blocks:
            attn = block.attn
            if isinstance(attn, InLineMixer):
                row.append("I" if attn.window_size is None else f"I{attn.window_size}/{attn.shift_size}")
            elif isinstance(attn, WindowMixer):
                row.append(f"S{attn.window_size}/{attn.shift_size}")
            else:
                assert isinstance(attn, CSwinMixer)
                row.append(f"C{attn.num_branches}")
        out.append(row)
    return out


def test_swin_variants_resolve_the_official_blocks():
    """The per-block layout measured from the official code (spec §4.3) at each variant's size."""
    with torch.device("meta"):
        tiny, small, base, base384 = (timm.create_model(f"inline_swin_{v}")
                                      for v in ("tiny", "small", "base", "base_384"))
    shifted7 = ["S7/0", "S7/3"]
    assert _resolved(tiny) == [["I"] * 2, ["I"] * 2, ["I"] * 6, ["S7/0"] * 2]
    assert _resolved(small) == [["I"] * 2, ["I"] * 2, shifted7 * 9, ["S7/0"] * 2]
    assert _resolved(base) == [["I"] * 2, ["I"] * 2, ["I", "I"] + shifted7 * 8, ["S7/0"] * 2]
    assert _resolved(base384) == [["I"] * 2, ["I"] * 2, ["I", "I"] + ["S12/0", "S12/6"] * 8, ["S12/0"] * 2]


def test_swin_resolves_golden_block_tables():
    """The resolved_blocks recorded with each Swin golden case."""
    for case in ("inline_swin_tiny_cfg", "inline_swin_windowed_cfg"):
        name, kwargs = _golden_kwargs(case)
        with torch.device("meta"):
            model = timm.create_model(name, **kwargs)
        expected = [[] for _ in range(4)]
        for block in golden_case("inline", case).meta["resolved_blocks"]:
            letter = "I" if block["attn"] == "InLineAttention" else "S"
            global_inline = letter == "I" and block["window_size"] == min(block["input_resolution"])
            label = "I" if global_inline else f"{letter}{block['window_size']}/{block['shift_size']}"
            expected[block["stage"]].append(label)
        assert _resolved(model) == expected, case


def test_cswin_variants_resolve_the_official_blocks():
    with torch.device("meta"):
        tiny, base384 = timm.create_model("inline_cswin_tiny"), timm.create_model("inline_cswin_base_384")
    assert _resolved(tiny) == [["I"] * 2, ["I"] * 4, ["C2"] * 18, ["C1"]]
    assert [b.attn.split_size for b in base384.stages[2].blocks] == [12] * 29
    assert _resolved(base384)[3] == ["C1"] * 2


def test_attn_type_strings():
    assert mixers_from_attn_type("IIMS2", (2, 2, 4, 2)) == [["inline"] * 2, ["inline"] * 2,
                                                            ["inline", "inline", "window", "window"], ["window"] * 2]
    assert mixers_from_attn_type("IISS", (1, 1, 1, 1), softmax="cswin")[3] == ["cswin"]
    with pytest.raises(ValueError, match="does not describe 4 stages"):
        mixers_from_attn_type("IIM", (2, 2, 2, 2))


@pytest.mark.parametrize("name", ["inline_pvt_tiny", "inline_swin_tiny", "inline_cswin_tiny", "inline_deit_tiny"])
def test_model_cost_grows_linearly_where_attention_is_inline(name):
    """Counted FLOPs at twice the side: 4x the pixels. Global InLine stages keep the whole model near 4x
    (windowed softmax stages are linear too, and CSwin's stripe stages sit on small late maps)."""
    config = reduced_config(name)
    model = timm.create_model(name, **config["kwargs"]).eval()

    def flops(side):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, side, side))
        return counter.get_total_flops()

    ratio = flops(256) / flops(128)
    assert 3.8 < ratio < 4.2, ratio


def test_pretrained_cfgs_carry_the_paper_facts():
    cfg = timm.models.get_pretrained_cfg("inline_deit_small").to_dict()
    assert cfg["input_size"] == (3, 288, 288) and cfg["crop_mode"] == "squash" and cfg["crop_pct"] == 0.875
    assert cfg["license"] == "unknown" and cfg["origin_url"] == "https://github.com/LeapLabTHU/InLine"
    assert "notes" not in cfg and cfg["tag"] == "official_in1k"
    facts = vitzoo.models.paper_facts("inline_deit_small.official_in1k")
    assert facts.top1 == 80.2 and "2f3898b07e9247f3beb3" in facts.checkpoint_url
    assert timm.models.get_pretrained_cfg("inline_swin_base_384").to_dict()["crop_pct"] == 1.0
    with torch.device("meta"):
        model = timm.create_model("inline_deit_small")
    assert model.pos_embed.shape == (1, 1 + 18 * 18, 320)
    # the official evaluation: Resize((int(256 / 224 * 288),) * 2), bicubic, then CenterCrop(288)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    resize, crop = transform.transforms[:2]
    assert tuple(resize.size) == (329, 329) and tuple(crop.size) == (288, 288)
    assert resize.interpolation.value == "bicubic"


@pytest.mark.parametrize("name, size", [("inline_swin_tiny", (512, 384)), ("inline_cswin_tiny", (480, 352)),
                                        ("inline_pvt_tiny", (352, 512))])
def test_official_layouts_run_at_other_sizes(name, size):
    """Narrow models with the official per-stage layout (global InLine, softmax windows of 7 / stripes
    of 7 that need padding at these sizes) give every stage's map at stride 4-32."""
    narrow = dict(inline_swin_tiny=dict(embed_dim=8, depths=(1, 1, 1, 2), num_heads=(1, 1, 2, 2)),
                  inline_cswin_tiny=dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(2, 2, 2, 2)),
                  inline_pvt_tiny=dict(embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1)))[name]
    model = timm.create_model(name, features_only=True, **narrow).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, *size))
    assert [tuple(m.shape[-2:]) for m in maps] == [(size[0] // r, size[1] // r) for r in (4, 8, 16, 32)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_hierarchical_inputs_must_be_multiples_of_32():
    model = timm.create_model("inline_swin_tiny", **reduced_config("inline_swin_tiny")["kwargs"])
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, 64, 80))


def test_fvcore_counts_fused_attention_like_explicit_attention():
    """The card's FLOPs include the softmax stages: SDPA counts as the explicit matmuls of the naive op."""
    from vitzoo import ops
    from vitzoo.benchmark import count_flops

    class StripeMixerOnMap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = CSwinMixer(8, 2, split_size=2)

        def forward(self, x):
            return self.mixer(x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3]))

    model = StripeMixerOnMap()
    fused = count_flops(model, (8, 6, 6))
    ops.set_backend("naive")
    try:
        explicit = count_flops(model, (8, 6, 6))
    finally:
        ops.set_backend("auto")
    # without a handle for SDPA, the fused count would miss the 2 · 3 stripes · 12² · (4 + 4) attention FLOPs
    assert round(fused * 1e9) == round(explicit * 1e9)


def test_the_four_backbones_share_one_card(tmp_path):
    from vitzoo.cards import card_models, families, render_card

    assert "inline" in families() and "inline_swin" not in families() and "vzvit" in families()
    assert sorted(card_models("inline")) == sorted(VARIANTS)
    text = render_card("inline", tmp_path)
    assert all(f"| `{variant}` |" in text for variant in VARIANTS)
    assert "- `inline_cswin`: InLine-CSwin" in text
