"""Patch attribution maps and tiled inference for the PPL detector.

- :func:`cde_map`: the paper's diagnosis tool (spec ``../shared/specs/ppl.md`` §2), the Controlled Direct
  Effect of each patch, ``CDE(i, j) = δ(I) − δ(I with patch (i, j) zeroed)``. With one binary logit,
  ``δ = logit_synthetic − logit_real`` is the logit itself (a two-way softmax over ``[0, logit]``).
  Patches are zeroed in the **normalised** input space, i.e. set to the normalisation mean (a mean-gray patch),
  so "zeroed" means the same thing for every backbone's mean / std. A uniform map is the paper's sign of a
  detector that uses all patches (its "Few-Patch Bias" diagnosis).
- :func:`probe_map`: ``sigmoid(patch_logit)``, the patch probe's heatmap (spec §6, vitzoo's extension).
- :func:`predict_large`: images larger than the backbone's input, tiled into crops whose logits are averaged
  (or maxed) and whose heatmaps are stitched (spec §6).

The functions take any detector whose forward returns an object with ``logit`` [B] (and ``patch_logit``
[B, h, w] for the probe) and that has an integer ``patch_size``; they run it in eval mode without gradients
and restore its mode after.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AGGREGATIONS", "HEATMAPS", "LargePrediction", "cde_map", "predict_large", "probe_map"]

AGGREGATIONS = ("mean_logit", "max_logit")
HEATMAPS = ("auto", "probe", "cde", "none")


@contextlib.contextmanager
def _inference(detector: nn.Module) -> Iterator[None]:
    was_training = detector.training
    detector.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        detector.train(was_training)


def _logit(detector: nn.Module, images: torch.Tensor) -> torch.Tensor:
    logit = detector(images).logit.reshape(-1)
    if logit.shape[0] != images.shape[0]:
        raise ValueError(f"the detector gave {logit.shape[0]} logits for {images.shape[0]} images; it needs one "
                         "binary logit per image")
    return logit


def _patch_size(detector: nn.Module, patch_size: Optional[int]) -> int:
    size = patch_size if patch_size is not None else getattr(detector, "patch_size", None)
    if not isinstance(size, int) or size < 1:
        raise ValueError("pass patch_size= or give the detector an integer patch_size attribute")
    return size


def _check_images(images: torch.Tensor, patch: int) -> tuple[int, int]:
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
    return height // patch, width // patch


def cde_map(detector: nn.Module, images: torch.Tensor, *, patch_size: Optional[int] = None,
            batch_size: int = 64) -> torch.Tensor:
    """Controlled Direct Effect of every patch (spec §2): ``logit(I) − logit(I with patch (i, j) zeroed)``.

    Args:
        detector: returns ``.logit`` [B]; see the module docstring.
        images: normalised images [B, C, H, W], H and W multiples of the patch size.
        patch_size: the patch side; default ``detector.patch_size``.
        batch_size: how many masked copies go through the detector at once (B·h·w copies in all).

    Returns:
        [B, h, w]; positive where hiding the patch lowers the fake logit.
    """
    patch = _patch_size(detector, patch_size)
    height, width = _check_images(images, patch)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = height * width
    with _inference(detector):
        base = _logit(detector, images)
        masked = []
        for start in range(0, images.shape[0] * count, batch_size):
            index = torch.arange(start, min(start + batch_size, images.shape[0] * count), device=images.device)
            keep = torch.ones(index.shape[0], count, device=images.device, dtype=images.dtype)
            keep[torch.arange(index.shape[0], device=images.device), index % count] = 0
            keep = keep.reshape(-1, 1, height, width).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
            masked.append(_logit(detector, images[index // count] * keep))
    return base[:, None, None] - torch.cat(masked).reshape(images.shape[0], height, width)


def probe_map(detector: nn.Module, images: torch.Tensor, *, upsample: bool = False) -> torch.Tensor:
    """The patch probe's heatmap ``sigmoid(patch_logit)`` [B, h, w] (spec §6), or [B, H, W] with ``upsample``
    (each patch's score repeated over its pixels)."""
    with _inference(detector):
        patch_logit = detector(images).patch_logit
    if patch_logit is None:
        raise ValueError("the detector has no patch probe (built with patch_head=False); use cde_map instead")
    scores = patch_logit.sigmoid()
    if upsample:
        scores = F.interpolate(scores[:, None], size=images.shape[-2:], mode="nearest")[:, 0]
    return scores


@dataclass
class LargePrediction:
    """What :func:`predict_large` returns.

    Attributes:
        logit: image logits [B], the mean or max of the tile logits.
        tile_logit: [B, rows, cols] logits of the tiles.
        heatmap: [B, ceil(H / patch), ceil(W / patch)] stitched patch heatmap (overlaps averaged), or None.
    """

    logit: torch.Tensor
    tile_logit: torch.Tensor
    heatmap: Optional[torch.Tensor]


def _tile_starts(size: int, crop: int, stride: int) -> list[int]:
    """Tile origins along one side; the last tile is padded past the image when ``size − crop`` is not a
    multiple of the stride (and the image is padded up to one crop when smaller)."""
    return [index * stride for index in range(math.ceil(max(size - crop, 0) / stride) + 1)]


def predict_large(detector: nn.Module, images: torch.Tensor, *, crop: int, stride: Optional[int] = None,
                  agg: str = "mean_logit", heatmap: str = "auto", batch_size: int = 16,
                  patch_size: Optional[int] = None) -> LargePrediction:
    """Detect on images of any size by tiling them into ``crop × crop`` tiles (spec §6).

    Tiles start every ``stride`` pixels; the image is zero-padded (normalised space: the mean colour) on the
    bottom and right so that the last tile is whole. An input of exactly ``crop × crop`` is one tile and gives
    the plain forward's logit.

    Args:
        detector: returns ``.logit`` [B] and, for the probe heatmap, ``.patch_logit``.
        images: normalised [B, C, H, W] (or one image [C, H, W]).
        crop: the tile side, the detector's input size; a multiple of the patch size.
        stride: tile step, a multiple of the patch size in (0, crop]; default ``crop`` (no overlap).
        agg: ``"mean_logit"`` or ``"max_logit"``, how tile logits become the image logit.
        heatmap: ``"probe"`` (sigmoid of the patch probe), ``"cde"`` (:func:`cde_map` of every tile, costly),
            ``"none"``, or ``"auto"`` (the probe when the detector has one, else none).
        batch_size: tiles per forward pass.
        patch_size: default ``detector.patch_size``.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    if heatmap not in HEATMAPS:
        raise ValueError(f"heatmap must be one of {HEATMAPS}, got {heatmap!r}")
    patch = _patch_size(detector, patch_size)
    stride = crop if stride is None else stride
    if crop % patch or stride % patch or not 0 < stride <= crop:
        raise ValueError(f"crop ({crop}) and stride ({stride}) must be multiples of the patch size {patch}, "
                         "with 0 < stride <= crop")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W] or [C, H, W], got shape {tuple(images.shape)}")
    batch, _, height, width = images.shape
    rows, cols = _tile_starts(height, crop, stride), _tile_starts(width, crop, stride)
    padded = F.pad(images, (0, cols[-1] + crop - width, 0, rows[-1] + crop - height))
    tiles = torch.stack([padded[:, :, y:y + crop, x:x + crop] for y in rows for x in cols], dim=1)
    tiles = tiles.flatten(0, 1)  # [B * rows * cols, C, crop, crop], image-major
    logits, maps = [], []
    with _inference(detector):
        for start in range(0, tiles.shape[0], batch_size):
            output = detector(tiles[start:start + batch_size])
            logits.append(output.logit.reshape(-1))
            if heatmap in ("auto", "probe"):
                if output.patch_logit is None and heatmap == "probe":
                    raise ValueError("heatmap='probe' needs a detector with a patch probe (patch_head=True)")
                maps.append(None if output.patch_logit is None else output.patch_logit.sigmoid())
    if heatmap == "cde":
        maps = [cde_map(detector, tiles, patch_size=patch, batch_size=max(batch_size, 1))]
    tile_logit = torch.cat(logits).reshape(batch, len(rows), len(cols))
    logit = tile_logit.mean(dim=(1, 2)) if agg == "mean_logit" else tile_logit.amax(dim=(1, 2))
    stitched = None
    if maps and all(m is not None for m in maps):
        stitched = _stitch(torch.cat(maps).reshape(batch, len(rows) * len(cols), crop // patch, crop // patch),
                           rows, cols, crop, patch, (math.ceil(height / patch), math.ceil(width / patch)))
    return LargePrediction(logit=logit, tile_logit=tile_logit, heatmap=stitched)


def _stitch(maps: torch.Tensor, rows: list[int], cols: list[int], crop: int, patch: int,
            out_size: tuple[int, int]) -> torch.Tensor:
    """Average per-tile patch maps [B, tiles, g, g] on the padded image's patch grid, then crop to ``out_size``."""
    grid = crop // patch
    total = maps.new_zeros(maps.shape[0], (rows[-1] + crop) // patch, (cols[-1] + crop) // patch)
    count = torch.zeros_like(total)
    for index, (y, x) in enumerate((y, x) for y in rows for x in cols):
        total[:, y // patch:y // patch + grid, x // patch:x // patch + grid] += maps[:, index]
        count[:, y // patch:y // patch + grid, x // patch:x // patch + grid] += 1
    return (total / count)[:, :out_size[0], :out_size[1]]
