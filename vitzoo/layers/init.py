"""Weight initialisation shared by the backbone families."""

from __future__ import annotations

from functools import partial
from typing import Callable

from timm.layers import trunc_normal_
from torch import nn

__all__ = ["trunc_normal_init"]


def trunc_normal_init(std: float = 0.02,
                      types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> Callable[[nn.Module], None]:
    """``model.apply`` hook of the official ViT-style init: truncated-normal weights, zero biases.

    ``types`` picks the layers it touches (InLine: Linear; RAVLT and L²ViT: Linear and Conv2d); norms keep
    PyTorch's defaults. Meta tensors are skipped: they hold no values, and timm's ``trunc_normal_`` takes
    seconds on them for the large variants.
    """
    return partial(_init, std=std, types=types)


def _init(module: nn.Module, std: float, types: tuple[type[nn.Module], ...]) -> None:
    if isinstance(module, types) and not module.weight.is_meta:
        trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
