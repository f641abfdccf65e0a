"""Training infrastructure shared by every engine (classification, diffusion, distillation).

- :mod:`.checkpoint`: atomic checkpoints (safetensors weights + a training-state file), RNG capture.
- :mod:`.signals`: SIGINT/SIGTERM turned into a flag so a loop can save before it exits.
- :mod:`.metrics`: per-epoch metrics as JSONL and CSV, TensorBoard when installed, curves as PNG.
"""

from .checkpoint import Checkpointer, capture_rng_state, restore_rng_state
from .metrics import MetricsLogger
from .signals import StopRequested, graceful_stop

__all__ = [
    "Checkpointer",
    "MetricsLogger",
    "StopRequested",
    "capture_rng_state",
    "graceful_stop",
    "restore_rng_state",
]
