"""RAVLT / MAViT backbones: official parity through the checkpoint path, key manifests, detection
backbone, layouts, preprocessing and FLOPs."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import vitzoo
from conftest import golden_case, golden_manifest, write_official_checkpoint
from vitzoo.cli import main
from vitzoo.models import CheckpointError, paper_facts, reduced_config
from vitzoo.models.ravlt import checkpoint_filter_fn
from vitzoo.mixers.mala import MalaMixer
from vitzoo.mixers.rala import RalaMixer, RalaSoftmaxMixer

FAMILIES = [pytest.param("rala", "ravlt_t", id="ravlt"), pytest.param("mala", "mavit_t", id="mavit")]
TOL = dict(atol=1e-4, rtol=1e-4)


def _tiny_kwargs(meta: dict) -> dict:
    """vitzoo kwargs of a golden case's official constructor kwargs (the mixer layout is the entrypoint's)."""
    kw = meta["kwargs"]
    out = dict(embed_dims=kw["embed_dims"], depths=kw["depths"], num_heads=kw["num_heads"],
               mlp_ratios=kw["mlp_ratios"], init_values=kw["layer_init_values"], in_chans=kw["in_chans"])
    if "num_classes" in kw:
        out.update(num_classes=kw["num_classes"], projection=kw["projection"])
    return out


def _load_official(arch, case, tmp_path, **kwargs):
    path = tmp_path / "official.pth"
    write_official_checkpoint(path, {"model": case.weights})
    # the checkpoint's head has 10 classes: say so, or timm's rule drops a head that differs from 1000
    overlay = dict(file=str(path), num_classes=case.meta["kwargs"]["num_classes"])
    return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay,
                             **_tiny_kwargs(case.meta), **kwargs).eval()


def _record(model, x):
    """Our counterparts of the golden hooks: stem, per-stage outputs before the merge (blocks_out),
    official layers[i] outputs (feat: after the next merge), pre-logits and logits."""
    seen = {}
    handles = [model.stem.register_forward_hook(lambda m, i, o: seen.__setitem__("stem", o))]
    for i, stage in enumerate(model.stages):
        handles.append(stage.register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(f"blocks_out{i}", o)))
        if i > 0:
            handles.append(stage.downsample.register_forward_hook(
                lambda m, inp, o, i=i: seen.__setitem__(f"feat{i - 1}", o)))
    with torch.no_grad():
        features = model.forward_features(x)
        seen["pre_logits"] = model.forward_head(features, pre_logits=True)[:, :, None, None]
        seen["logits"] = model.forward_head(features)
    for handle in handles:
        handle.remove()
    seen[f"feat{len(model.stages) - 1}"] = seen[f"blocks_out{len(model.stages) - 1}"]
    return seen


@pytest.mark.parametrize("family,arch", FAMILIES)
def test_tiny_classifier_matches_official(family, arch, tmp_path):
    """Official-format .pth (argparse Namespace inside) -> timm.create_model(pretrained=True); a
    non-square input and an odd one; every stored tensor within 1e-4."""
    case = golden_case(family, "tiny")
    model = _load_official(arch, case, tmp_path)
    assert sum(p.numel() for p in model.parameters()) == case.meta["num_params"]
    seen = _record(model, case.io["input"])
    names = ["logits", "pre_logits", "stem"] + [f"{kind}{i}" for kind in ("feat", "blocks_out") for i in range(4)]
    for name in names:
        torch.testing.assert_close(seen[name], case.io[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")
    odd = _record(model, case.io["input_odd"])
    torch.testing.assert_close(odd["logits"], case.io["logits_odd"], **TOL)
    for i in range(4):
        torch.testing.assert_close(odd[f"feat{i}"], case.io[f"odd_feat{i}"], **TOL)


@pytest.mark.parametrize("family,arch", FAMILIES)
def test_detection_backbone_matches_official(family, arch, tmp_path):
    """An mmdet-style checkpoint (backbone.* + neck/heads, under 'state_dict') into features_only."""
    case = golden_case(family, "det_tiny")
    weights = {f"backbone.{k}": v for k, v in case.weights.items()}
    weights.update({"neck.lateral_convs.0.conv.weight": torch.zeros(4, 16, 1, 1),
                    "rpn_head.rpn_cls.bias": torch.zeros(3)})
    path = tmp_path / "det.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": weights, "optimizer": {"state": {}}}, path)
    backbone = timm.create_model(arch, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                 **_tiny_kwargs(case.meta)).eval()
    assert sum(p.numel() for p in backbone.parameters()) == case.meta["num_params"]
    assert backbone.feature_info.channels() == case.meta["kwargs"]["embed_dims"]
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        outs = backbone(case.io["input"])
    assert len(outs) == 4
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, case.io[f"out{i}"], **TOL)


@pytest.mark.parametrize("family,arch", FAMILIES)
def test_features_without_out_norms_are_the_stage_outputs(family, arch, tmp_path):
    """A classification checkpoint into features_only: out_norms start at weight 1, bias 0 (the
    official detection start); with out_norms=False the raw stage outputs come back."""
    case = golden_case(family, "tiny")
    path = tmp_path / "official.pth"
    write_official_checkpoint(path, {"model": case.weights})
    kwargs = _tiny_kwargs(case.meta)
    kwargs.pop("projection")
    overlay = dict(file=str(path))
    raw = timm.create_model(arch, features_only=True, out_norms=False, pretrained=True,
                            pretrained_cfg_overlay=overlay, **kwargs)
    normed = timm.create_model(arch, features_only=True, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    torch.testing.assert_close(normed.model.out_norms[2].weight, torch.ones(48))
    with torch.no_grad():
        raw_outs, normed_outs = raw.eval()(case.io["input"]), normed.eval()(case.io["input"])
    for i in range(4):
        torch.testing.assert_close(raw_outs[i], case.io[f"blocks_out{i}"], **TOL)
        channels_last = case.io[f"blocks_out{i}"].permute(0, 2, 3, 1)
        expected = torch.nn.functional.layer_norm(channels_last, (channels_last.shape[-1],), eps=1e-6)
        torch.testing.assert_close(normed_outs[i], expected.permute(0, 3, 1, 2), **TOL)


def test_detection_checkpoint_into_a_classifier_says_what_to_do(tmp_path):
    case = golden_case("rala", "det_tiny")
    path = tmp_path / "det.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in case.weights.items()}}, path)
    with pytest.raises(CheckpointError, match="features_only=True"):
        timm.create_model("ravlt_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          **dict(_tiny_kwargs(case.meta), projection=64))


def test_weights_are_model_not_ema(tmp_path):
    config = reduced_config("ravlt_s")
    source = timm.create_model("ravlt_s", **config["kwargs"]).eval()
    ema = timm.create_model("ravlt_s", **config["kwargs"]).eval()
    path = tmp_path / "official.pth"
    write_official_checkpoint(path, {"model": source.state_dict(), "model_ema": ema.state_dict()})
    loaded = timm.create_model("ravlt_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                               **config["kwargs"]).eval()
    x = torch.randn(1, *config["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
        assert not torch.allclose(loaded(x), ema(x))


def test_filter_is_idempotent_on_vitzoo_weights():
    model = timm.create_model("mavit_b", **reduced_config("mavit_b")["kwargs"])
    state = model.state_dict()
    filtered = checkpoint_filter_fn(dict(state), model)
    assert filtered.keys() == state.keys()
    assert all(filtered[k] is state[k] for k in state)


def test_convert_cli_writes_loadable_safetensors(tmp_path):
    """vitzoo convert (tools/convert.py) on an official classification and an mmdet checkpoint."""
    case = golden_case("rala", "tiny")
    official = tmp_path / "RAVLT_tiny.pth"
    write_official_checkpoint(official, {"model": case.weights})
    out = tmp_path / "ravlt_tiny.safetensors"
    kwargs = _tiny_kwargs(case.meta)
    classes = kwargs.pop("num_classes")
    assert main(["convert", "ravlt_t", str(official), str(out), "--num-classes", str(classes),
                 "--model-kwargs", json.dumps(kwargs)]) == 0
    overlay = dict(file=str(out), num_classes=classes)
    model = timm.create_model("ravlt_t", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=classes, **kwargs)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(case.io["input"]), case.io["logits"], **TOL)

    det = golden_case("rala", "det_tiny")
    official = tmp_path / "retinanet_tiny.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in det.weights.items()}}, official)
    out = tmp_path / "ravlt_tiny_det.safetensors"
    backbone_kwargs = dict(_tiny_kwargs(det.meta), projection=0, out_norms=True)
    assert main(["convert", "ravlt_t", str(official), str(out), "--num-classes", "0",
                 "--model-kwargs", json.dumps(backbone_kwargs)]) == 0
    backbone = timm.create_model("ravlt_t", features_only=True, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(out)), **_tiny_kwargs(det.meta)).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(det.io["input"])[3], det.io["out3"], **TOL)


MANIFESTS = [pytest.param(family, prefix, size, det, id=f"{arch}_{size.lower()}{'-det' if det else ''}")
             for family, prefix, arch in (("rala", "RAVLT", "ravlt"), ("mala", "MALA", "mavit"))
             for size in "TSBL" for det in (False, True)]


@pytest.mark.parametrize("family,prefix,size,det", MANIFESTS)
def test_full_size_manifest_converts_exactly(family, prefix, size, det):
    """Every official key maps to a vitzoo key of the same shape, none left over either side, and
    the parameter count is the manifest's (detection: the features_only backbone with out_norms)."""
    manifest = golden_manifest(family, f"det_{size}" if det else f"{prefix}_{size}")
    arch = f"{'ravlt' if family == 'rala' else 'mavit'}_{size.lower()}"
    with torch.device("meta"):
        built = timm.create_model(arch, features_only=det)
        official = {("backbone." if det else "") + k: torch.empty(shape) for k, shape in manifest["keys"]}
    model = built.model if det else built
    converted = checkpoint_filter_fn(official, model)
    own = model.state_dict()
    assert sorted(set(own) - set(converted)) == [], "missing"
    assert sorted(set(converted) - set(own)) == [], "unexpected"
    assert [k for k in own if converted[k].shape != own[k].shape] == []
    assert sum(p.numel() for p in built.parameters()) == manifest["num_params"]


