"""Datasets for training and evaluation: checked ImageFolder trees, corrupt-image skipping, per-sample
seeding for exact resume, and the embedded digits dataset (``--dataset vitzoo/digits``), image-caption folders
(``vitzoo.data.captions``) for text-to-image distillation."""

from .digits import DIGITS_DATASET, build_digits_imagefolder, default_digits_dir
from .folder import DatasetError, ImageFolderDataset, check_image_folder, resolve_split
from .sampling import SeededSampler, sample_seed, seeded_rng

__all__ = [
    "DIGITS_DATASET",
    "DatasetError",
    "ImageFolderDataset",
    "SeededSampler",
    "build_digits_imagefolder",
    "check_image_folder",
    "default_digits_dir",
    "resolve_split",
    "sample_seed",
    "seeded_rng",
]
