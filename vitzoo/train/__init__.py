"""One training core on accelerate, and the engines that plug their step into it.

The core (:class:`~.loop.Trainer`) runs any :class:`~.engine.Engine`; its pieces:

- :mod:`.config`: flags with YAML defaults (``-c``), typed flags win (:func:`enable_config_file`, :func:`resolve_args`).
- :mod:`.runtime`: the accelerate set-up (:func:`make_accelerator`), per-process logging.
- :mod:`.checkpoint`: atomic checkpoints (safetensors weights + a training-state file), RNG capture.
- :mod:`.state`: what a training state holds, exact restore, compatibility checks for ``--resume``.
- :mod:`.ema`: weight EMA through timm's ``ModelEmaV3``, with DeiT-style batch scaling of the decay.
- :mod:`.progress`: the tqdm bar of an epoch (loss, lr, images/s).
- :mod:`.signals`: SIGINT/SIGTERM turned into a flag so a loop can save before it exits.
- :mod:`.metrics`: metrics rows as JSONL and CSV (atomic rewrites), TensorBoard when installed, curves as PNG.

Engines (a new one is one more module of this kind):

- :mod:`.classification`: ``vitzoo train``, ImageFolder classification (:class:`~.classification.ClassificationEngine`).
- :mod:`.diffusion`: ``vitzoo train_lit``, LiT/DiT on cached latents (:class:`~.diffusion.DiffusionEngine`).
- :mod:`.distill`: ``vitzoo distill``, LinFusion distillation in a Stable Diffusion UNet
  (:class:`~.distill.DistillEngine`).
- :mod:`.detection`: ``vitzoo train_det``, torchvision detectors on COCO-format data (:class:`~.detection.DetectionEngine`).
- :mod:`.aigi`: ``vitzoo train_aigi``, patch-level AI-generated-image detection (Panoptic Patch Learning) on
  GenImage-style folders (:class:`~.aigi.AIGIEngine`); :mod:`.aigi_eval` evaluates and runs detectors.
- :mod:`.evaluation`: ``vitzoo validate``, :func:`~.evaluation.evaluate`, :func:`~.evaluation.load_classifier`.

The command-line flags of each engine live in ``vitzoo/commands/`` (the shared run flags in
``vitzoo/commands/_training.py``).
"""

from .checkpoint import Checkpointer, capture_rng_state, restore_rng_state
from .config import ConfigError, enable_config_file, load_config, resolve_args, resume_base_args, save_args
from .ema import create_model_ema, effective_ema_decay
from .engine import Engine, StepResult
from .evaluation import TrainedClassifier, evaluate, load_classifier
from .loop import RunDirectoryError, Trainer, TrainResult
from .metrics import MetricsLogger
from .progress import EpochProgress
from .runtime import LaunchError, configure_logging, make_accelerator
from .signals import StopRequested, graceful_stop
from .state import (Progress, ResumeError, check_resume_compatible, gather_rng_states, restore_process_rng,
                    restore_training_state, training_state)

__all__ = [
    "Checkpointer",
    "ConfigError",
    "Engine",
    "EpochProgress",
    "LaunchError",
    "MetricsLogger",
    "Progress",
    "ResumeError",
    "RunDirectoryError",
    "StepResult",
    "StopRequested",
    "TrainResult",
    "TrainedClassifier",
    "Trainer",
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
    "resume_base_args",
    "save_args",
    "training_state",
]
