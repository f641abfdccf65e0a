"""An image-caption folder: every image has a same-stem ``.txt`` caption beside it.

    data/
      0001.jpg   0001.txt      # "a red bicycle leaning on a wall"
      sub/x.png  sub/x.txt

The layout of most text-to-image fine-tuning sets (and of a LAION subset dumped with img2dataset).
Images are resized to a square ``resolution`` either by stretching (LinFusion's SD-1.5 / SD-2.1
distillation: a bicubic resize with no crop, aspect ratio distorted) or by resizing the short side and
centre-cropping (its SD-XL recipe, which also needs the original size and crop corner for SD-XL's
micro-conditioning, returned as ``original_size`` and ``crop_top_left``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageCaptionFolder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
RESIZE_MODES = ("stretch", "center-crop")


class ImageCaptionFolder(Dataset):
    """Images with captions from a folder tree, as ``{"pixel_values", "caption", "original_size", "crop_top_left"}``.

    Args:
        root: the folder (searched recursively).
        resolution: side of the square images returned.
        resize: ``"stretch"`` (bicubic to a square, no crop) or ``"center-crop"`` (short side to
            ``resolution`` with bilinear, then a centre crop).

    ``pixel_values`` is float32 [3, resolution, resolution] in [-1, 1]; ``original_size`` and
    ``crop_top_left`` are (height, width) and (top, left) tensors.
    """

    def __init__(self, root: Union[str, Path], resolution: int, *, resize: str = "stretch"):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image-caption folder {self.root} does not exist")
        self.resolution = resolution
        self.resize = resize
        self.images = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")
        missing = [p for p in self.images if not p.with_suffix(".txt").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.images)} images under {self.root} have no caption "
                                    f"file, e.g. {missing[0].relative_to(self.root)} needs "
                                    f"{missing[0].with_suffix('.txt').relative_to(self.root)}")

    def __len__(self) -> int:
        return len(self.images)

    def caption(self, index: int) -> str:
        return self.images[index].with_suffix(".txt").read_text(encoding="utf-8").strip()

    def __getitem__(self, item) -> dict[str, Any]:
        # an (index, sample_seed) pair from vitzoo.data.SeededSampler: the resize is deterministic, the seed unused
        index = item[0] if isinstance(item, tuple) else item
        path = self.images[index]
        with PIL.Image.open(path) as image:
            image = image.convert("RGB")
        width, height = image.size
        side = self.resolution
        if self.resize == "stretch":
            image = image.resize((side, side), PIL.Image.BICUBIC)
            top = left = 0
        else:
            scale = side / min(width, height)
            resized = (max(side, round(width * scale)), max(side, round(height * scale)))
            image = image.resize(resized, PIL.Image.BILINEAR)
            left, top = (resized[0] - side) // 2, (resized[1] - side) // 2
            image = image.crop((left, top, left + side, top + side))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1).contiguous()
        return {"pixel_values": pixels, "caption": self.caption(index),
                "original_size": torch.tensor([height, width]), "crop_top_left": torch.tensor([top, left])}
