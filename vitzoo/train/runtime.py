"""The accelerate side of every engine: one :class:`accelerate.Accelerator` built from timm-style flags,
seeding, and per-process logging. All distribution (DDP, process groups, gradient sync) is accelerate's;
an engine only asks the accelerator.

The same script therefore runs as ``python tools/train.py`` on one CPU or GPU, and as
``accelerate launch [--multi_gpu] [--num_processes N] [--num_machines M] tools/train.py`` on many
processes, GPUs or nodes.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

__all__ = ["LaunchError", "configure_logging", "is_main_process", "make_accelerator", "mixed_precision_mode"]

_AMP_DTYPES = {"float16": "fp16", "bfloat16": "bf16"}


class LaunchError(ValueError):
    """The processes of a launch did not form one training group."""


def mixed_precision_mode(amp: bool, amp_dtype: str = "float16") -> str:
    """timm's ``--amp`` / ``--amp-dtype`` as accelerate's ``mixed_precision`` (``no``, ``fp16``, ``bf16``)."""
    if not amp:
        return "no"
    if amp_dtype not in _AMP_DTYPES:
        raise ValueError(f"--amp-dtype must be one of {sorted(_AMP_DTYPES)}, got {amp_dtype!r}")
    return _AMP_DTYPES[amp_dtype]


def make_accelerator(*, device: str = "", amp: bool = False, amp_dtype: str = "float16", grad_accum_steps: int = 1,
                     seed: Optional[int] = None):
    """An ``Accelerator`` for training or evaluation, seeded per process.

    Without a GPU (or other accelerator device) the CPU is requested explicitly: accelerate forms a
    multi-process CPU group (gloo) only when asked for the CPU, and would otherwise leave every launched
    process training alone. A launch that sets ``WORLD_SIZE > 1`` but ends with one process is an error.

    Args:
        device: ``"cpu"`` forces the CPU; ``""``/``"cuda"`` lets accelerate pick (a GPU when present).
        amp, amp_dtype: mixed precision through accelerate's autocast (and a grad scaler for float16).
        grad_accum_steps: micro-batches per optimizer update (``accelerator.accumulate``).
        seed: seeds Python, NumPy and torch with ``seed + process_index``, so ranks draw different
            dropout and mixup values (as timm and DeiT do).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if grad_accum_steps < 1:
        raise ValueError(f"--grad-accum-steps must be at least 1, got {grad_accum_steps}")
    accelerator = Accelerator(
        cpu=device == "cpu" or not torch.accelerator.is_available(),
        mixed_precision=mixed_precision_mode(amp, amp_dtype),
        gradient_accumulation_steps=grad_accum_steps,
        # vitzoo's samplers are seeded per epoch; accelerate must not re-synchronise RNGs behind them
        rng_types=[],
        step_scheduler_with_optimizer=False,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise LaunchError(
            f"the launcher started {launched} processes (WORLD_SIZE) but accelerate set up "
            f"{accelerator.num_processes} ({accelerator.distributed_type}); each would train alone. "
            f"Check the accelerate config of this machine."
        )
    if seed is not None:
        set_seed(seed, device_specific=True)
    return accelerator


def is_main_process() -> bool:
    """Rank 0 of a launch (``RANK``/``LOCAL_RANK`` as set by accelerate launch or torchrun), without
    initialising the process group; True when not launched."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted, so replacing
    stderr (pytest's capture, a tool redirecting it) never leaves it writing to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(is_main_process: bool = True, level: int = logging.INFO) -> None:
    """Log ``vitzoo`` messages to stderr: INFO on the main process, warnings only on the others."""
    logger = logging.getLogger("vitzoo")
    if not any(getattr(h, "_vitzoo", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._vitzoo = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level if is_main_process else logging.WARNING)
