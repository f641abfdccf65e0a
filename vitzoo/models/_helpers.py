"""Input checks shared by the backbones: bad images fail with a message naming what was expected.

The check is an FX leaf (``vitzoo/ops/README.md``, "Tracing"): a traced backbone keeps it as one graph
node that runs with the real image size.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from timm.layers import register_notrace_function

__all__ = ["check_image_input", "check_image_size"]


def check_image_size(img_size: Any, *, multiple_of: int = 1, model: str = "model") -> tuple[int, int]:
    """``img_size`` (timm's constructor argument: an int, or (height, width)) as (H, W), or ``ValueError``
    naming what is expected; sides must be multiples of ``multiple_of``, as every input of the model is."""
    size = (img_size, img_size) if isinstance(img_size, numbers.Integral) else img_size
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(side, numbers.Integral) and not isinstance(side, bool) and side > 0 for side in size)):
        raise ValueError(f"{model}: img_size must be a positive int or (height, width) of positive ints, "
                         f"got {img_size!r}")
    height, width = int(size[0]), int(size[1])
    if height % multiple_of or width % multiple_of:
        raise ValueError(f"{model}: img_size needs height and width divisible by {multiple_of} (as every input "
                         f"does), got {height}x{width}")
    return height, width


def check_image_input(x: torch.Tensor, in_chans: int, *, multiple_of: int = 1, min_size: int = 1,
                      model: str = "model") -> tuple[int, int]:
    """Return (H, W) of an NCHW batch, or raise ``ValueError`` naming the expected layout."""
    return _check_image_input(x, in_chans, multiple_of, min_size, model)


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_image_input(x: torch.Tensor, in_chans: int, multiple_of: int, min_size: int, model: str) -> tuple[int, int]:
    if x.dim() != 4:
        raise ValueError(f"{model} expects images [B, {in_chans}, H, W], got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{model} expects {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(f"{model} needs inputs of at least {min_size}x{min_size}, got {height}x{width}")
    if height % multiple_of or width % multiple_of:
        raise ValueError(f"{model} needs height and width divisible by {multiple_of}, got {height}x{width}")
    return height, width
