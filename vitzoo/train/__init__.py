"""Training infrastructure shared by every engine (classification, diffusion, distillation).

Reusable pieces:

- :mod:`.config`: flags with YAML defaults (``-c``), typed flags win (:func:`enable_config_file`, :func:`resolve_args`).
- :mod:`.runtime`: the accelerate set-up (:func:`make_accelerator`), per-process logging.
- :mod:`.checkpoint`: atomic checkpoints (safetensors weights + a training-state file), RNG capture.
- :mod:`.state`: what a training state holds, exact restore, compatibility checks for ``--resume``.
- :mod:`.ema`: weight EMA through timm's ``ModelEmaV3``, with DeiT-style batch scaling of the decay.
- :mod:`.progress`: the tqdm bar of an epoch (loss, lr, images/s).
- :mod:`.signals`: SIGINT/SIGTERM turned into a flag so a loop can save before it exits.
- :mod:`.metrics`: per-epoch metrics as JSONL and CSV, TensorBoard when installed, curves as PNG.

Engines built on them:

- :mod:`.classification`: ``vitzoo train``, ImageFolder classification
  (:class:`~.classification.ClassificationTrainer`).
- :mod:`.evaluation`: ``vitzoo validate``, :func:`~.evaluation.evaluate`, :func:`~.evaluation.load_classifier`.
"""

from .checkpoint import Checkpointer, capture_rng_state, restore_rng_state
from .config import ConfigError, enable_config_file, load_config, resolve_args, save_args
from .ema import create_model_ema, effective_ema_decay
from .evaluation import TrainedClassifier, evaluate, load_classifier
from .metrics import MetricsLogger
from .progress import EpochProgress
from .runtime import LaunchError, configure_logging, make_accelerator
from .signals import StopRequested, graceful_stop
from .state import (Progress, ResumeError, check_resume_compatible, gather_rng_states, restore_process_rng,
                    restore_training_state, training_state)

__all__ = [
    "Checkpointer",
    "ConfigError",
    "EpochProgress",
    "LaunchError",
    "MetricsLogger",
    "Progress",
    "ResumeError",
    "StopRequested",
    "TrainedClassifier",
    "capture_rng_state",
    "check_resume_compatible",
    "configure_logging",
    "create_model_ema",
    "effective_ema_decay",
    "enable_config_file",
    "evaluate",
    "gather_rng_states",
    "graceful_stop",
    "load_classifier",
    "load_config",
    "make_accelerator",
    "resolve_args",
    "restore_process_rng",
    "restore_rng_state",
    "restore_training_state",
    "save_args",
    "training_state",
]
