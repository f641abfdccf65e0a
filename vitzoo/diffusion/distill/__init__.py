"""Distillation objectives of the diffusion families, one module each (``lit.py``, ``linfusion.py``)."""

from .linfusion import LinFusionDistiller, linfusion_distillation_loss, record_outputs
from .lit import LiTDistillationLoss

__all__ = ["LiTDistillationLoss", "LinFusionDistiller", "linfusion_distillation_loss", "record_outputs"]
