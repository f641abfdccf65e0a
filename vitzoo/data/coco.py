"""COCO-format detection data (an instances JSON and an image folder) as torchvision detection targets.

:class:`CocoDetection` reads the JSON once, checks it and cleans the boxes before any model is built:

- category ids are mapped to contiguous labels ``1..K`` in the order of their ids (0 is torchvision's
  background); an annotation whose ``category_id`` is not among the JSON's categories is a
  :class:`~vitzoo.data.DatasetError` naming the file, the annotation and the id;
- boxes (COCO ``[x, y, width, height]``) are clipped to the image; a box left with no area (degenerate,
  or entirely outside the image) is dropped. Both are counted and reported once, in one log line;
- crowd annotations (``iscrowd: 1``) are not training targets (as in torchvision's reference scripts);
  they stay in :meth:`CocoDetection.ground_truth`, where COCOeval ignores matches to them;
- an image without annotations gives empty targets (``boxes`` of shape [0, 4]);
- images of any size and mode are read as RGB (greyscale, RGBA, palette and 16-bit files included).

Items are ``(image [3, H, W] float in [0, 1], target)`` with ``target`` holding ``boxes`` (xyxy, float),
``labels`` (int64), ``masks`` ([N, H, W] uint8, when ``masks=True``) and ``image_id``. Training items take
``(index, sample_seed)`` pairs (:class:`~vitzoo.data.SeededSampler`): the random horizontal flip of
``flip=True`` is then a function of the seed only, which exact resume needs.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from .folder import DatasetError
from .sampling import seeded_rng

__all__ = ["CocoDetection", "detection_collate"]

_logger = logging.getLogger("vitzoo.data")


def detection_collate(batch: list) -> tuple[list, list]:
    """Images and targets as two lists: torchvision's detectors take images of different sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist (expected a COCO instances JSON)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON: {err}") from err
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(document.get(key), list)]
    if not isinstance(document, dict) or missing:
        raise DatasetError(f"{path} is not a COCO instances file: expected lists 'images', 'annotations' and "
                           f"'categories', missing {missing}")
    return document


