"""Test-only stand-in for mmcv's compiled ops (``mmcv._ext``), so mmdet 3.x runs on CPU with mmcv-lite.

mmcv-lite ships ``mmcv.ops`` without its compiled extension; ``mmcv.ops`` (and with it every module of
``mmdet.models``) fails to import without one, and compiling mmcv takes ~15 min on two cores
(``../shared/specs/environment.md`` §2). :func:`install` registers a module ``mmcv._ext`` whose ``nms``,
``roi_align_forward`` and ``roi_align_backward`` run torchvision's kernels (what RetinaNet's and the RPN's
post-processing, the RoI extractors and Mask R-CNN's mask targets call); every other op name resolves, so
``mmcv.ops`` imports, but raises ``NotImplementedError`` when called. A real compiled ``mmcv._ext`` wins.
Import this module before anything imports ``mmcv.ops``. Not part of the vitzoo package.
"""

from __future__ import annotations

import importlib
import sys
import types

import torch
import torchvision

__all__ = ["install"]

# mmcv's RoIAlign encodes pool_mode 'max' as 0 and 'avg' as 1; torchvision's kernel averages
_AVG_POOL = 1


def _unavailable(name: str):
    def op(*args, **kwargs):
        raise NotImplementedError(f"mmcv._ext.{name} has no stand-in in the test stub (mmcv-lite has no compiled "
                                  "ops); only nms, roi_align_forward and roi_align_backward run, via torchvision")
    op.__name__ = name
    return op


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5, offset: int = 0) -> torch.Tensor:
    """mmcv's ``nms``: kept indices by decreasing score. ``offset=1`` counts a box's width as x2 - x1 + 1
    (mmdet 1.x boxes), which adding 1 to x2 and y2 reproduces in torchvision's kernel."""
    if offset:
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:4] + offset], dim=1)
    return torchvision.ops.nms(boxes.float(), scores.float(), float(iou_threshold))


def roi_align_forward(input: torch.Tensor, rois: torch.Tensor, output: torch.Tensor, argmax_y: torch.Tensor,
                      argmax_x: torch.Tensor, aligned_height: int = 7, aligned_width: int = 7,
                      spatial_scale: float = 1.0, sampling_ratio: int = 0, pool_mode: int = _AVG_POOL,
                      aligned: bool = True) -> None:
    """mmcv's ``roi_align_forward``: fills the preallocated ``output`` [K, C, h, w]; rois [K, 5] are
    (batch index, x1, y1, x2, y2) in both libraries."""
    if pool_mode != _AVG_POOL:
        raise NotImplementedError("the test stub's roi_align supports pool_mode='avg' only")
    output.copy_(torch.ops.torchvision.roi_align(input, rois, spatial_scale, aligned_height, aligned_width,
                                                 sampling_ratio, aligned))


def roi_align_backward(grad_output: torch.Tensor, rois: torch.Tensor, argmax_y: torch.Tensor,
                       argmax_x: torch.Tensor, grad_input: torch.Tensor, aligned_height: int = 7,
                       aligned_width: int = 7, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                       pool_mode: int = _AVG_POOL, aligned: bool = True) -> None:
    """mmcv's ``roi_align_backward``: fills the preallocated ``grad_input`` [B, C, H, W]."""
    if pool_mode != _AVG_POOL:
        raise NotImplementedError("the test stub's roi_align supports pool_mode='avg' only")
    batch, channels, height, width = grad_input.shape
    grad_input.copy_(torch.ops.torchvision._roi_align_backward(
        grad_output.contiguous(), rois, spatial_scale, aligned_height, aligned_width, batch, channels, height,
        width, sampling_ratio, aligned))


def _module_getattr(name: str):
    # dunder lookups must fail normally: inspect and pickle probe modules in sys.modules for them
    if name.startswith("__"):
        raise AttributeError(name)
    return _unavailable(name)


def install() -> types.ModuleType:
    """Register the stand-in as ``mmcv._ext`` unless a compiled one imports; returns the module in use."""
    if "mmcv._ext" in sys.modules:
        return sys.modules["mmcv._ext"]
    try:
        return importlib.import_module("mmcv._ext")
    except ImportError:
        pass
    module = types.ModuleType("mmcv._ext", __doc__)
    module.nms = nms
    module.roi_align_forward = roi_align_forward
    module.roi_align_backward = roi_align_backward
    module.__getattr__ = _module_getattr
    module.__file__ = __file__
    sys.modules["mmcv._ext"] = module
    return module