@pytest.mark.parametrize("arch,linear,projection", [("ravlt_b", RalaMixer, 1024), ("mavit_l", MalaMixer, 2560)])
def test_entrypoints_state_the_hybrid_layout(arch, linear, projection):
    with torch.device("meta"):
        model = timm.create_model(arch)
    kinds = [[type(block.attn) for block in stage.blocks] for stage in model.stages]
    assert all(k is linear for k in kinds[0] + kinds[1])
    assert all(k is RalaSoftmaxMixer for k in kinds[2] + kinds[3])
    assert model.proj.out_channels == projection == model.num_features


def test_layout_is_an_argument():
    kwargs = reduced_config("ravlt_t")["kwargs"]
    all_linear = timm.create_model("ravlt_t", mixers="rala", **kwargs)
    assert {type(b.attn) for s in all_linear.stages for b in s.blocks} == {RalaMixer}
    mixed = timm.create_model("mavit_t", mixers=["mala", ["rala", "mala"], "rala_softmax", ["softmax"]], **kwargs)
    assert [type(b.attn).__name__ for b in mixed.stages[1].blocks] == ["RalaMixer", "MalaMixer"]
    assert mixed(torch.randn(1, 3, 45, 61)).shape == (1, 1000)
    with pytest.raises(ValueError, match="stage 1 has 2 blocks but 1 mixers"):
        timm.create_model("ravlt_t", mixers=["rala", ["rala"], "rala", "rala"], **kwargs)
    with pytest.raises(ValueError, match="one value per stage"):
        timm.create_model("ravlt_t", mixers=["rala", "rala"], **kwargs)


