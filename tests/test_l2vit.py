"""L²ViT: the enhanced linear attention and its clamp, LCM/CPE, blocks, the classifier and the detection
backbone against the official outputs in ../shared/golden/l2vit, official checkpoint files, key manifests."""

from __future__ import annotations

import copy
import logging

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

import vitzoo
from conftest import golden_case, golden_manifest, write_official_checkpoint
from vitzoo import ops
from vitzoo.cli import main as cli_main
from vitzoo.layers import ConvPosEnc, LocalConcentration
from vitzoo.mixers.l2vit import DENOMINATOR_FLOOR, L2ViTMixer
from vitzoo.models import CheckpointError
from vitzoo.models.l2vit import LGABlock, LWABlock, checkpoint_filter_fn

FAMILY = "l2vit"
TOL = dict(atol=1e-4, rtol=1e-4)
MIXER_TOL = dict(atol=1e-5, rtol=1e-5)
# the golden tiny config (l2vit_tiny_cfg.json / l2vit_mmdet_tiny_cfg.json)
TINY = dict(depths=(2, 2, 2, 2), dims=(16, 32, 48, 64), num_heads=(2, 2, 3, 4))
DETECTION = dict(TINY, num_classes=0, out_norms=(0, 1, 2, 3))


def _via_filter(weights: dict, official_prefix: str, ours_prefix: str, model) -> dict:
    """Map the official weights of one module through checkpoint_filter_fn as if they sat at
    ``official_prefix`` in a full official state dict; return them relative to ``ours_prefix``."""
    mapped = checkpoint_filter_fn({official_prefix + k: v for k, v in weights.items()}, model)
    assert all(k.startswith(ours_prefix) for k in mapped), sorted(mapped)[:4]
    return {k[len(ours_prefix):]: v for k, v in mapped.items()}


@pytest.fixture(scope="module")
def block_host():
    """A model whose stage 0 has the golden blocks' width (32) and heads (4)."""
    return timm.create_model("l2vit_tiny", depths=(2, 1, 1, 1), dims=(32, 32, 32, 32), num_heads=(4, 4, 4, 4))


