"""Exponential moving average of the weights, through timm's ``ModelEmaV3``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["create_model_ema", "effective_ema_decay"]


def effective_ema_decay(decay: float, *, ref_batch: Optional[int] = None, global_batch: Optional[int] = None) -> float:
    """``decay ** (global_batch / ref_batch)`` when a reference batch is given, else ``decay``.

    DeiT-style recipes (RAVLT/MAViT, CSwin) state the decay for a global batch of 512 and raise it to
    the power ``batch / 512``, so the EMA's time constant in images stays the same at any batch size.
    """
    if ref_batch is None:
        return decay
    if not global_batch or ref_batch <= 0:
        raise ValueError(f"EMA batch scaling needs positive batch sizes, got global {global_batch}, "
                         f"reference {ref_batch}")
    return decay ** (global_batch / ref_batch)


def create_model_ema(model: nn.Module, decay: float, *, warmup: bool = False,
                     device: Optional[torch.device | str] = None):
    """A ``timm.utils.ModelEmaV3`` copy of ``model`` (the unwrapped module; create it once the weights are
    the same on every process, e.g. after ``accelerator.prepare``).

    Args:
        model: the unwrapped model, already on its device.
        decay: per-update decay (see :func:`effective_ema_decay`).
        warmup: timm's EMA warmup (decay grows with the update count).
        device: where the EMA weights live (default: the model's device).
    """
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=warmup, device=device)