def test_features_only_any_size_including_detection_inputs():
    config = reduced_config("mavit_t")
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "projection"}
    backbone = timm.create_model("mavit_t", features_only=True, out_indices=(1, 2, 3), **kwargs).eval()
    names = [name for name, _ in backbone.model.named_parameters()]
    assert not any(name.startswith(("proj", "norm.", "head", "out_norms.0.")) for name in names)
    assert "out_norms.1.weight" in names
    for height, width in [(800, 1333), (45, 61)]:
        with torch.no_grad():
            outs = backbone(torch.randn(1, 3, height, width))
        assert [tuple(o.shape[-2:]) for o in outs] == [(-(-height // s), -(-width // s)) for s in (8, 16, 32)]


def test_forward_intermediates_norm_argument():
    """RAVLT's module after the last stage is the head projection, not a norm: norm=True leaves the
    intermediates as they are (timm: 'apply the norm to compatible intermediates')."""
    model = timm.create_model("ravlt_t", **reduced_config("ravlt_t")["kwargs"]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model.forward_intermediates(x, intermediates_only=True)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
    for a, b in zip(plain, normed):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), output_fmt="NLC")


@pytest.mark.parametrize("arch,top1,checkpoint", [("ravlt_s", 84.4, "RAVLT_S.pth"), ("mavit_b", 85.7, None)])
def test_pretrained_cfg_has_the_real_eval_preprocessing(arch, top1, checkpoint):
    cfg = timm.models.get_pretrained_cfg(arch).to_dict()
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 224, 224)
    facts = paper_facts(arch)
    assert facts.top1 == top1 and paper_facts(f"{arch}.official_in1k") == facts
    if checkpoint:
        assert facts.checkpoint_name == checkpoint
    assert vitzoo.models.model_family(arch) == "ravlt"


@pytest.mark.slow
@pytest.mark.parametrize("arch,official", [("ravlt_t", 2_626_157_056), ("mavit_t", 2_652_419_584)])
def test_fvcore_flops_equal_the_official_measurement(arch, official):
    """fvcore on vitzoo's model gives exactly what it gives on the official code (variants.json)."""
    from vitzoo.benchmark import count_flops

    model = timm.create_model(arch)
    assert round(count_flops(model, (3, 224, 224)) * 1e9) == official