def _explicit_l2vit(mixer: L2ViTMixer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's equation written per query with sums (not the op): output and raw denominators."""
    batch, tokens, dim = x.shape
    heads, d = mixer.num_heads, mixer.head_dim
    q, k, v = mixer.qkv(x).double().view(batch, tokens, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k = q.relu(), k.relu()
    out = torch.empty(batch, heads, tokens, d, dtype=torch.float64)
    raw = torch.empty(batch, heads, tokens, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            k_sum = k[b, h].sum(0)
            kv = k[b, h].T @ v[b, h] * mixer.temperature[h].double()
            for i in range(tokens):
                raw[b, h, i] = q[b, h, i] @ k_sum
                out[b, h, i] = (q[b, h, i] @ kv) / torch.clamp(raw[b, h, i], min=100.0)
    out = out.transpose(1, 2).reshape(batch, tokens, dim)
    return torch.nn.functional.linear(out, mixer.proj.weight.double(), mixer.proj.bias.double()).float(), raw


# ---------------------------------------------------------------------------------------------- mixer


def test_mixer_matches_golden(block_host):
    case = golden_case(FAMILY, "mixer_l2vit_linear_attention")
    mixer = vitzoo.create_mixer("l2vit", dim=32, num_heads=4).eval()
    mixer.load_state_dict(_via_filter(case.weights, "stages.0.1.attn.", "stages.0.blocks.1.attn.", block_host))
    with torch.no_grad():
        out = mixer(case.io["input"], (6, 8))
    torch.testing.assert_close(out, case.io["output"], **MIXER_TOL)


def _rerandomize(mixer: L2ViTMixer, qk_bias: float = 0.0) -> None:
    """O(1) weights (the default init makes q·Σk tiny, all below the floor)."""
    with torch.no_grad():
        for linear in (mixer.qkv, mixer.proj):
            linear.weight.normal_().div_(linear.in_features ** 0.5)
            linear.bias.normal_().mul_(0.1)
        mixer.qkv.bias[:2 * mixer.dim] += qk_bias


def test_mixer_is_the_equation_on_both_sides_of_the_floor():
    mixer = vitzoo.create_mixer("l2vit", dim=24, num_heads=3)
    _rerandomize(mixer)
    with torch.no_grad():
        mixer.temperature.mul_(torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1))
    x = 1.5 * torch.randn(2, 8 * 9, 24)
    expected, raw = _explicit_l2vit(mixer, x)
    clamped = (raw < 100).double().mean().item()
    assert 0.1 < clamped < 0.9, f"the input should put denominators on both sides of 100, got {clamped:.2f} clamped"
    torch.testing.assert_close(mixer(x, (8, 9)), expected, atol=1e-5, rtol=1e-4)


def test_floor_acts_only_below_it():
    mixer = vitzoo.create_mixer("l2vit", dim=16, num_heads=2)
    assert mixer.denominator_floor == DENOMINATOR_FLOOR == 100.0
    _rerandomize(mixer, qk_bias=1.0)
    with torch.no_grad():
        mixer.proj.weight.copy_(torch.eye(16))
        mixer.proj.bias.zero_()
    x = torch.randn(1, 40, 16)
    _, raw = _explicit_l2vit(mixer, x)
    assert raw.min() > 0
    low = vitzoo.create_mixer("l2vit", dim=16, num_heads=2, denominator_floor=raw.min().item() / 2)
    high = vitzoo.create_mixer("l2vit", dim=16, num_heads=2, denominator_floor=raw.max().item() * 2)
    for other in (low, high):
        other.load_state_dict(mixer.state_dict())
    with torch.no_grad():
        q, k, v = mixer.qkv(x).view(1, 40, 3, 2, 8).permute(2, 0, 3, 1, 4)
        numerator = (q.relu() @ (k.relu().transpose(-2, -1) @ v)) * mixer.temperature  # sum form [1, 2, 40, 8]
        numerator = numerator.transpose(1, 2).reshape(1, 40, 16)
        # every denominator above the floor: plain normalised linear attention
        unclamped = numerator / raw.float().transpose(1, 2).repeat_interleave(8, dim=-1)
        torch.testing.assert_close(low(x, (5, 8)), unclamped, atol=1e-5, rtol=1e-4)
        # every denominator below it: the numerator divided by the floor
        torch.testing.assert_close(high(x, (5, 8)), numerator / high.denominator_floor, atol=1e-6, rtol=1e-4)


def test_floor_must_be_positive():
    with pytest.raises(ValueError, match="denominator_floor must be positive"):
        L2ViTMixer(16, 2, denominator_floor=0.0)


def test_mixer_fast_equals_naive_backend_and_bf16():
    mixer = vitzoo.create_mixer("l2vit", dim=32, num_heads=4)
    x = 1.5 * torch.randn(2, 7 * 9, 32)
    fast = mixer(x, (7, 9))
    ops.set_backend("naive")
    try:
        naive = mixer(x, (7, 9))
    finally:
        ops.set_backend("auto")
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-4)
    low = mixer.to(torch.bfloat16)(x.bfloat16(), (7, 9))
    assert low.dtype == torch.bfloat16
    assert ((low.float() - fast).norm() / fast.norm()).item() < 3e-2


def test_mixer_prefix_tokens_are_global_and_vzvit_takes_it():
    mixer = vitzoo.create_mixer("l2vit", dim=16, num_heads=2).eval()
    x = torch.randn(1, 1 + 12, 16).abs()
    x2 = x.clone()
    x2[0, 0] += 1.0  # the cls token
    changed = (mixer(x, (3, 4), num_prefix_tokens=1) - mixer(x2, (3, 4), num_prefix_tokens=1)).abs().amax(-1)
    assert (changed[0, 1:] > 0).all()  # every spatial token attends to it
    vit = timm.create_model("vzvit_tiny", mixer="l2vit", embed_dim=32, depth=2, num_heads=2, img_size=64, num_classes=3)
    assert isinstance(vit.blocks[0].attn, L2ViTMixer)
    assert vit(torch.randn(2, 3, 64, 96)).shape == (2, 3)


# ------------------------------------------------------------------------- window attention, LCM, CPE


def test_window_mixer_configured_the_l2vit_way_matches_golden(block_host):
    case = golden_case(FAMILY, "mixer_l2vit_window_attention")
    mixer = vitzoo.create_mixer("window", dim=32, num_heads=4, window_size=7, relative_position_bias=False).eval()
    mixer.load_state_dict(_via_filter(case.weights, "stages.0.0.attn.", "stages.0.blocks.0.attn.", block_host))
    # the official module takes the 4 windows as a batch of 7x7 maps
    with torch.no_grad():
        out = mixer(case.io["input"], (7, 7))
    torch.testing.assert_close(out, case.io["output"], **MIXER_TOL)
    assert isinstance(block_host.stages[0].blocks[0].attn, type(mixer))
    assert block_host.stages[0].blocks[0].attn.relative_position_bias_table is None
    assert block_host.stages[0].blocks[0].attn.shift_size == 0


def test_lcm_matches_golden(block_host):
    case = golden_case(FAMILY, "mixer_l2vit_lcm")
    lcm = LocalConcentration(32).eval()
    lcm.load_state_dict(_via_filter(case.weights, "stages.0.1.local_mp.", "stages.0.blocks.1.lcm.", block_host))
    with torch.no_grad():
        out = lcm(case.io["input"], (6, 8))
    torch.testing.assert_close(out, case.io["output"], **MIXER_TOL)


def test_cpe_is_a_depthwise_residual():
    cpe = ConvPosEnc(6, 3)
    x = torch.randn(2, 4 * 5, 6)
    image = x.transpose(1, 2).reshape(2, 6, 4, 5)
    expected = image + torch.nn.functional.conv2d(image, cpe.proj.weight, cpe.proj.bias, padding=1, groups=6)
    torch.testing.assert_close(cpe(x, (4, 5)), expected.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match=r"\[B, 4\*4, C\]"):
        cpe(x, (4, 4))


@pytest.mark.parametrize("name,cls,size", [
    ("block_l2vit_lwa", LWABlock, (9, 11)),  # padded to 14x14, unmasked
    ("block_l2vit_lga", LGABlock, (6, 8)),
], ids=["lwa", "lga"])
def test_blocks_match_golden(name, cls, size, block_host):
    case = golden_case(FAMILY, name)
    index = 0 if cls is LWABlock else 1
    block = copy.deepcopy(block_host.stages[0].blocks[index]).eval()
    assert type(block) is cls
    block.load_state_dict(_via_filter(case.weights, f"stages.0.{index}.", f"stages.0.blocks.{index}.", block_host))
    with torch.no_grad():
        out = block(case.io["input"], size)
    torch.testing.assert_close(out, case.io["output"], **TOL)


# ------------------------------------------------------------------------------------------ models


def _golden_classifier():
    case = golden_case(FAMILY, "l2vit_tiny_cfg")
    model = timm.create_model("l2vit_tiny", **TINY, num_classes=10).eval()
    model.load_state_dict(checkpoint_filter_fn(case.weights, model))
    return case, model


def test_classifier_matches_golden():
    case, model = _golden_classifier()
    with torch.no_grad():
        final, features = model.forward_intermediates(case.io["input"])
        pooled = model.forward_head(final, pre_logits=True)
        logits = model(case.io["input"])
    torch.testing.assert_close(logits, case.io["logits"], **TOL)
    torch.testing.assert_close(pooled, case.io["pooled"], **TOL)
    for i, feature in enumerate(features):  # 14, 7, 4, 2: exact windows, then window and 7->8 padding
        torch.testing.assert_close(feature, case.io[f"feat{i}"], **TOL)


def test_detection_backbone_matches_golden_through_features_only():
    """70x90 pads the image (72x92), the downsamplers (23->24, 9->10) and every window."""
    case = golden_case(FAMILY, "l2vit_mmdet_tiny_cfg")
    model = timm.create_model("l2vit_tiny", **DETECTION).eval()
    model.load_state_dict(checkpoint_filter_fn(case.weights, model))
    features = timm.create_model("l2vit_tiny", features_only=True, **DETECTION).eval()
    features.model.load_state_dict(checkpoint_filter_fn(case.weights, features.model))
    with torch.no_grad():
        maps = features(case.io["input"])
        intermediates = model.forward_intermediates(case.io["input"], intermediates_only=True)
    assert features.feature_info.channels() == [16, 32, 48, 64]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    for i in range(4):
        torch.testing.assert_close(maps[i], case.io[f"out{i}"], **TOL)
        torch.testing.assert_close(intermediates[i], case.io[f"out{i}"], **TOL)


def test_retinanet_outputs_1_2_3():
    """RetinaNet configs take stages (1, 2, 3) with norms for those only."""
    case = golden_case(FAMILY, "l2vit_mmdet_tiny_cfg")
    weights = {k: v for k, v in case.weights.items() if not k.startswith("norm0.")}
    kwargs = dict(TINY, num_classes=0, out_norms=(1, 2, 3))
    features = timm.create_model("l2vit_tiny", features_only=True, out_indices=(1, 2, 3), **kwargs).eval()
    features.model.load_state_dict(checkpoint_filter_fn(weights, features.model))
    with torch.no_grad():
        maps = features(case.io["input"])
    assert len(maps) == 3
    for i, fmap in zip((1, 2, 3), maps):
        torch.testing.assert_close(fmap, case.io[f"out{i}"], **TOL)


@pytest.mark.parametrize("size", [(33, 47), (64, 64), (1, 5)])
def test_features_any_size(size):
    model = timm.create_model("l2vit_tiny", features_only=True, **DETECTION).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, *size))
    for i, fmap in enumerate(maps):
        assert tuple(fmap.shape[-2:]) == tuple(-(-s // 2 ** (i + 2)) for s in size)


def test_out_norms_validation_and_final_norm():
    with pytest.raises(ValueError, match="out_norms must be stage indices"):
        timm.create_model("l2vit_tiny", **dict(TINY, out_norms=(4,)))
    detection = timm.create_model("l2vit_tiny", **DETECTION)
    assert isinstance(detection.norm, torch.nn.Identity) and len(detection.out_norms) == 4
    assert all(isinstance(norm, torch.nn.LayerNorm) for norm in detection.out_norms)


def test_softmax_global_baseline_builds():
    model = timm.create_model("l2vit_tiny", **TINY, global_mixer="softmax", num_classes=3).eval()
    ours = timm.create_model("l2vit_tiny", **TINY, num_classes=3)
    assert type(model.stages[0].blocks[1].attn).__name__ == "SoftmaxMixer"
    assert {type(b.attn).complexity for s in ours.stages for b in s.blocks} == {"linear"}
    assert {type(b.attn).complexity for s in model.stages for b in s.blocks[1::2]} == {"quadratic"}
    # the only parameters the softmax baseline lacks are the per-head temperatures
    difference = sum(p.numel() for p in ours.parameters()) - sum(p.numel() for p in model.parameters())
    assert difference == sum(TINY["num_heads"])
    assert model(torch.randn(1, 3, 70, 90)).shape == (1, 3)


# ------------------------------------------------------------------------------ checkpoints and keys


def _official_file(tmp_path, weights, **extra):
    path = tmp_path / "L2ViT-Tiny-checkpoint-best-ema.pth"
    container = {"model": weights, "optimizer": {"state": {}, "param_groups": []}, "epoch": "best-ema",
                 "scaler": {}, **extra}
    write_official_checkpoint(path, container, config_kind="argparse")
    return path


def test_official_pth_loads_through_timm_and_picks_model(tmp_path):
    case = golden_case(FAMILY, "l2vit_tiny_cfg")
    ema = {k: v + 0.05 if v.is_floating_point() else v for k, v in case.weights.items()}
    path = _official_file(tmp_path, case.weights, model_ema=ema)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # the embedded argparse.Namespace
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model("l2vit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **TINY, num_classes=10)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(case.io["input"]), case.io["logits"], **TOL)


def test_mmdet_checkpoint_backbone_loads(tmp_path):
    case = golden_case(FAMILY, "l2vit_mmdet_tiny_cfg")
    path = tmp_path / "mask_rcnn_l2vit_tiny_1x_coco.pth"
    state = {"backbone." + k: v for k, v in case.weights.items()}
    state.update({"neck.lateral_convs.0.conv.weight": torch.zeros(4, 16, 1, 1),
                  "rpn_head.rpn_cls.bias": torch.zeros(3)})
    torch.save({"meta": {"mmdet_version": "2.23.0", "epoch": 12}, "state_dict": state}, path)
    overlay = dict(file=str(path))
    features = timm.create_model("l2vit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True,
                                 **DETECTION).eval()
    with torch.no_grad():
        maps = features(case.io["input"])
    for i in range(4):
        torch.testing.assert_close(maps[i], case.io[f"out{i}"], **TOL)
    with pytest.raises(CheckpointError, match=r"out_norms=\(0, 1, 2, 3\) and num_classes=0"):
        timm.create_model("l2vit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **TINY)


def test_classification_weights_start_a_detection_backbone(tmp_path, caplog):
    """As the official mmdet backbone loads them: final norm and head unused, output norms at init."""
    case = golden_case(FAMILY, "l2vit_tiny_cfg")
    path = _official_file(tmp_path, case.weights)
    with caplog.at_level(logging.INFO, logger="vitzoo.models.l2vit"):
        model = timm.create_model("l2vit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                  **DETECTION).eval()
    assert "keep their init" in caplog.text
    assert all((norm.weight == 1).all() and (norm.bias == 0).all() for norm in model.out_norms)
    reference = _golden_classifier()[1]
    with torch.no_grad():
        ours = model.forward_intermediates(case.io["input"], intermediates_only=True)
        plain = reference.forward_intermediates(case.io["input"], intermediates_only=True)
    for i in range(4):
        torch.testing.assert_close(ours[i], torch.nn.functional.layer_norm(
            plain[i].permute(0, 2, 3, 1), (plain[i].shape[1],)).permute(0, 3, 1, 2), **TOL)
    overlay = dict(file=str(path), num_classes=10)
    with_head = timm.create_model("l2vit_tiny", pretrained=True, pretrained_cfg_overlay=overlay,
                                  **dict(DETECTION, num_classes=10))
    torch.testing.assert_close(with_head.head.fc.weight, case.weights["head.weight"])


def test_filter_is_idempotent():
    case, model = _golden_classifier()
    once = checkpoint_filter_fn(case.weights, model)
    assert checkpoint_filter_fn(once, model).keys() == once.keys()
    own = model.state_dict()
    assert checkpoint_filter_fn(own, model).keys() == own.keys()


def test_convert_cli_on_an_official_file(tmp_path):
    case = golden_case(FAMILY, "l2vit_tiny_cfg")
    path = _official_file(tmp_path, case.weights)
    out = tmp_path / "l2vit_tiny.safetensors"
    kwargs = '{"depths": [2, 2, 2, 2], "dims": [16, 32, 48, 64], "num_heads": [2, 2, 3, 4]}'
    # in-process: tools/convert.py is a thin wrapper over this entry point
    args = ["convert", "l2vit_tiny", str(path), str(out), "--num-classes", "10", "--model-kwargs", kwargs]
    assert cli_main(args) == 0
    assert "stem.conv1.weight" in load_file(str(out))
    again = timm.create_model("l2vit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(out), num_classes=10),
                              **TINY, num_classes=10).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(case.io["input"]), case.io["logits"], **TOL)


MANIFESTS = [
    ("L2ViT_Tiny", "l2vit_tiny", {}),
    ("L2ViT_Small", "l2vit_small", {}),
    ("L2ViT_Base", "l2vit_base", {}),
    ("L2ViT_Base_384", "l2vit_base_384", {}),
    ("l2vit_mmdet_tiny", "l2vit_tiny", dict(num_classes=0, out_norms=(0, 1, 2, 3))),
    ("l2vit_mmdet_small", "l2vit_small", dict(num_classes=0, out_norms=(0, 1, 2, 3))),
    ("l2vit_mmdet_base", "l2vit_base", dict(num_classes=0, out_norms=(0, 1, 2, 3))),
]


@pytest.mark.parametrize("variant,name,kwargs", MANIFESTS, ids=[m[0] for m in MANIFESTS])
def test_key_manifest_converts_exactly(variant, name, kwargs):
    golden_case(FAMILY, "l2vit_tiny_cfg")  # skips locally, fails on CI, when the golden data is absent
    manifest = golden_manifest(FAMILY, variant)
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    official = {key: torch.empty(shape, device="meta") for key, shape in manifest["keys"]}
    mapped = {key: tuple(value.shape) for key, value in checkpoint_filter_fn(official, model).items()}
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert sorted(set(own) - set(mapped)) == [], "missing"
    assert sorted(set(mapped) - set(own)) == [], "unexpected"
    assert {k: v for k, v in mapped.items() if own[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


# ------------------------------------------------------------------------------------ pretrained cfgs


def test_pretrained_cfgs_record_the_official_evaluation():
    tiny = timm.models.get_pretrained_cfg("l2vit_tiny.official_in1k").to_dict()
    assert tiny["input_size"] == (3, 224, 224) and tiny["crop_pct"] == 0.875 and tiny["interpolation"] == "bicubic"
    facts = vitzoo.models.paper_facts("l2vit_tiny.official_in1k")
    assert facts.checkpoint_name == "L2ViT-Tiny-checkpoint-best-ema.pth" and facts.top1 == 83.1
    assert vitzoo.models.paper_facts("l2vit_base.official_in22k_ft_in1k").top1 == 86.0
    assert timm.models.get_pretrained_cfg("l2vit_base.official_in22k").num_classes == 21841
    with torch.device("meta"):
        model = timm.create_model("l2vit_base_384")
    assert model.stages[0].blocks[0].attn.window_size == 12
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    # resolution >= 384: warp to 384x384 (no aspect-preserving resize, no crop)
    resize = transform.transforms[0]
    assert tuple(resize.size) == (384, 384)
    image = transform(Image.new("RGB", (500, 300)))
    assert image.shape == (3, 384, 384)
