"""vitzoo.detection.mmdet: every hierarchical family registered in mmdet 3.x, every config in configs/mmdet
built through the registry (backbone and heads shrunk) and run data_preprocessor -> loss -> backward ->
predict on CPU, with mmcv's compiled ops replaced by tests/_mmcv_ext_stub.py (torchvision nms / roi_align).
Checkpoints: an mmdet detector checkpoint (``state_dict`` with ``backbone.`` / ``neck.`` / heads) and an
official-style classification file load through ``init_cfg`` with no missing or unexpected key, and the
adapter's features equal ``build_detector``'s for the same file.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

pytest.importorskip("mmdet", reason="mmdet 3.x is not installed: pip install 'vitzoo[detection]'")

import _mmcv_ext_stub  # noqa: E402  (before anything imports mmcv.ops)

_mmcv_ext_stub.install()

from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from vitzoo.detection import build_detector, create_features, hierarchical_models  # noqa: E402
from vitzoo.detection import mmdet as vitzoo_mmdet  # noqa: E402
from vitzoo.models import CheckpointError, model_family, reduced_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mmdet"
SHIPPED = sorted(path for path in CONFIGS.glob("*/*.py") if path.parent.name != "_base_")
# the InLine repository publishes no detection configs: its classes run in the shared bases
BASES = ["retinanet_1x", "mask_rcnn_1x", "mask_rcnn_3x"]
# configs that differ only in the backbone size give the same shrunk model: one per family, detector and
# schedule trains, the others load and build
TRAINED = {(path.parent.name, path.stem.split("_")[0], path.stem.split("_")[-2]): path for path in reversed(SHIPPED)}
CLASSES = {cls.__name__: cls for cls in vitzoo_mmdet.MMDET_BACKBONES}
WIDTH = 16


def _reduced(name: str) -> dict:
    kwargs = dict(reduced_config(name)["kwargs"])
    kwargs.pop("projection", None)
    return kwargs


def _shrink(cfg: Config) -> Config:
    """The config's model with the backbone at its family's reduced size, 16-wide neck and heads, 3 classes."""
    model = cfg.model
    backbone = model.backbone
    name = CLASSES[backbone.type].family_prefix + backbone.arch
    out_indices = tuple(backbone.get("out_indices", (0, 1, 2, 3)))
    backbone.update(_reduced(name), init_cfg=None)
    channels = create_features(name, out_indices, backbone_kwargs=_reduced(name)).feature_info.channels()
    model.neck.update(in_channels=list(channels), out_channels=WIDTH)
    if "bbox_head" in model:
        model.bbox_head.update(num_classes=3, in_channels=WIDTH, feat_channels=WIDTH, stacked_convs=1)
    else:
        model.rpn_head.update(in_channels=WIDTH, feat_channels=WIDTH)
        roi = model.roi_head
        roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = WIDTH
        roi.bbox_head.update(in_channels=WIDTH, fc_out_channels=32, num_classes=3)
        roi.mask_head.update(in_channels=WIDTH, conv_out_channels=WIDTH, num_convs=1, num_classes=3)
        model.test_cfg.rpn.update(nms_pre=100, max_per_img=20)
    return cfg


def _batch(masks: bool) -> dict:
    torch.manual_seed(1)
    inputs, samples = [], []
    for height, width in [(96, 128), (70, 97)]:
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             scale_factor=(1.0, 1.0)))
        boxes = torch.tensor([[10.0, 5.0, 60.0, 40.0], [40.0, 30.0, 95.0, 68.0]])
        gt = InstanceData(bboxes=boxes, labels=torch.tensor([0, 2]))
        if masks:
            bitmap = np.zeros((2, height, width), dtype=np.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                bitmap[i, y1:y2, x1:x2] = 1
            gt.masks = BitmapMasks(bitmap, height, width)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _train_and_predict(cfg: Config) -> None:
    torch.manual_seed(0)
    model = MODELS.build(_shrink(cfg).model)
    masks = "roi_head" in cfg.model
    model.train()
    losses = model(**model.data_preprocessor(_batch(masks), True), mode="loss")
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(_batch(masks), False), mode="predict")
    assert len(results) == 2
    for result in results:
        pred = result.pred_instances
        assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.labels) == len(pred.bboxes)
        if masks:
            assert pred.masks.shape[1:] == tuple(result.ori_shape)


def test_every_hierarchical_family_has_an_mmdet_class():
    ours = {model_family(cls.family_prefix + cls.arches()[0]) for cls in vitzoo_mmdet.MMDET_BACKBONES}
    assert ours == {model_family(name) for name in hierarchical_models()}
    assert all(MODELS.get(name) is cls for name, cls in CLASSES.items())
    assert {path.parent.name for path in SHIPPED} == {"ravlt", "mavit", "l2vit"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_shipped_config_trains_and_predicts(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ["vitzoo.detection.mmdet"]
    assert cfg.model.backbone.init_cfg.type == "Pretrained"
    if path in TRAINED.values():
        _train_and_predict(cfg)
    else:
        assert isinstance(MODELS.build(_shrink(cfg).model).backbone, CLASSES[cfg.model.backbone.type])


@pytest.mark.parametrize("kind", ["InLinePVT", "InLineSwin", "InLineCSWin"])
@pytest.mark.parametrize("base", BASES[:2])
def test_inline_backbones_in_the_shared_bases(kind, base):
    cfg = Config.fromfile(str(CONFIGS / "_base_" / f"{base}.py"))
    cfg.model.backbone.update(type=kind, arch="tiny")
    _train_and_predict(cfg)


def _adapter(name: str, **kwargs):
    cls = next(cls for cls in vitzoo_mmdet.MMDET_BACKBONES if name.startswith(cls.family_prefix))
    return MODELS.build(dict(type=cls.__name__, model_name=name, **_reduced(name), **kwargs))


FAMILIES = ["ravlt_t", "mavit_t", "l2vit_tiny", "inline_pvt_tiny", "inline_swin_tiny", "inline_cswin_tiny"]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("prefix", [None, "backbone."])
def test_mmdet_checkpoint_loads_strictly_and_matches_build_detector(name, prefix, tmp_path):
    torch.manual_seed(0)
    source = _adapter(name, out_indices=(1, 2, 3))
    for param in source.parameters():
        param.data.normal_()
    state = {f"backbone.{key}": value for key, value in source.state_dict().items()}
    state.update({"neck.lateral_convs.0.conv.weight": torch.zeros(4, 16, 1, 1),
                  "bbox_head.retina_cls.bias": torch.zeros(3)})
    path = tmp_path / "retinanet.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, path)

    init_cfg = dict(type="Pretrained", checkpoint=str(path), **({"prefix": prefix} if prefix else {}))
    loaded = _adapter(name, out_indices=(1, 2, 3), init_cfg=init_cfg)
    loaded.init_weights()
    assert loaded.state_dict().keys() == source.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())

    detector = build_detector("retinanet", name, num_classes=3, pretrained_backbone=path, out_indices=(1, 2, 3),
                              backbone_kwargs=_reduced(name), fpn_channels=32).eval()
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ours = loaded.eval()(images)
        theirs = detector.backbone.body(images)
    assert len(ours) == 3
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ravlt_t", "l2vit_tiny", "inline_swin_tiny"])
def test_classification_checkpoint_loads_into_the_adapter(name, tmp_path):
    torch.manual_seed(0)
    classifier = timm.create_model(name, **_reduced(name))
    path = tmp_path / "in1k.pth"
    torch.save({"model": classifier.state_dict(), "epoch": 300}, path)
    adapter = _adapter(name, pretrained=str(path))
    adapter.init_weights()
    assert torch.equal(adapter.state_dict()["stages.1.blocks.0.norm2.weight"],
                       classifier.state_dict()["stages.1.blocks.0.norm2.weight"])


def test_frozen_stages_and_norm_eval():
    adapter = _adapter("ravlt_t", frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in adapter.stem.parameters())
    assert not any(p.requires_grad for p in adapter.stages[0].parameters())
    assert all(p.requires_grad for p in adapter.stages[1].parameters())
    assert not adapter.stem.training and not adapter.stages[0].training and adapter.stages[1].training
    norms = [m for m in adapter.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="arch= .*'t'.*model_name="):
        MODELS.build(dict(type="RAVLT"))
    with pytest.raises(ValueError, match="unknown L2ViT arch 't'"):
        MODELS.build(dict(type="L2ViT", arch="t"))
    with pytest.raises(ValueError, match="builds the vitzoo ravlt_"):
        MODELS.build(dict(type="RAVLT", model_name="mavit_t"))
    with pytest.raises(ValueError, match="type='Pretrained'"):
        MODELS.build(dict(type="RAVLT", arch="t", init_cfg=dict(type="Kaiming")))
    with pytest.raises(ValueError, match="prefix 'model.backbone.'"):
        MODELS.build(dict(type="RAVLT", arch="t", init_cfg=dict(type="Pretrained", checkpoint="x.pth",
                                                               prefix="model.backbone.")))
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"backbone.stages.9.extra.weight": torch.zeros(1)}}, bad)
    adapter = _adapter("ravlt_t", init_cfg=dict(type="Pretrained", checkpoint=str(bad)))
    with pytest.raises(CheckpointError, match="stages.9.extra.weight"):
        adapter.init_weights()


def test_missing_mmdet_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmdet.registry", None)
    monkeypatch.delitem(sys.modules, "vitzoo.detection.mmdet")
    with pytest.raises(ImportError, match=r"pip install 'vitzoo\[detection\]'"):
        importlib.import_module("vitzoo.detection.mmdet")


def _official_case(family: str):
    """(vitzoo model, its constructor kwargs, golden case) of an official mmdet detection backbone."""
    from conftest import golden_case

    if family == "l2vit":
        return "l2vit_tiny", dict(depths=(2, 2, 2, 2), dims=(16, 32, 48, 64), num_heads=(2, 2, 3, 4)), \
            golden_case("l2vit", "l2vit_mmdet_tiny_cfg")
    case = golden_case(family, "det_tiny")
    kw = case.meta["kwargs"]
    kwargs = dict(embed_dims=kw["embed_dims"], depths=kw["depths"], num_heads=kw["num_heads"],
                  mlp_ratios=kw["mlp_ratios"], init_values=kw["layer_init_values"], in_chans=kw["in_chans"])
    return {"rala": "ravlt_t", "mala": "mavit_t"}[family], kwargs, case


@pytest.mark.parametrize("family", ["rala", "mala", "l2vit"])
def test_official_mmdet_checkpoint_into_both_adapters_gives_the_official_features(family, tmp_path):
    """A detector checkpoint with the official backbone's own key names (golden weights of the official mmdet
    backbone, plus neck / head keys) loads strictly into the mmdet adapter (``init_cfg``, ``prefix='backbone.'``)
    and into ``build_detector``'s backbone: both hold the same tensors, and the features net gives the official
    backbone's four outputs. (The golden L²ViT input is 70x90; both adapters pad to 32 first, as mmdet's data
    preprocessor and torchvision's transform do, so the net is compared before that padding.)"""
    name, kwargs, case = _official_case(family)
    state = {f"backbone.{k}": v for k, v in case.weights.items()}
    state.update({"neck.lateral_convs.0.conv.weight": torch.zeros(4, 16, 1, 1),
                  "rpn_head.rpn_cls.bias": torch.zeros(3)})
    path = tmp_path / "mask_rcnn_official_1x_coco.pth"
    torch.save({"meta": {"mmdet_version": "2.23.0", "epoch": 12}, "state_dict": state}, path)
    cls = next(cls for cls in vitzoo_mmdet.MMDET_BACKBONES if name.startswith(cls.family_prefix))
    adapter = MODELS.build(dict(type=cls.__name__, model_name=name, out_indices=(0, 1, 2, 3), **kwargs,
                                init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone.")))
    adapter.init_weights()
    detector = build_detector("maskrcnn", name, num_classes=3, pretrained_backbone=path, out_indices=(0, 1, 2, 3),
                              backbone_kwargs=kwargs, fpn_channels=32).eval()
    net = detector.backbone.body
    theirs = adapter.state_dict()
    assert theirs.keys() == net.model.state_dict().keys()
    assert all(torch.equal(theirs[k], v) for k, v in net.model.state_dict().items())
    with torch.no_grad():
        maps = net(case.io["input"])
    assert len(maps) == 4
    for i, out in enumerate(maps):
        torch.testing.assert_close(out, case.io[f"out{i}"], atol=1e-4, rtol=1e-4)