class CocoDetection(torch.utils.data.Dataset):
    """A COCO instances JSON and its image folder.

    Args:
        image_dir: folder the images' ``file_name`` entries are relative to.
        annotation_file: the instances JSON.
        masks: decode segmentations into ``target["masks"]`` (an annotation without one gets its box).
        flip: random horizontal flip (probability 0.5) of image, boxes and masks; needs ``(index, seed)`` items.
    """

    def __init__(self, image_dir: Union[str, Path], annotation_file: Union[str, Path], *, masks: bool = True,
                 flip: bool = False):
        self.image_dir, self.annotation_file = Path(image_dir), Path(annotation_file)
        self.masks, self.flip = masks, flip
        document = _read_json(self.annotation_file)
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder {self.image_dir} does not exist (images of {self.annotation_file})")
        self.categories = sorted(document["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in self.categories]
        self.label_of = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        self.class_names = [str(c.get("name", c["id"])) for c in self.categories]
        self.images = sorted(document["images"], key=lambda image: image["id"])
        self.counts = {"clipped": 0, "dropped": 0, "crowd": 0, "without_mask": 0}
        by_image: dict[int, list[dict]] = {int(image["id"]): [] for image in self.images}
        for annotation in document["annotations"]:
            self._check(annotation, by_image)
            by_image[int(annotation["image_id"])].append(annotation)
        self.targets = [self._clean(image, by_image[int(image["id"])]) for image in self.images]
        self._report()

    def _check(self, annotation: dict, by_image: dict[int, list]) -> None:
        where = f"{self.annotation_file}: annotation {annotation.get('id')}"
        if annotation.get("category_id") not in self.label_of:
            raise DatasetError(f"{where} has category_id {annotation.get('category_id')!r}, which is not among the "
                               f"file's categories {self.category_ids}")
        if annotation.get("image_id") not in by_image:
            raise DatasetError(f"{where} refers to image_id {annotation.get('image_id')!r}, which is not in 'images'")
        box = annotation.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise DatasetError(f"{where} has bbox {box!r}; expected [x, y, width, height]")

    def _size(self, image: dict) -> tuple[int, int]:
        """(height, width) from the JSON, or from the file's header when the JSON leaves them out."""
        if "width" in image and "height" in image:
            return int(image["height"]), int(image["width"])
        from PIL import Image

        with Image.open(self.image_dir / image["file_name"]) as handle:
            image["width"], image["height"] = handle.size
        return int(image["height"]), int(image["width"])

    def _clean(self, image: dict, annotations: list[dict]) -> dict[str, Any]:
        """Boxes clipped to the image (xyxy), degenerate ones dropped, crowds set aside; each counted."""
        height, width = self._size(image)
        kept = []
        for annotation in annotations:
            x, y, w, h = (float(v) for v in annotation["bbox"])
            clipped = (min(max(x, 0.0), width), min(max(y, 0.0), height),
                       min(max(x + w, 0.0), width), min(max(y + h, 0.0), height))
            if clipped[2] - clipped[0] < 1.0 or clipped[3] - clipped[1] < 1.0:
                self.counts["dropped"] += 1
                continue
            if clipped != (x, y, x + w, y + h):
                self.counts["clipped"] += 1
            if annotation.get("iscrowd", 0):
                self.counts["crowd"] += 1
            elif self.masks and not annotation.get("segmentation"):
                self.counts["without_mask"] += 1
            kept.append((clipped, annotation))
        return {"size": (height, width), "annotations": kept}

    def _report(self) -> None:
        counts = {k: v for k, v in self.counts.items() if v}
        if counts:
            _logger.warning("%s: %s", self.annotation_file, ", ".join(
                f"{v} {k.replace('_', ' ')} {'box' if v == 1 else 'boxes'}" for k, v in counts.items()))

    def __len__(self) -> int:
        return len(self.images)

    def ground_truth(self) -> dict[str, Any]:
        """The cleaned annotations as a COCO document (clipped boxes, dropped ones left out), for COCOeval."""
        annotations = []
        for target in self.targets:
            for (x0, y0, x1, y1), annotation in target["annotations"]:
                area = annotation.get("area") or (x1 - x0) * (y1 - y0)
                annotations.append(dict(annotation, bbox=[x0, y0, x1 - x0, y1 - y0], area=float(area),
                                        iscrowd=int(annotation.get("iscrowd", 0))))
        return {"images": self.images, "annotations": annotations, "categories": self.categories}

    def _mask(self, annotation: dict, box: tuple, height: int, width: int) -> np.ndarray:
        segmentation = annotation.get("segmentation")
        if not segmentation:
            mask = np.zeros((height, width), dtype=np.uint8)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            mask[y0:y1, x0:x1] = 1
            return mask
        from pycocotools import mask as mask_util

        if isinstance(segmentation, list):
            rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation, counts=segmentation["counts"].encode("ascii")
                       if isinstance(segmentation["counts"], str) else segmentation["counts"])
        return mask_util.decode(rle)

    def _read(self, index: int):
        from PIL import Image

        entry = self.images[index]
        path = self.image_dir / entry["file_name"]
        if not path.is_file():
            raise DatasetError(f"image {path} of {self.annotation_file} does not exist")
        with Image.open(path) as handle:
            # 'I;16' / 'I' files: scale to 8 bits before RGB (PIL would clip them)
            if handle.mode in ("I", "I;16", "I;16B", "F"):
                values = np.asarray(handle, dtype=np.float32)
                handle = Image.fromarray(np.uint8(255 * values / max(float(values.max()), 1.0)))
            rgb = np.array(handle.convert("RGB"), dtype=np.uint8)
        height, width = self.targets[index]["size"]
        if rgb.shape[:2] != (height, width):
            raise DatasetError(f"image {path} is {rgb.shape[1]}x{rgb.shape[0]}, but {self.annotation_file} says "
                               f"{width}x{height}")
        return rgb

    def __getitem__(self, item: Union[int, tuple[int, Optional[int]]]):
        index, seed = item if isinstance(item, tuple) else (item, None)
        rgb = self._read(index)
        height, width = rgb.shape[:2]
        pairs = [(box, a) for box, a in self.targets[index]["annotations"] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([box for box, _ in pairs], dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": boxes,
                  "labels": torch.tensor([self.label_of[a["category_id"]] for _, a in pairs], dtype=torch.int64),
                  "image_id": int(self.images[index]["id"])}
        if self.masks:
            masks = [self._mask(a, box, height, width) for box, a in pairs]
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(
                0, height, width, dtype=torch.uint8)
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
        if self.flip:
            with seeded_rng(seed):
                flipped = random.random() < 0.5
            if flipped:
                image = image.flip(-1)
                target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
                if self.masks:
                    target["masks"] = target["masks"].flip(-1)
        return image, target
