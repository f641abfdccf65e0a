"""Datasets for training and evaluation (``vitzoo.data.captions``: image-caption folders)."""
