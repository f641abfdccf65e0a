"""Reading any image file as an 8-bit RGB picture, for AI-generated-image detection.

A detector looks at pixel statistics, so every input must reach it as the same kind of picture: 8-bit
RGB, upright, without transparency. :func:`read_image_rgb` is the one reader of ``vitzoo.aigi`` (the
folder dataset, the reconstruction builder and the ``detect_aigi`` command use it) and never raises on
a bad file; it returns ``(None, reason)`` instead, so a folder run reports the file and goes on.

What it does with each kind of file:

- not an image (a text file named ``.png``), an unknown format, a truncated or corrupt image: ``None``
  and the reason; every pixel is decoded here, so truncation is found now and not inside a transform;
- EXIF orientation: applied (``PIL.ImageOps.exif_transpose``), so a phone photo comes out upright;
- grayscale (``1``, ``L``) and palette (``P``): expanded to RGB;
- 16-bit and 32-bit grayscale (``I;16``, ``I``, ``F``): scaled to 8 bits (``value / 257``, rounded)
  rather than clipped at 255, which is what ``Image.convert("RGB")`` would do;
- CMYK (and YCbCr, LAB, HSV): converted by Pillow's colour conversion (Adobe's inverted CMYK JPEGs are
  un-inverted by Pillow's decoder; embedded ICC profiles are not applied);
- transparency (``RGBA``, ``LA``, ``PA``, a palette or grey image with a transparent colour):
  composited on a white background, the convention of browsers and image viewers;
- smaller than ``min_side`` pixels on a side (less than one ViT patch): upsampled bicubically,
  keeping the aspect ratio, so the shorter side is ``min_side`` (``small="upsample"``, the default),
  padded by edge replication (``small="pad"``) or refused (``small="skip"``).

``ImageFolderDataset`` of :mod:`vitzoo.data.folder` decodes with ``Image.convert("RGB")``, which drops
alpha onto black, clips 16-bit images and ignores EXIF orientation; a detector needs the conversions
above, so they live here rather than there.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageRead", "SMALL_IMAGE_POLICIES", "fit_min_side", "is_image_path",
           "read_image_rgb"]

# every file extension a Pillow plugin claims (jpg, jpeg, png, webp, tif, bmp, gif, ...)
IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in Image.registered_extensions())
SMALL_IMAGE_POLICIES = ("upsample", "pad", "skip")
WHITE = (255, 255, 255)
# decoding errors Pillow raises for damaged files (SyntaxError for some broken PNG chunks)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, UnidentifiedImageError)


class ImageRead(NamedTuple):
    """The result of :func:`read_image_rgb`.

    ``image`` is an 8-bit RGB image, or None when the file could not be used; ``reason`` then says why
    (``"not an image: ..."``, ``"truncated or corrupt: ..."``, ``"smaller than ..."``). For a usable
    image ``reason`` lists what was done to it, separated by ``"; "`` (``"CMYK -> RGB; EXIF
    orientation 6 applied"``), and is ``""`` for a plain upright 8-bit RGB file.
    """

    image: Optional[Image.Image]
    reason: str


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    """True when the file extension is one Pillow reads (the content is not looked at)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """``I;16`` / ``I`` / ``F`` grey images as 8-bit ``L``: 16-bit ranges scaled by 1/257, 8-bit ranges kept."""
    values = np.asarray(image, dtype=np.float64)
    if values.size and values.max() > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _to_rgb(image: Image.Image, background: tuple[int, int, int], notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        notes.append(f"{mode} scaled to 8-bit")
        image = _high_depth_to_8bit(image)
    if _has_alpha(image):
        notes.append(f"{mode} alpha composited on white" if background == WHITE
                     else f"{mode} alpha composited on {background}")
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode != "RGB":
        notes.append(f"{mode} -> RGB")
        image = image.convert("RGB")
    return image


def fit_min_side(image: Image.Image, min_side: int, small: str = "upsample") -> ImageRead:
    """Bring an image whose shorter side is below ``min_side`` up to it (see the module docstring).

    Returns:
        ``(image, note)``: the image unchanged with ``""`` when it is large enough; the upsampled or
        padded image with a note; ``(None, reason)`` for ``small="skip"``.
    """
    if small not in SMALL_IMAGE_POLICIES:
        raise ValueError(f"small={small!r}: expected one of {SMALL_IMAGE_POLICIES}")
    width, height = image.size
    if min(width, height) >= min_side:
        return ImageRead(image, "")
    if small == "skip":
        return ImageRead(None, f"smaller than {min_side} px: {width}x{height}")
    if small == "pad":
        new_w, new_h = max(width, min_side), max(height, min_side)
        pixels = np.asarray(image)
        padded = np.pad(pixels, ((0, new_h - height), (0, new_w - width), (0, 0)), mode="edge")
        return ImageRead(Image.fromarray(padded, mode="RGB"), f"{width}x{height} padded to {new_w}x{new_h}")
    scale = min_side / min(width, height)
    new_w, new_h = max(min_side, round(width * scale)), max(min_side, round(height * scale))
    return ImageRead(image.resize((new_w, new_h), Image.BICUBIC), f"{width}x{height} upsampled to {new_w}x{new_h}")


def read_image_rgb(path: Union[str, os.PathLike], *, min_side: Optional[int] = None, small: str = "upsample",
                   background: tuple[int, int, int] = WHITE) -> ImageRead:
    """Read ``path`` as an upright 8-bit RGB image; never raises on a bad file.

    Args:
        path: the image file.
        min_side: the smallest accepted side in pixels (the backbone's patch size); None: no check.
        small: what to do with a smaller image: ``"upsample"``, ``"pad"`` or ``"skip"``.
        background: colour that transparent pixels are composited on.

    Returns:
        :class:`ImageRead` ``(image or None, reason)``.
    """
    if small not in SMALL_IMAGE_POLICIES:
        raise ValueError(f"small={small!r}: expected one of {SMALL_IMAGE_POLICIES}")
    notes: list[str] = []
    try:
        with Image.open(path) as raw:
            # load() decodes every pixel, so a truncated file fails here
            raw.load()
            orientation = raw.getexif().get(0x0112, 1)
            image = ImageOps.exif_transpose(raw)
            if orientation not in (1, None):
                notes.append(f"EXIF orientation {orientation} applied")
            image = _to_rgb(image, background, notes)
    except UnidentifiedImageError as err:
        return ImageRead(None, f"not an image: {err}")
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        return ImageRead(None, f"cannot open: {err}")
    except _DECODE_ERRORS as err:
        return ImageRead(None, f"truncated or corrupt: {err}")
    if min_side is not None:
        image, note = fit_min_side(image, min_side, small)
        if image is None:
            return ImageRead(None, note)
        if note:
            notes.append(note)
    return ImageRead(image, "; ".join(notes))
