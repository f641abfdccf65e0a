"""torchvision detectors (Mask R-CNN, Faster R-CNN, RetinaNet, FCOS) on any vitzoo hierarchical backbone or
timm ``features_only`` model, with torchvision's FPN.

    from vitzoo.detection import build_detector
    model = build_detector("maskrcnn", backbone="ravlt_s", num_classes=81,
                           pretrained_backbone="RAVLT-S.pth", frozen_stages=-1, norm_eval=False)

Levels follow torchvision's ResNet detectors: the R-CNNs take four backbone levels (strides 4-32) and an
extra max-pooled level; RetinaNet and FCOS take three (strides 8-32) and P6/P7 computed from P5
(``LastLevelP6P7`` with equal widths, as torchvision's FCOS and RetinaNet v1). Anchors are set from the
strides of the maps the FPN returns, one entry per map: 8x stride with ratios 0.5/1/2 (the R-CNNs'
32-512 at strides 4-64), 4x stride at three octave scales (RetinaNet's 32-512 at 8-128), the stride
itself with ratio 1 (FCOS's 8-128). Images are normalised with the backbone's own mean and std.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from .backbone import FeaturePyramidBackbone
from .features import create_features

__all__ = ["DETECTORS", "build_detector"]

DETECTORS = ("maskrcnn", "fasterrcnn", "retinanet", "fcos")


def _anchors(kind: str, strides: Sequence[int]) -> AnchorGenerator:
    if kind == "fcos":
        return AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    if kind == "retinanet":
        sizes = tuple(tuple(round(4 * s * 2 ** (octave / 3)) for octave in range(3)) for s in strides)
        return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
    return AnchorGenerator(tuple((8 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))


def _rcnn_parts(kind: str, channels: int, num_classes: int, names: list[str], box_head_dim: int,
                mask_head_channels: Sequence[int]) -> dict[str, nn.Module]:
    """RoI pools, box head and predictor (and the mask branch for Mask R-CNN) as torchvision's defaults are
    built, but for these FPN level names and widths."""
    parts = dict(
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(channels * 7 * 7, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes),
    )
    if kind == "maskrcnn":
        layers = tuple(mask_head_channels)
        parts.update(
            mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
            mask_head=MaskRCNNHeads(channels, layers, dilation=1),
            mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_classes),
        )
    return parts


_CLASSES = {"maskrcnn": MaskRCNN, "fasterrcnn": FasterRCNN, "retinanet": RetinaNet, "fcos": FCOS}


def _check_detector_kwargs(kind: str, kwargs: dict[str, Any]) -> None:
    """ValueError for a keyword the torchvision detector would silently drop: its ``**kwargs`` go to
    ``GeneralizedRCNNTransform``, which swallows unknown names."""
    accepted = {name for name, param in inspect.signature(_CLASSES[kind].__init__).parameters.items()
                if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)} - {"self", "backbone", "num_classes"}
    accepted |= {name for name in inspect.signature(GeneralizedRCNNTransform.__init__).parameters
                 if name not in ("self", "kwargs", "min_size", "max_size", "image_mean", "image_std")}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"torchvision's {_CLASSES[kind].__name__} takes no argument {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(accepted))}")


def build_detector(
        kind: str,
        backbone: str,
        *,
        num_classes: int,
        pretrained_backbone: Optional[Union[str, Path]] = None,
        out_indices: Optional[Sequence[int]] = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        backbone_kwargs: Optional[dict[str, Any]] = None,
        fpn_channels: int = 256,
        box_head_dim: int = 1024,
        mask_head_channels: Sequence[int] = (256, 256, 256, 256),
        **kwargs: Any,
) -> nn.Module:
    """A torchvision detector on ``backbone``'s ``features_only`` maps and an FPN.

    Args:
        kind: ``"maskrcnn"``, ``"fasterrcnn"``, ``"retinanet"`` or ``"fcos"``.
        backbone: a vitzoo hierarchical model (``ravlt_s``, ``mavit_t``, ``l2vit_tiny``, ``inline_swin_tiny``,
            ...) or a timm model with multi-scale ``features_only`` (``resnet50``).
        num_classes: torchvision's convention, the largest label + 1 (label 0 is the R-CNNs' background).
        pretrained_backbone: an official, mmdet (``state_dict`` with ``backbone.`` keys) or vitzoo checkpoint
            file for the backbone; loaded strictly, a key mismatch raises ``CheckpointError``.
        out_indices: backbone levels for the FPN; by default the last four of stride >= 4 for the R-CNNs
            and the last three for RetinaNet / FCOS.
        frozen_stages: -1 for none, 0 the stem, k the stem and stages 0..k-1 (mmdet's meaning).
        norm_eval: keep the backbone's BatchNorms in eval mode during training.
        backbone_kwargs: more ``timm.create_model`` arguments (``drop_path_rate``, ``img_size``, ...).
        fpn_channels: FPN width, also the width of RetinaNet's and FCOS's heads (FCOS's GroupNorm(32) needs a
            multiple of 32).
        box_head_dim: the R-CNN box head's MLP width (torchvision: 1024).
        mask_head_channels: Mask R-CNN's mask head conv widths (torchvision: four of 256).
        **kwargs: the torchvision detector's own arguments (``min_size``, ``max_size``, ``box_score_thresh``,
            ``score_thresh``, ``detections_per_img``, ...); any of the parts built here may be replaced too.
    """
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    _check_detector_kwargs(kind, kwargs)
    rcnn = kind in ("maskrcnn", "fasterrcnn")
    features = create_features(backbone, out_indices if out_indices is not None else (4 if rcnn else 3),
                               pretrained_backbone=pretrained_backbone, backbone_kwargs=backbone_kwargs)
    extra = LastLevelMaxPool() if rcnn else LastLevelP6P7(fpn_channels, fpn_channels)
    body = FeaturePyramidBackbone(features, fpn_channels, extra, frozen_stages=frozen_stages, norm_eval=norm_eval)
    last = body.reductions[-1]
    strides = body.reductions + ((2 * last,) if rcnn else (2 * last, 4 * last))
    cfg = getattr(features, "pretrained_cfg", None) or {}
    parts: dict[str, Any] = dict(image_mean=list(cfg.get("mean", (0.485, 0.456, 0.406))),
                                 image_std=list(cfg.get("std", (0.229, 0.224, 0.225))))
    if rcnn:
        names = [str(i) for i in range(len(body.reductions))]
        parts.update(rpn_anchor_generator=_anchors(kind, strides),
                     **_rcnn_parts(kind, fpn_channels, num_classes, names, box_head_dim, mask_head_channels))
        detector_cls = MaskRCNN if kind == "maskrcnn" else FasterRCNN
        parts.update(kwargs)
        # the predictors above carry num_classes; torchvision refuses both
        return detector_cls(body, num_classes=None, **parts)
    parts.update(anchor_generator=_anchors(kind, strides), **kwargs)
    return (RetinaNet if kind == "retinanet" else FCOS)(body, num_classes=num_classes, **parts)
