"""The embedded detection dataset ``vitzoo/shapes``: photo-textured disks, squares and triangles pasted at known
boxes and exact masks onto crops of photos that ship inside installed packages, in COCO format.

No download: the photos are scikit-learn's sample images (``china.jpg``, ``flower.jpg``, CC BY 2.0, Flickr) and
matplotlib's ``grace_hopper.jpg`` (US Navy, public domain). The split is by source photo, so no pixel of a
validation image comes from a training photo:

- ``train``: backgrounds and object textures cropped from ``china.jpg`` and ``flower.jpg``;
- ``val``: backgrounds and object textures cropped from ``grace_hopper.jpg``.

Each image is a random crop of a photo resized to ``image_size`` squared, with 1-4 non-overlapping objects (three
categories: ``disk``, ``square``, ``triangle``, the last two rotated at random), each filled with a crop of
another region tinted towards a random colour. A mask is rasterised first and the object is pasted through it,
so the mask is exact; the box is the mask's pixel extent and the area its pixel count. Segmentations are COCO
RLE (pycocotools). :func:`build_shapes_coco` writes the COCO 2017 layout once, from a seed::

    <root>/annotations/instances_train.json   <root>/train/000000.png ...
    <root>/annotations/instances_val.json     <root>/val/000000.png ...
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .manifest import reusable_build

__all__ = ["SHAPES_CATEGORIES", "SHAPES_DATASET", "build_shapes_coco", "default_shapes_dir"]

SHAPES_DATASET = "vitzoo/shapes"
SHAPES_CATEGORIES = ({"id": 1, "name": "disk"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"})
_MANIFEST = "vitzoo_shapes.json"
_SOURCES = {"train": ("sklearn:china.jpg", "sklearn:flower.jpg"), "val": ("matplotlib:grace_hopper.jpg",)}
_TINTS = np.array([(230, 40, 40), (40, 200, 60), (40, 90, 230), (240, 220, 30), (230, 60, 220), (30, 220, 220),
                   (250, 250, 250), (20, 20, 20)], dtype=np.float32)


def default_shapes_dir() -> Path:
    """``$VITZOO_DATA_DIR/shapes`` or ``~/.cache/vitzoo/shapes``."""
    base = os.environ.get("VITZOO_DATA_DIR") or Path.home() / ".cache" / "vitzoo"
    return Path(base) / "shapes"


def _load_photo(source: str) -> np.ndarray:
    from PIL import Image

    package, name = source.split(":")
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name), dtype=np.uint8)
    from matplotlib.cbook import get_sample_data

    with get_sample_data(name) as handle:
        return np.asarray(Image.open(handle).convert("RGB"), dtype=np.uint8)


def _crop(rng: np.random.Generator, photo: np.ndarray, width: int, height: int, min_side: int) -> np.ndarray:
    """A random square-ish region of ``photo`` resized to ``width`` x ``height``."""
    from PIL import Image

    rows, cols = photo.shape[:2]
    side = int(rng.integers(min(min_side, rows, cols), min(rows, cols) + 1))
    top, left = int(rng.integers(0, rows - side + 1)), int(rng.integers(0, cols - side + 1))
    region = Image.fromarray(photo[top:top + side, left:left + side])
    return np.asarray(region.resize((width, height), Image.BILINEAR), dtype=np.float32)


def _shape_mask(rng: np.random.Generator, category: int, side: int) -> np.ndarray:
    """A ``side`` x ``side`` binary mask of one shape (1 disk, 2 square, 3 triangle), rotated at random."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    if category == 1:
        draw.ellipse((0, 0, side - 1, side - 1), fill=1)
    else:
        corners = 4 if category == 2 else 3
        angle = float(rng.uniform(0, 2 * math.pi))
        radius, centre = (side - 1) / 2, (side - 1) / 2
        draw.polygon([(centre + radius * math.cos(angle + 2 * math.pi * k / corners),
                       centre + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)], fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], gap: int = 2) -> bool:
    x, y, s, _ = box
    return any(x < bx + bs + gap and bx < x + s + gap and y < by + bh + gap and by < y + s + gap
               for bx, by, bs, bh in boxes)


