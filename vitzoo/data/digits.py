"""The embedded default dataset: scikit-learn's 8x8 handwritten digits as a 32x32 RGB ImageFolder.

``sklearn.datasets.load_digits()`` ships 1,797 real scans of handwritten digits (10 classes, 16 grey
levels; UCI "Optical Recognition of Handwritten Digits", BSD-3 through scikit-learn) inside the
package, so a training run needs no download. :func:`build_digits_imagefolder` writes them once as
PNGs in the ImageNet layout, upsampled bicubically to 32x32 and replicated to RGB, with a fixed
stratified split (80 % train, 20 % val: 1,437 / 360 images). The folder then behaves like any other
ImageFolder, so the same code path trains the demo and ImageNet.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from .manifest import reusable_build

__all__ = ["DIGITS_DATASET", "build_digits_imagefolder", "default_digits_dir"]

DIGITS_DATASET = "vitzoo/digits"
_MANIFEST = "vitzoo_digits.json"


def default_digits_dir() -> Path:
    """``$VITZOO_DATA_DIR/digits`` or ``~/.cache/vitzoo/digits``."""
    base = os.environ.get("VITZOO_DATA_DIR") or Path.home() / ".cache" / "vitzoo"
    return Path(base) / "digits"


def _expected_manifest(size: int, val_fraction: float, seed: int) -> dict:
    return {"dataset": DIGITS_DATASET, "source": "sklearn.datasets.load_digits", "size": size,
            "val_fraction": val_fraction, "seed": seed}


def build_digits_imagefolder(root: Optional[Union[str, Path]] = None, *, size: int = 32, val_fraction: float = 0.2,
                             seed: int = 0) -> Path:
    """Materialise the digits as ``root/{train,val}/<digit>/<index>.png`` once and return ``root``.

    Writing happens in a temporary folder beside ``root`` that is renamed into place at the end, so an
    interrupted build never leaves a partial dataset. A folder built earlier with the same settings is
    reused; a folder built with other settings, or one that is not a digits folder, is an error.

    Args:
        root: target folder (default :func:`default_digits_dir`).
        size: side of the upsampled images.
        val_fraction: share of each class in the validation split.
        seed: seed of the stratified split.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root) if root is not None else default_digits_dir()
    expected = _expected_manifest(size, val_fraction, seed)
    if reusable_build(root, _MANIFEST, expected, DIGITS_DATASET):
        return root

    digits = load_digits()
    # 16 grey levels -> 0..255, ink bright on a dark background as in the scans
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    indices = np.arange(len(pixels))
    train_idx, val_idx = train_test_split(indices, test_size=val_fraction, stratify=digits.target, random_state=seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        counts = {}
        for split, chosen in (("train", train_idx), ("val", val_idx)):
            for label in range(10):
                (staging / split / str(label)).mkdir(parents=True)
            for index in sorted(chosen):
                label = int(digits.target[index])
                image = Image.fromarray(pixels[index], mode="L").resize((size, size), Image.BICUBIC).convert("RGB")
                image.save(staging / split / str(label) / f"{index:04d}.png")
            counts[split] = len(chosen)
        (staging / _MANIFEST).write_text(json.dumps(dict(expected, images=counts), indent=1) + "\n")
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
