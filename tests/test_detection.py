"""vitzoo.detection: torchvision Mask R-CNN / Faster R-CNN / RetinaNet / FCOS on every hierarchical family
(reduced configs), frozen stages, norm_eval, padding, bad backbones and pretrained_backbone files.

The official detection backbones' features (RAVLT, MAViT, L²ViT golden data) are compared through
``features_only`` in tests/test_ravlt.py and tests/test_l2vit.py; the detectors here wrap that same net.
"""

from __future__ import annotations

import pytest
import torch

from vitzoo.detection import FeaturePyramidBackbone, build_detector, create_features, hierarchical_models
from vitzoo.models import CheckpointError, model_family, reduced_config

FAMILIES = ["ravlt_t", "mavit_t", "l2vit_tiny", "inline_pvt_tiny", "inline_swin_tiny", "inline_cswin_tiny"]
SMALL = dict(fpn_channels=32, box_head_dim=32, mask_head_channels=(16,), min_size=64, max_size=128)
# untrained heads score low: keep every candidate so the output structure is visible
KEEP_ALL = dict(maskrcnn=dict(box_score_thresh=0.0, box_detections_per_img=5),
                fasterrcnn=dict(box_score_thresh=0.0, box_detections_per_img=5),
                retinanet=dict(score_thresh=0.0, detections_per_img=5),
                fcos=dict(score_thresh=0.0, detections_per_img=5))
SIZES = [(70, 97), (64, 64)]


def _kwargs(name: str) -> dict:
    if name.startswith("resnet"):
        return {}
    kwargs = dict(reduced_config(name)["kwargs"])
    kwargs.pop("projection", None)
    return kwargs


def _detector(kind: str, name: str, **kwargs):
    torch.manual_seed(0)
    return build_detector(kind, name, num_classes=3, backbone_kwargs=_kwargs(name), **SMALL, **KEEP_ALL[kind],
                          **kwargs)


def _batch(kind: str):
    torch.manual_seed(1)
    images = [torch.rand(3, *size) for size in SIZES]
    masks = torch.zeros(2, *SIZES[0], dtype=torch.uint8)
    masks[0, 5:40, 10:60] = 1
    masks[1, 30:68, 50:95] = 1
    targets = [dict(boxes=torch.tensor([[10.0, 5.0, 60.0, 40.0], [50.0, 30.0, 95.0, 68.0]]),
                    labels=torch.tensor([1, 2])),
               dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64))]
    if kind == "maskrcnn":
        targets[0]["masks"] = masks
        targets[1]["masks"] = torch.zeros(0, *SIZES[1], dtype=torch.uint8)
    return images, targets


def _backbone_model(detector):
    """The module whose state dict is the backbone's own (a vitzoo model, or timm's features net)."""
    body = detector.backbone.body
    return getattr(body, "model", body)


def _train_step(detector, kind):
    images, targets = _batch(kind)
    detector.train()
    losses = detector(images, targets)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.1)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return losses


def test_every_hierarchical_family_is_covered():
    assert {model_family(name) for name in hierarchical_models()} == {model_family(name) for name in FAMILIES}


CASES = [pytest.param(kind, name, id=f"{kind}-{name}") for name in FAMILIES + ["resnet18"]
         for kind in ("maskrcnn", "retinanet", "fcos")] + [pytest.param("fasterrcnn", "ravlt_t", id="fasterrcnn")]


@pytest.mark.parametrize("kind,name", CASES)
def test_train_step_and_predict(kind, name):
    detector = _detector(kind, name)
    assert detector.backbone.out_channels == 32
    stem = next(p for p in _backbone_model(detector).parameters())
    before = stem.detach().clone()
    losses = _train_step(detector, kind)
    assert len(losses) >= 2
    assert not torch.equal(before, stem.detach()), "the optimizer step did not reach the backbone"
    detector.eval()
    images, _ = _batch(kind)
    with torch.no_grad():
        predictions = detector(images)
    assert len(predictions) == 2
    for prediction, (height, width) in zip(predictions, SIZES):
        count = len(prediction["boxes"])
        assert 0 < count <= 5 and prediction["boxes"].shape == (count, 4)
        assert prediction["scores"].shape == prediction["labels"].shape == (count,)
        assert prediction["boxes"][:, 2].max() <= width and prediction["boxes"][:, 3].max() <= height
        if kind == "maskrcnn":
            assert prediction["masks"].shape == (count, 1, height, width)


@pytest.mark.parametrize("kind,levels", [("maskrcnn", ["0", "1", "2", "3", "pool"]),
                                         ("retinanet", ["0", "1", "2", "p6", "p7"])])
def test_levels_and_anchors_match(kind, levels):
    detector = _detector(kind, "l2vit_tiny")
    assert detector.backbone.reductions == ((4, 8, 16, 32) if kind == "maskrcnn" else (8, 16, 32))
    with torch.no_grad():
        maps = detector.backbone(torch.rand(1, 3, 64, 96))
    assert list(maps) == levels
    generator = detector.rpn.anchor_generator if kind == "maskrcnn" else detector.anchor_generator
    assert len(generator.sizes) == len(levels)
    expected = ((32,), (64,), (128,), (256,), (512,)) if kind == "maskrcnn" else \
        tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
    assert generator.sizes == expected


