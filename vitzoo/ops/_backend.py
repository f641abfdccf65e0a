"""One switch between the naive reference ops and the fast ops (like timm's fused-attention toggle).

``set_backend("naive")`` or ``VITZOO_OPS=naive`` makes every fast op call its naive twin, which is
how a suspected numerical problem is bisected without touching model code. ``"torch"`` keeps the fast
PyTorch forms but never the Triton kernels, which ``"auto"`` (the default) uses for CUDA tensors.
"""

from __future__ import annotations

import logging
import os

__all__ = ["get_backend", "set_backend", "use_naive", "use_triton", "log_fallback_once"]

_BACKENDS = ("auto", "torch", "naive")
_logger = logging.getLogger("vitzoo.ops")
_announced: set[str] = set()


def _from_env() -> str:
    value = os.environ.get("VITZOO_OPS", "auto").strip().lower() or "auto"
    if value not in _BACKENDS:
        raise ValueError(f"VITZOO_OPS must be one of {_BACKENDS}, got {value!r}")
    return value


_backend = _from_env()


def get_backend() -> str:
    """The active backend: ``"auto"`` (fast paths, Triton kernels on GPU), ``"torch"`` (fast PyTorch forms only) or
    ``"naive"`` (references everywhere)."""
    return _backend


def set_backend(name: str) -> None:
    """Choose ``"auto"``, ``"torch"`` or ``"naive"`` for every op in :mod:`vitzoo.ops`."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    _backend = name


def use_naive() -> bool:
    return _backend == "naive"


def use_triton(tensor) -> bool:
    """Whether an op on ``tensor`` may take its Triton kernel: backend ``"auto"`` and a CUDA tensor."""
    return _backend == "auto" and tensor.is_cuda


def log_fallback_once(op: str, reason: str) -> None:
    """Announce once per process that ``op`` runs its pure-PyTorch path, and why."""
    if op not in _announced:
        _announced.add(op)
        _logger.info("vitzoo.ops.%s: %s", op, reason)
