"""Patch-level AI-generated-image detection: Panoptic Patch Learning (PPL, arXiv:2504.01396, ICLR 2026).

The model side: :class:`PatchDetector` (any patch-token backbone, an image head, an optional patch probe,
peft LoRA or partial fine-tuning), the losses (:func:`ppl_loss`), the patch mixing of training
(:func:`apply_rpr`), attribution maps and tiled inference, and the evaluation metrics. The data side:
GenImage-style folders (:class:`AigiFolderDataset`) read by one robust reader (:func:`read_image_rgb`); the
reconstruction builders (:mod:`.reconstruct`) and the embedded ``vitzoo/aigi-photos`` set (:mod:`.embedded`) load
diffusers, so they are imported from their modules. The facts and the
choices where the paper is silent are in ``../shared/specs/ppl.md`` and in each module's docstring.
"""

from .attribution import LargePrediction, cde_map, predict_large, probe_map
from .data import AigiFolderDataset, AigiItem, AigiSample, scan_aigi_folder
from .detector import DEFAULT_LORA_TARGETS, DetectorOutput, PatchDetector, resolve_lora_targets
from .imageio import ImageRead, read_image_rgb
from .losses import patch_contrastive_loss, patch_infonce_loss, ppl_loss
from .metrics import GeneratorTable, binary_metrics, per_generator_metrics
from .rpr import (RPRBatch, apply_rpr, num_mixed_patches, random_patch_mask, random_patch_replacement,
                  randomized_patch_reconstruction)

__all__ = [
    "AigiFolderDataset", "AigiItem", "AigiSample", "ImageRead", "read_image_rgb", "scan_aigi_folder",
    "DEFAULT_LORA_TARGETS", "DetectorOutput", "GeneratorTable", "LargePrediction", "PatchDetector", "RPRBatch",
    "apply_rpr", "binary_metrics", "cde_map", "num_mixed_patches", "patch_contrastive_loss",
    "patch_infonce_loss", "per_generator_metrics", "ppl_loss", "predict_large", "probe_map",
    "random_patch_mask", "random_patch_replacement", "randomized_patch_reconstruction", "resolve_lora_targets",
]