@pytest.mark.parametrize("name", ["inline_pvt_tiny", "ravlt_t"])
def test_backbone_pads_any_size_and_crops_back(name):
    """InLine's models take multiples of 32 only; the wrapper pads and crops to ceil(size / stride)."""
    features = create_features(name, (0, 1, 2, 3), backbone_kwargs=_kwargs(name))
    backbone = FeaturePyramidBackbone(features, 32).eval()
    with torch.no_grad():
        maps = backbone(torch.rand(1, 3, 70, 97))
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(18, 25), (9, 13), (5, 7), (3, 4)]


@pytest.mark.parametrize("name,frozen_names", [("ravlt_t", ["stem", "stages.0", "out_norms.0"]),
                                               ("resnet18", ["conv1", "bn1", "layer1"])])
def test_frozen_stages(name, frozen_names):
    detector = _detector("retinanet" if name == "resnet18" else "maskrcnn", name, frozen_stages=1,
                         out_indices=(1, 2, 3, 4) if name == "resnet18" else None)
    model = _backbone_model(detector)
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(tuple(frozen_names))}
    assert frozen and all(not p.requires_grad for k, p in model.named_parameters() if k in frozen)
    assert all(p.requires_grad for k, p in model.named_parameters() if k not in frozen)
    _train_step(detector, "retinanet" if name == "resnet18" else "maskrcnn")
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in frozen.items())
    detector.train()
    modules = dict(model.named_modules())
    assert all(not modules[n].training for n in frozen_names)
    assert modules["stages.1" if name == "ravlt_t" else "layer2"].training


def test_frozen_stages_out_of_range():
    with pytest.raises(ValueError, match="frozen_stages=5 but the backbone has a stem and 4 stages"):
        _detector("retinanet", "ravlt_t", frozen_stages=5)


@pytest.mark.parametrize("name", ["ravlt_t", "resnet18"])
def test_norm_eval_keeps_batchnorm_statistics(name):
    detector = _detector("retinanet", name, norm_eval=True)
    norms = [m for m in _backbone_model(detector).modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    stats = [m.running_mean.clone() for m in norms]
    _train_step(detector, "retinanet")
    detector.train()
    assert all(not m.training for m in norms)
    assert all(torch.equal(m.running_mean, s) for m, s in zip(norms, stats))
    assert any(p.requires_grad for m in norms for p in m.parameters())
    trained = _detector("retinanet", name)
    trained.train()
    assert all(m.training for m in _backbone_model(trained).modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("name,match", [
    ("vzvit_tiny", "no multi-scale features_only"),
    ("inline_deit_tiny", "no multi-scale features_only"),
    ("not_a_model", "unknown backbone 'not_a_model'"),
])
def test_bad_backbone_names_the_families(name, match):
    with pytest.raises(ValueError, match=match) as info:
        build_detector("retinanet", name, num_classes=3)
    assert all(pattern in str(info.value) for pattern in ("ravlt_*", "mavit_*", "l2vit_*", "inline_swin_*",
                                                          "inline_pvt_*", "inline_cswin_*", "resnet50"))


def test_unknown_kind():
    with pytest.raises(ValueError, match="choose one of maskrcnn, fasterrcnn, retinanet, fcos"):
        build_detector("yolo", "ravlt_t", num_classes=3)


@pytest.mark.parametrize("kind", ["maskrcnn", "retinanet"])
def test_detector_keywords_torchvision_would_drop_are_refused(kind):
    """torchvision's detectors pass unknown keywords to their transform, which ignores them."""
    with pytest.raises(ValueError, match="takes no argument box_thresh_typo; it takes .*min_size"):
        build_detector(kind, "ravlt_t", num_classes=3, box_thresh_typo=0.1)


ROUND_TRIP = [pytest.param(kind, name, layout, id=f"{kind}-{name}-{layout}")
              for name in FAMILIES + ["resnet18"] for kind in ("retinanet",) for layout in ("mmdet", "plain")]
ROUND_TRIP += [pytest.param("maskrcnn", "l2vit_tiny", "mmdet", id="maskrcnn-l2vit_tiny-mmdet")]


@pytest.mark.parametrize("kind,name,layout", ROUND_TRIP)
def test_pretrained_backbone_round_trip(kind, name, layout, tmp_path):
    source = _detector(kind, name)
    for param in _backbone_model(source).parameters():
        param.data.normal_()
    state = _backbone_model(source).state_dict()
    path = tmp_path / "backbone.pth"
    if layout == "mmdet":
        weights = {f"backbone.{k}": v for k, v in state.items()}
        weights.update({"neck.lateral_convs.0.conv.weight": torch.zeros(4, 16, 1, 1),
                        "rpn_head.rpn_cls.bias": torch.zeros(3), "bbox_head.retina_cls.bias": torch.zeros(3)})
        torch.save({"meta": {"epoch": 12}, "state_dict": weights, "optimizer": {"state": {}}}, path)
    else:
        torch.save(state, path)
    loaded = _backbone_model(_detector(kind, name, pretrained_backbone=path)).state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_pretrained_backbone_mismatch_is_named(tmp_path):
    state = _backbone_model(_detector("retinanet", "ravlt_t")).state_dict()
    state["stages.9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointError, match="unexpected keys .*stages.9.extra.weight"):
        _detector("retinanet", "ravlt_t", pretrained_backbone=path)
