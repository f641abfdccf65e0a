"""What a training engine supplies to the core (:class:`~vitzoo.train.loop.Trainer`).

An engine is one kind of training (classification, LiT/DiT diffusion, LinFusion distillation, and later
detection and AI-generated-image detection). It builds its model, data and optimizer in :meth:`Engine.build`
and computes one micro-batch's loss in :meth:`Engine.step`; the core does everything else the same way for
all of them: accelerate set-up, the seeded data order, gradient accumulation and clipping, the EMA of the
weights, the learning-rate schedule, atomic checkpoints with exact resume, SIGINT/SIGTERM, the progress bar
and the metrics files.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from torch import nn

__all__ = ["Engine", "StepResult", "per_update_optimizer"]


@dataclasses.dataclass
class StepResult:
    """One micro-batch: the loss to back-propagate, the terms to log (means over the logging window), how
    many samples it held and, for image folders, how many unreadable files were replaced in it."""

    loss: torch.Tensor
    samples: int
    terms: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    skipped: Optional[torch.Tensor] = None


class Engine:
    """Base class of the training engines. :meth:`build` (or, for ``optimizer`` and ``scheduler``,
    :meth:`configure_optimizer`) must set:

    - ``model``: the module the forward runs through (the core prepares it with accelerate);
    - ``optimizer``: over the trainable parameters;
    - ``train_set``: a dataset whose ``__getitem__`` takes ``(index, sample_seed)`` pairs (see
      :class:`vitzoo.data.SeededSampler`), so augmentation depends on (seed, epoch, position) only;

    and may set ``trainable`` (the module whose weights are checkpointed and exported, default ``model``),
    ``scheduler`` (a timm scheduler, stepped per epoch and per update), ``collate_fn``, ``index_sampler``
    (default: a seeded ``DistributedSampler``) and ``num_epochs`` (default ``args.epochs``).

    Class attributes: ``kind`` is written into every checkpoint; ``step_key`` says whether metrics rows are
    written per epoch (``"epoch"``, after :meth:`evaluate`) or every ``--log-interval`` updates (``"step"``);
    ``decision_key`` names the metric of :meth:`evaluate` that selects the ``best`` checkpoint.
    """

    kind: ClassVar[str] = "vitzoo-train"
    step_key: ClassVar[str] = "step"
    decision_key: Optional[str] = None
    decision_mode: str = "max"

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_set: Any
    trainable: Optional[nn.Module] = None
    scheduler: Any = None
    collate_fn: Any = None
    index_sampler: Any = None
    num_epochs: Optional[int] = None

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def default_experiment(self) -> str:
        """Run-folder name when ``--experiment`` is not given (a time stamp is prepended)."""
        return getattr(self.args, "model", None) or "run"

    def build(self, trainer, state: Optional[dict[str, Any]]) -> None:
        """Create data, model and optimizer. ``state`` is the checkpoint being resumed (None for a new
        run); the core loads its weights into ``trainable`` after this returns."""
        raise NotImplementedError

    def configure_optimizer(self, trainer) -> None:
        """Called once the core has built the training loader (``trainer.updates_per_epoch`` is known), before
        anything is prepared: the place for an optimizer or schedule that depends on the epoch length."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch's first batch (e.g. to switch mixup off after some epoch)."""

    def identity(self) -> dict[str, str]:
        """Checkpoint metadata a resumed run must match (model, classes, configuration)."""
        return {}

    def metadata(self) -> dict[str, str]:
        """Further checkpoint metadata, written but not checked on resume."""
        return {}

    def step(self, model: nn.Module, batch: Any) -> StepResult:
        """Forward one micro-batch through the prepared ``model`` (under ``trainer.accelerator.autocast()``)."""
        raise NotImplementedError

    def evaluate(self, trainer, epoch: int) -> dict[str, float]:
        """Metrics at the end of an epoch (``step_key == "epoch"`` engines), merged into the epoch's row."""
        return {}

    def export_weights(self, trainer) -> Optional[dict[str, torch.Tensor]]:
        """Weights for the user-facing ``.safetensors`` when they are not ``trainable``'s (e.g. the EMA)."""
        return None

    def finish(self, trainer) -> Optional[Path]:
        """Called once on the main process when a run reaches its end (not when stopped): write what users
        load (a pipeline, official-layout weights); returns its path."""
        return None


def per_update_optimizer(model: nn.Module, args: argparse.Namespace, updates_per_epoch: int):
    """timm's optimizer over ``model`` and a schedule stepped every update (not every epoch), from the run flags
    ``opt``, ``lr``, ``weight_decay``, ``momentum``, ``sched``, ``epochs``, ``warmup_epochs``, ``warmup_lr`` and
    ``min_lr``: what an engine's ``configure_optimizer`` sets. Returns ``(optimizer, scheduler, num_epochs)``."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return optimizer, scheduler, num_epochs
