"""A timm ``features_only`` backbone with a feature pyramid, in the form torchvision's detectors take.

:class:`FeaturePyramidBackbone` wraps ``timm.create_model(name, features_only=True, out_indices=...)`` (any
hierarchical vitzoo family, or any timm model with multi-scale features) and torchvision's
``FeaturePyramidNetwork``, and adds the detection behaviour of the official mmdet backbones:

- **Padding.** Inputs are zero-padded on the right and bottom to a multiple of the backbone's largest
  stride (32; InLine's models refuse anything else) and each feature map is cropped back to
  ``ceil(size / stride)``, so any image size works and the maps line up with the unpadded image.
  torchvision's ``GeneralizedRCNNTransform``, which Mask/Faster R-CNN, RetinaNet and FCOS all use, already
  pads each batch to ``size_divisible=32``; the padding here covers a backbone called on its own or a
  transform built with another ``size_divisible``.
- **Frozen stages** (mmdet's ``frozen_stages``): -1 freezes nothing, 0 the stem, k the stem and stages
  0..k-1 together with their output norms; frozen parameters get ``requires_grad=False`` and the frozen
  modules stay in eval mode through ``train()``.
- **norm_eval**: every BatchNorm (``SyncBatchNorm`` included, which the official RAVLT/MAViT ``norm_eval``
  missed) stays in eval mode through ``train()``, so fine-tuning with small batches keeps the pretrained
  statistics; its affine parameters still train, as in mmdet.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from ..models._hierarchical import HierarchicalBackbone

__all__ = ["FeaturePyramidBackbone", "backbone_parts", "freeze_stages", "hold_eval", "pad_multiple",
           "padded_features"]


def backbone_parts(features: nn.Module) -> list[list[nn.Module]]:
    """The stem and the stages of a ``features_only`` model, in order, as the modules each consists of.

    A vitzoo hierarchical model gives ``[stem], [stages.0, out_norms.0], ...``. A timm model whose features
    net is a module list (ResNet-style ``FeatureListNet``) is split at the modules of its stride-4-and-finer
    levels: everything before the first level of stride >= 4 is the stem, and each such level starts a stage.
    Other feature wrappers (hooks) raise ``ValueError``: their stages cannot be told apart generically.
    """
    model = getattr(features, "model", None)
    if isinstance(model, HierarchicalBackbone):
        norms = model.out_norms if model.out_norms is not None else [None] * len(model.stages)
        return [[model.stem]] + [[stage] + ([norm] if norm is not None else []) for stage, norm in
                                 zip(model.stages, norms)]
    if not isinstance(features, nn.ModuleDict):
        raise ValueError(f"frozen_stages needs a vitzoo hierarchical backbone or a timm features_only net that is a "
                         f"module list (e.g. ResNet); got {type(features).__name__}")
    starts = [info["module"].replace(".", "_") for info in features.feature_info.info if info["reduction"] >= 4]
    parts: list[list[nn.Module]] = [[]]
    for name, module in features.items():
        if name in starts:
            parts.append([])
        parts[-1].append(module)
    return parts


def freeze_stages(features: nn.Module, frozen_stages: int) -> list[nn.Module]:
    """mmdet's ``frozen_stages``: -1 freezes nothing, 0 the stem, k the stem and stages 0..k-1 (with their
    output norms). Their parameters get ``requires_grad=False``; the frozen modules are returned so the
    owner's ``train()`` can keep them in eval mode (:func:`hold_eval`)."""
    if frozen_stages < 0:
        return []
    parts = backbone_parts(features)
    if frozen_stages >= len(parts):
        raise ValueError(f"frozen_stages={frozen_stages} but the backbone has a stem and {len(parts) - 1} stages "
                         f"(use -1 .. {len(parts) - 1})")
    frozen = [module for part in parts[:frozen_stages + 1] for module in part]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def hold_eval(features: nn.Module, frozen: list[nn.Module], norm_eval: bool, mode: bool) -> None:
    """After ``train(mode)``: in training mode, put the frozen modules (and, with ``norm_eval``, every
    BatchNorm of ``features``, ``SyncBatchNorm`` included) back in eval mode."""
    if not mode:
        return
    for module in frozen:
        module.eval()
    if norm_eval:
        for module in features.modules():
            if isinstance(module, _BatchNorm):
                module.eval()


def pad_multiple(features: nn.Module) -> int:
    """The multiple inputs are padded to: the largest stride, or the model's own input multiple (32 for
    InLine) when larger."""
    inner = getattr(features, "model", None)
    return max(max(features.feature_info.reduction()), getattr(inner, "input_multiple", 1))


def padded_features(features: nn.Module, images: torch.Tensor, size_multiple: int,
                    reductions: tuple[int, ...]) -> list[torch.Tensor]:
    """``features(images)`` with the images zero-padded right and bottom to ``size_multiple`` and each map
    [B, C, H_i, W_i] cropped back to ``ceil(size / reduction)``, so the maps line up with the unpadded image."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % size_multiple, -width % size_multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    maps = features(images)
    if pad_h or pad_w:
        maps = [fmap[..., :-(-height // r), :-(-width // r)] for fmap, r in zip(maps, reductions)]
    return list(maps)


class FeaturePyramidBackbone(nn.Module):
    """``features_only`` backbone -> FPN: images [B, C, H, W] -> ``OrderedDict`` of maps with ``out_channels``.

    Args:
        features: a timm ``features_only`` model returning a list of NCHW maps of increasing stride.
        out_channels: FPN width (torchvision's detectors read ``backbone.out_channels``).
        extra_blocks: torchvision's extra FPN level (``LastLevelMaxPool`` for the R-CNNs, ``LastLevelP6P7``
            for RetinaNet / FCOS).
        frozen_stages: -1 for none, else the stem and stages ``0..frozen_stages-1`` (mmdet's meaning).
        norm_eval: keep every BatchNorm in eval mode in training.
        size_multiple: pad inputs to this multiple; the largest stride of the backbone when None.
    """

    def __init__(self, features: nn.Module, out_channels: int, extra_blocks: Optional[ExtraFPNBlock] = None, *,
                 frozen_stages: int = -1, norm_eval: bool = False, size_multiple: Optional[int] = None):
        super().__init__()
        self.body = features
        self.reductions = tuple(features.feature_info.reduction())
        self.size_multiple = size_multiple or pad_multiple(features)
        self.fpn = FeaturePyramidNetwork(list(features.feature_info.channels()), out_channels, extra_blocks)
        self.out_channels = out_channels
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        self._frozen = freeze_stages(self.body, frozen_stages)
        self.train()

    def train(self, mode: bool = True) -> "FeaturePyramidBackbone":
        """``nn.Module.train``, then frozen parts (and, with ``norm_eval``, every BatchNorm) back to eval."""
        super().train(mode)
        hold_eval(self.body, self._frozen, self.norm_eval, mode)
        return self

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = padded_features(self.body, images, self.size_multiple, self.reductions)
        return self.fpn(OrderedDict((str(i), fmap) for i, fmap in enumerate(maps)))
