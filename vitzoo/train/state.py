"""Checkpoint and resume glue shared by the engines: what a training state holds, how it is restored,
and the checks that refuse a resume into a different model or label set.

A state (written by :class:`~vitzoo.train.checkpoint.Checkpointer`) holds the optimizer, scheduler, EMA
and grad-scaler states, the RNG states of every process, the loop position (:class:`Progress`) and the
resolved arguments of the run. Restoring all of them, then skipping the batches the interrupted epoch
had already used, makes the next steps' losses equal those of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Optional


from .checkpoint import capture_rng_state, restore_rng_state

__all__ = ["Progress", "ResumeError", "check_resume_compatible", "gather_rng_states", "restore_process_rng",
           "restore_training_state", "training_state"]

_logger = logging.getLogger("vitzoo.train")

STATE_FORMAT = "vitzoo-train-state/1"


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed by this run."""


@dataclasses.dataclass
class Progress:
    """Where the loop stands; saved in every checkpoint.

    Attributes:
        epoch: the epoch in progress, or the next one when ``batch_in_epoch`` is 0.
        batch_in_epoch: batches of ``epoch`` already trained (per process).
        update_step: optimizer updates so far (drives the scheduler and the EMA warmup).
        epoch_loss_sum, epoch_samples, epoch_skipped: running sums of the current epoch (training loss,
            images, unreadable files), so a resumed epoch reports what an uninterrupted one would.
        world_size, batch_size: the process count and per-process batch the position refers to.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    update_step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    epoch_skipped: int = 0
    world_size: int = 1
    batch_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Progress":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def gather_rng_states(accelerator) -> list[dict[str, Any]]:
    """The RNG states of every process, in process order (a collective: call it on all processes)."""
    state = capture_rng_state()
    if accelerator.num_processes == 1:
        return [state]
    from accelerate.utils import gather_object

    return list(gather_object([state]))


def restore_process_rng(states: list[dict[str, Any]], accelerator) -> bool:
    """Restore this process's RNG state; returns False (and warns) when the process count changed."""
    if len(states) != accelerator.num_processes:
        _logger.warning("checkpoint holds RNG states of %d processes, this run has %d: random streams restart "
                        "from the seed, so the resumed steps will not repeat the original ones exactly",
                        len(states), accelerator.num_processes)
        return False
    restore_rng_state(states[accelerator.process_index])
    return True


def training_state(*, progress: Progress, optimizer, scheduler=None, ema=None, scaler=None,
                   rng_states: list[dict[str, Any]], args: Mapping[str, Any], best: Optional[float] = None,
                   extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Everything a resume needs except the model weights (the Checkpointer adds those)."""
    state = {
        "format": STATE_FORMAT,
        "progress": progress.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "ema": {k: v.detach().cpu() for k, v in ema.module.state_dict().items()} if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states,
        "args": dict(args),
        "best_metric": best,
    }
    state.update(extra or {})
    return state


def restore_training_state(state: Mapping[str, Any], *, optimizer, scheduler=None, ema=None, scaler=None) -> Progress:
    """Load optimizer, scheduler, EMA and scaler states in place; returns the saved :class:`Progress`."""
    if state.get("format") != STATE_FORMAT:
        raise ResumeError(f"not a vitzoo training state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        if state.get("ema") is None:
            raise ResumeError("this run uses --model-ema but the checkpoint has no EMA weights")
        ema.module.load_state_dict(state["ema"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return Progress.from_dict(state["progress"])


def check_resume_compatible(metadata: Mapping[str, str], expected: Mapping[str, str], path: str | Path) -> None:
    """Raise :class:`ResumeError` listing every key of ``expected`` whose saved value differs."""
    mismatches = [f"{key}: the checkpoint has {metadata.get(key)!r}, this run has {value!r}"
                  for key, value in expected.items() if metadata.get(key) != value]
    if mismatches:
        raise ResumeError(f"cannot resume from {path}: " + "; ".join(mismatches)
                          + ". Start a new run (another --experiment) or resume with the original settings.")
