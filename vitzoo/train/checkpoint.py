"""Checkpoints that survive interruption and resume exactly.

A checkpoint ``<tag>`` is two files in one directory:

- ``<tag>.safetensors``: the model weights, for users (``vitzoo convert`` / timm load them);
- ``<tag>.state.pt``: everything a resume needs (model and EMA weights, optimizer, scheduler, grad
  scaler, RNG states, epoch/step, metadata), readable with ``torch.load(weights_only=True)``.

Each file is written to a temporary name in the same directory and moved into place with
``os.replace``, which is atomic on POSIX: a crash mid-write leaves the previous checkpoint intact and
never a truncated file under the real name. The state file alone is enough to resume.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .._atomic import atomic_write

__all__ = ["Checkpointer", "atomic_write", "capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states, as tensors and tuples
    so the state file stays loadable with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class Checkpointer:
    """Writes and reads the ``last`` / ``best`` checkpoints of one run directory.

    Args:
        directory: run directory.
        metric: name of the metric that decides ``best`` (e.g. ``"top1"``); None keeps no best.
        mode: ``"max"`` or ``"min"`` for that metric.
    """

    def __init__(self, directory: str | Path, metric: Optional[str] = None, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory = Path(directory)
        self.metric = metric
        self.mode = mode
        self.best: Optional[float] = None

    def path(self, tag: str) -> Path:
        return self.directory / f"{tag}.state.pt"

    def save(self, tag: str, state: dict[str, Any], weights: dict[str, torch.Tensor],
             metadata: Optional[dict[str, str]] = None,
             export_weights: Optional[dict[str, torch.Tensor]] = None) -> Path:
        """Atomically write ``<tag>.safetensors`` and ``<tag>.state.pt`` (state + ``weights``).

        Args:
            tag: checkpoint name (``last``, ``best``).
            state: everything else a resume needs.
            weights: the trained model's weights (stored in the state file under ``model``).
            metadata: strings stored in both files (model name, classes, ...).
            export_weights: weights for the ``.safetensors`` file when they differ from ``weights``
                (e.g. the EMA weights the reported metrics come from); default ``weights``.
        """
        from safetensors.torch import save_file

        weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        export = weights if export_weights is None else {
            k: v.detach().contiguous().cpu() for k, v in export_weights.items()}
        atomic_write(self.directory / f"{tag}.safetensors",
                     lambda tmp: save_file(export, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()}))
        full = dict(state, model=weights, metadata=dict(metadata or {}))
        return atomic_write(self.path(tag), lambda tmp: torch.save(full, tmp))

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats every value recorded so far (``self.best``)."""
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def save_if_best(self, value: float, state: dict[str, Any], weights: dict[str, torch.Tensor],
                     metadata: Optional[dict[str, str]] = None) -> bool:
        """Write ``best`` when ``value`` beats every earlier value; returns whether it did."""
        better = self.improves(value)
        if better:
            self.best = value
            self.save("best", dict(state, best_metric=value), weights, metadata)
        return better

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """Read a state file (``weights_only=True``); a clear error when it is absent or unreadable."""
        path = Path(path)
        if path.is_dir():
            path = path / "last.state.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a readable vitzoo training checkpoint: {err}") from err
