"""Datasets for training and evaluation: checked ImageFolder trees, corrupt-image skipping, per-sample
seeding for exact resume, and the embedded digits dataset (``--dataset vitzoo/digits``), image-caption folders
(``vitzoo.data.captions``) for text-to-image distillation, COCO-format detection data (``vitzoo.data.coco``,
scored by ``vitzoo.data.coco_eval``) and its embedded default, ``--dataset vitzoo/shapes``."""

from .coco import CocoDetection, detection_collate
from .digits import DIGITS_DATASET, build_digits_imagefolder, default_digits_dir
from .folder import DatasetError, ImageFolderDataset, check_image_folder, resolve_split
from .sampling import SeededSampler, sample_seed, seeded_rng
from .shapes import SHAPES_DATASET, build_shapes_coco, default_shapes_dir

__all__ = [
    "CocoDetection",
    "DIGITS_DATASET",
    "DatasetError",
    "ImageFolderDataset",
    "SHAPES_DATASET",
    "SeededSampler",
    "build_digits_imagefolder",
    "build_shapes_coco",
    "check_image_folder",
    "default_digits_dir",
    "default_shapes_dir",
    "detection_collate",
    "resolve_split",
    "sample_seed",
    "seeded_rng",
]
