"""Detection on vitzoo backbones: torchvision's Mask R-CNN / Faster R-CNN / RetinaNet / FCOS with an FPN on any
hierarchical vitzoo model (or timm ``features_only`` model), through :func:`build_detector`."""

from .backbone import FeaturePyramidBackbone
from .features import create_features, hierarchical_models
from .torchvision import DETECTORS, build_detector

__all__ = ["DETECTORS", "FeaturePyramidBackbone", "build_detector", "create_features", "hierarchical_models"]