def _render(rng: np.random.Generator, photos: list[np.ndarray], size: int, object_sizes: tuple[int, int],
            image_id: int, first_annotation: int) -> tuple[np.ndarray, list[dict]]:
    """One image and its annotations (RLE masks, boxes from the masks' extents)."""
    from pycocotools import mask as mask_util

    image = _crop(rng, photos[int(rng.integers(len(photos)))], size, size, min_side=size // 2)
    placed: list[tuple[int, int, int, int]] = []
    annotations = []
    for _ in range(int(rng.integers(1, 5))):
        category = int(rng.integers(1, len(SHAPES_CATEGORIES) + 1))
        side = int(rng.integers(object_sizes[0], object_sizes[1] + 1))
        for _ in range(20):
            box = (int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1)), side, side)
            if not _overlaps(box, placed):
                break
        else:
            continue
        placed.append(box)
        x, y = box[:2]
        shape = _shape_mask(rng, category, side)
        texture = _crop(rng, photos[int(rng.integers(len(photos)))], side, side, min_side=side)
        tint = _TINTS[int(rng.integers(len(_TINTS)))]
        fill = 0.45 * texture + 0.55 * tint
        window = image[y:y + side, x:x + side]
        window[shape > 0] = fill[shape > 0]
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[y:y + side, x:x + side] = shape
        rows, cols = np.nonzero(mask)
        rle = mask_util.encode(np.asfortranarray(mask))
        annotations.append({
            "id": first_annotation + len(annotations), "image_id": image_id, "category_id": category,
            "bbox": [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
                     int(rows.max() - rows.min() + 1)],
            "area": int(mask.sum()), "iscrowd": 0,
            "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
        })
    return np.clip(np.round(image), 0, 255).astype(np.uint8), annotations


def _write_split(folder: Path, split: str, count: int, seed: int, size: int, object_sizes: tuple[int, int]) -> int:
    from PIL import Image
    from tqdm.auto import tqdm

    photos = [_load_photo(source) for source in _SOURCES[split]]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images, annotations = [], []
    (folder / split).mkdir(parents=True)
    for index in tqdm(range(count), desc=f"vitzoo/shapes {split}", leave=False):
        pixels, objects = _render(rng, photos, size, object_sizes, image_id=index + 1,
                                  first_annotation=len(annotations) + 1)
        name = f"{index:06d}.png"
        Image.fromarray(pixels).save(folder / split / name)
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        annotations += objects
    document = {"info": {"description": f"{SHAPES_DATASET} {split}: shapes on crops of {', '.join(_SOURCES[split])}",
                         "version": "1"},
                "licenses": [], "images": images, "annotations": annotations,
                "categories": [dict(c, supercategory="shape") for c in SHAPES_CATEGORIES]}
    (folder / "annotations").mkdir(exist_ok=True)
    (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(document) + "\n")
    return len(annotations)


def build_shapes_coco(root: Optional[Union[str, Path]] = None, *, train_images: int = 320, val_images: int = 80,
                      image_size: int = 128, object_sizes: tuple[int, int] = (16, 44), seed: int = 0) -> Path:
    """Write the shapes dataset under ``root`` once and return ``root``.

    The folder is built in a temporary sibling and renamed into place, so an interrupted build leaves nothing
    behind; a folder built earlier with the same settings is reused, one built with other settings (or that is
    not a shapes folder) is an error naming both.

    Args:
        root: target folder (default :func:`default_shapes_dir`).
        train_images: images in ``train``.
        val_images: images in ``val``.
        image_size: side of every image.
        object_sizes: smallest and largest object side in pixels.
        seed: the seed every pixel and annotation follows from.
    """
    try:
        import pycocotools  # noqa: F401
    except ImportError as err:
        raise ImportError("vitzoo/shapes writes COCO RLE masks with pycocotools: pip install 'vitzoo[detection]'"
                          ) from err
    low, high = object_sizes
    if not 4 <= low <= high <= image_size // 2:
        raise ValueError(f"object_sizes must satisfy 4 <= smallest <= largest <= image_size / 2, got {object_sizes} "
                         f"for image_size {image_size}")
    root = Path(root) if root is not None else default_shapes_dir()
    expected = {"dataset": SHAPES_DATASET, "train_images": train_images, "val_images": val_images,
                "image_size": image_size, "object_sizes": [low, high], "seed": seed}
    if reusable_build(root, _MANIFEST, expected, SHAPES_DATASET):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        objects = {split: _write_split(staging, split, count, seed, image_size, (low, high))
                   for split, count in (("train", train_images), ("val", val_images))}
        (staging / _MANIFEST).write_text(json.dumps(dict(expected, objects=objects), indent=1) + "\n")
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
