"""The training core: one loop, on accelerate, that every engine (:class:`~vitzoo.train.engine.Engine`) runs in.

    trainer = Trainer(ClassificationEngine(args))     # or LiTEngine(args), DistillEngine(args), ...
    result = trainer.fit()

The core owns what must be the same for every kind of training:

- the runtime: :func:`~vitzoo.train.runtime.make_accelerator` from ``--device``, ``--amp``, ``--amp-dtype``,
  ``--grad-accum-steps`` and ``--seed``;
- the data order: a seeded ``DistributedSampler`` (or the engine's index sampler) under
  :class:`~vitzoo.data.SeededSampler`, so every sample's randomness is a function of (seed, epoch, rank,
  position) and a resumed epoch repeats the interrupted one;
- the update: gradient accumulation, clipping (``--clip-grad``, ``--clip-mode``), the optimizer step, the
  weight EMA (timm's ``ModelEmaV3``) and the timm learning-rate schedule;
- the run folder: ``args.yaml`` (resolved flags), atomic ``last``/``best`` checkpoints holding every
  process's RNG state and the loop position (:class:`~vitzoo.train.state.Progress`), ``metrics.jsonl`` /
  ``metrics.csv`` / ``curves.png``;
- stopping: SIGINT/SIGTERM finish the current update, save ``last`` and return; ``--resume RUN`` continues
  with the weights an uninterrupted run would have had.

Rows are logged per epoch (engines that evaluate, ``step_key = "epoch"``) or every ``--log-interval``
updates (``step_key = "step"``); ``last`` is written every ``--checkpoint-steps`` updates when the engine has
that flag, else at the end of every epoch, and always on a signal and at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal as signal_module
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .checkpoint import Checkpointer
from .config import save_args
from .ema import create_model_ema, effective_ema_decay
from .engine import Engine
from .metrics import MetricsLogger
from .progress import EpochProgress
from .runtime import make_accelerator
from .signals import graceful_stop
from .state import (Progress, check_resume_compatible, gather_rng_states, restore_process_rng,
                    restore_training_state, training_state)

__all__ = ["RunDirectoryError", "TrainResult", "Trainer"]

_logger = logging.getLogger("vitzoo.train")


class RunDirectoryError(ValueError):
    """The run directory already holds another run."""


@dataclasses.dataclass
class TrainResult:
    """How a run ended (finished, or stopped by a signal after writing ``last``)."""

    run_dir: Path
    steps: int
    epochs_completed: int
    world_size: int
    last_loss: float
    last_metrics: dict[str, Any]
    eval_metric: Optional[str]
    best_value: Optional[float]
    best_epoch: Optional[int]
    curves: Optional[Path]
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    exported: Optional[Path]
    stopped_by_signal: Optional[int] = None


def _arg(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


class Trainer:
    """One run of ``engine``: builds everything, resumes when ``args.resume`` names a run, and trains.

    Args:
        engine: supplies data, model, optimizer and the step (its ``args`` are the resolved flags).
        on_update: called after every optimizer update with (update number, the last micro-batch's loss);
            the tests use it to compare runs step by step.
    """

    def __init__(self, engine: Engine, *, on_update: Optional[Callable[[int, torch.Tensor], None]] = None):
        self.engine, self.args, self.on_update = engine, engine.args, on_update
        args = self.args
        self.accelerator = accelerator = make_accelerator(
            device=_arg(args, "device", ""), amp=bool(_arg(args, "amp", False)),
            amp_dtype=_arg(args, "amp_dtype", "float16"), grad_accum_steps=_arg(args, "grad_accum_steps", 1),
            seed=args.seed)
        self.is_main = accelerator.is_main_process
        engine.accelerator = accelerator
        _logger.info("%d process(es) (%s) on %s, mixed precision %s", accelerator.num_processes,
                     accelerator.distributed_type, accelerator.device, accelerator.mixed_precision)
        state = Checkpointer.load(args.resume) if _arg(args, "resume") else None
        engine.build(self, state)
        # the unwrapped module whose weights are checkpointed, averaged (EMA) and exported
        self.trainable = engine.trainable if engine.trainable is not None else engine.model
        if state is not None:
            check_resume_compatible(state.get("metadata", {}), self._identity(), args.resume)
            from ..models._checkpoint import load_state_dict_checked

            load_state_dict_checked(self.trainable, state["model"], source=str(args.resume))
        self._build_loader()
        self.num_epochs = engine.num_epochs or args.epochs
        self.max_steps = _arg(args, "max_steps") or self.num_epochs * self.updates_per_epoch
        self.model, self.optimizer = accelerator.prepare(engine.model, engine.optimizer)
        self.scheduler = engine.scheduler
        self.global_batch = args.batch_size * accelerator.num_processes * _arg(args, "grad_accum_steps", 1)
        self.ema = None
        if _arg(args, "model_ema", False):
            # after prepare: DDP has broadcast rank 0's initial weights, so every rank averages the same model
            decay = effective_ema_decay(args.model_ema_decay, ref_batch=_arg(args, "model_ema_ref_batch"),
                                        global_batch=self.global_batch)
            self.ema = create_model_ema(self.trainable, decay, warmup=bool(_arg(args, "model_ema_warmup")))
        self.progress = Progress(world_size=accelerator.num_processes, batch_size=args.batch_size)
        self.run_dir = self._run_dir(resuming=state is not None)
        self.checkpointer = Checkpointer(self.run_dir, metric=engine.decision_key, mode=engine.decision_mode)
        self.best_epoch: Optional[int] = None
        self._rng_to_restore = None
        self._epoch_images_per_second = 0.0
        if state is not None:
            self._resume(state)
        self.metrics = MetricsLogger(self.run_dir, step_key=engine.step_key) if self.is_main else None
        if self.is_main:
            # without 'resume', so `-c args.yaml` repeats the run instead of continuing this one
            save_args(argparse.Namespace(**dict(vars(args), resume="")), self.run_dir / "args.yaml")

    # --- set-up -------------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, str]:
        return {"kind": self.engine.kind, **self.engine.identity()}

    def _build_loader(self) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        from ..data import DatasetError, SeededSampler

        args, engine, accelerator = self.args, self.engine, self.accelerator
        world, rank = accelerator.num_processes, accelerator.process_index
        # an explicit sampler also for one process: the epoch order depends on (seed, epoch) only
        base = engine.index_sampler or DistributedSampler(engine.train_set, num_replicas=world, rank=rank,
                                                          shuffle=True, seed=args.seed)
        self.train_sampler = SeededSampler(base, seed=args.seed, rank=rank)
        accumulation = _arg(args, "grad_accum_steps", 1)
        batches = len(self.train_sampler) // args.batch_size
        if batches < accumulation:
            raise DatasetError(
                f"{len(engine.train_set)} training samples give {batches} full batches of {args.batch_size} per "
                f"process on {world} process(es), fewer than one update of {accumulation} batches; lower --batch-size")
        # whole updates only: a partial accumulation would leak into the next epoch
        self.updates_per_epoch = batches // accumulation
        self.batches_per_epoch = self.updates_per_epoch * accumulation
        # a generator of its own: starting an epoch must not draw from the global stream (exact resume)
        self.train_loader = DataLoader(engine.train_set, batch_size=args.batch_size, sampler=self.train_sampler,
                                       drop_last=True, num_workers=_arg(args, "workers", 0),
                                       pin_memory=bool(_arg(args, "pin_mem", False)), collate_fn=engine.collate_fn,
                                       generator=torch.Generator().manual_seed(args.seed))
        engine.configure_optimizer(self)

    def _run_dir(self, resuming: bool) -> Path:
        args = self.args
        if resuming:
            # a resumed run continues in the folder of its checkpoint, wherever that folder is now
            path = Path(args.resume)
            run_dir = path if path.is_dir() else path.parent
            args.output, args.experiment = str(run_dir.parent), run_dir.name
            return run_dir
        name = _arg(args, "experiment") or "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"),
                                                      self.engine.default_experiment().replace("/", "_")])
        run_dir = Path(args.output) / name
        if not resuming and (run_dir / "last.state.pt").exists():
            raise RunDirectoryError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or "
                                    f"choose another --experiment")
        if not _arg(args, "experiment") and self.accelerator.num_processes > 1:
            # the clock may tick between processes: every process uses the main process's folder name
            from accelerate.utils import broadcast_object_list

            run_dir = Path(broadcast_object_list([str(run_dir)])[0])
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        args.experiment = run_dir.name
        return run_dir

    def _resume(self, state: dict[str, Any]) -> None:
        args, accelerator = self.args, self.accelerator
        progress = restore_training_state(state, optimizer=self.optimizer, scheduler=self.scheduler, ema=self.ema,
                                          scaler=accelerator.scaler)
        accumulation = _arg(args, "grad_accum_steps", 1)
        if (progress.world_size, progress.batch_size) != (accelerator.num_processes, args.batch_size):
            # the epoch position is kept in samples, rounded down to this run's batches
            samples = progress.batch_in_epoch * progress.batch_size * progress.world_size
            progress.batch_in_epoch = samples // (args.batch_size * accelerator.num_processes)
            progress.batch_in_epoch -= progress.batch_in_epoch % accumulation
            _logger.warning("resuming with %d process(es) x batch %d instead of %d x %d: the epoch continues at "
                            "batch %d and does not repeat the original order exactly", accelerator.num_processes,
                            args.batch_size, progress.world_size, progress.batch_size, progress.batch_in_epoch)
        progress.world_size, progress.batch_size = accelerator.num_processes, args.batch_size
        self.progress = progress
        self.checkpointer.best = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        # RNG states go back last, right before the loop, so nothing in the set-up draws from them
        self._rng_to_restore = state["rng"]
        if self.scheduler is not None:
            self.scheduler.step(progress.epoch)
            if _arg(args, "sched_on_updates", False):
                self.scheduler.step_update(progress.update_step)
        _logger.info("resumed %s at epoch %d, batch %d (update %d)", args.resume, progress.epoch,
                     progress.batch_in_epoch, progress.update_step)

    # --- the loop -----------------------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _clip(self) -> None:
        args, accelerator = self.args, self.accelerator
        mode = _arg(args, "clip_mode", "norm")
        if mode == "norm":
            accelerator.clip_grad_norm_(self.model.parameters(), args.clip_grad)
        elif mode == "value":
            accelerator.clip_grad_value_(self.model.parameters(), args.clip_grad)
        else:
            from timm.utils import adaptive_clip_grad

            accelerator.unscale_gradients()
            adaptive_clip_grad(self.trainable.parameters(), args.clip_grad)

    def _train_epoch(self, epoch: int, stop) -> Optional[str]:
        """Train from ``progress.batch_in_epoch`` to the end of the epoch; returns ``"signal"`` when stopped,
        ``"max_steps"`` when the last update of the run is done, None at the end of the epoch."""
        args, accelerator, progress, engine = self.args, self.accelerator, self.progress, self.engine
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        engine.start_epoch(epoch)
        start = progress.batch_in_epoch
        loader = accelerator.skip_first_batches(self.train_loader, start) if start else self.train_loader
        bar = EpochProgress(self.batches_per_epoch, f"train {epoch + 1}/{self.num_epochs}", initial=start,
                            enabled=self.is_main, world_size=accelerator.num_processes)
        log_interval = _arg(args, "log_interval", 50)
        checkpoint_steps = _arg(args, "checkpoint_steps")
        # float32 running sums on the device (no per-step host sync; float64 is missing on some backends)
        self._sums = {"loss": torch.zeros((), device=accelerator.device),
                      "skipped": torch.zeros((), device=accelerator.device)}
        self._samples, self._started = 0, time.perf_counter()
        window: dict[str, torch.Tensor] = {}
        window_batches, window_started = 0, time.perf_counter()
        try:
            for batch_index, batch in enumerate(loader, start=start):
                if batch_index >= self.batches_per_epoch:
                    break
                with accelerator.accumulate(self.model):
                    result = engine.step(self.model, batch)
                    accelerator.backward(result.loss)
                    if accelerator.sync_gradients and _arg(args, "clip_grad"):
                        self._clip()
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                loss = result.loss.detach()
                self._sums["loss"] += loss.float() * result.samples
                if result.skipped is not None:
                    self._sums["skipped"] += result.skipped.sum().to(self._sums["skipped"].device)
                self._samples += result.samples
                for key, value in {"loss": loss, **result.terms}.items():
                    window[key] = window.get(key, 0.0) + value.detach().float().mean()
                window_batches += 1
                bar.step(result.samples)
                if not accelerator.sync_gradients:
                    continue
                progress.update_step += 1
                progress.batch_in_epoch = batch_index + 1
                if self.ema is not None:
                    self.ema.update(self.trainable, step=progress.update_step)
                if self.scheduler is not None:
                    self.scheduler.step_update(num_updates=progress.update_step)
                if self.on_update is not None:
                    self.on_update(progress.update_step, loss)
                last_update = progress.update_step >= self.max_steps
                if progress.update_step % log_interval == 0 or progress.batch_in_epoch == self.batches_per_epoch:
                    bar.report(loss=float(loss), lr=self.lr)
                if engine.step_key == "step" and (progress.update_step % log_interval == 0 or last_update):
                    self._log_window(window, window_batches, time.perf_counter() - window_started)
                    window, window_batches, window_started = {}, 0, time.perf_counter()
                if self._should_stop(stop, progress.update_step):
                    self._accumulate_epoch()
                    return "signal"
                if last_update:
                    self._accumulate_epoch()
                    return "max_steps"
                if checkpoint_steps and progress.update_step % checkpoint_steps == 0:
                    self._accumulate_epoch()
                    self._save()
        finally:
            bar.close()
        self._accumulate_epoch()
        return None

    def _should_stop(self, stop, update_step: int) -> bool:
        """Whether any process received SIGINT/SIGTERM. With several processes the flags are combined by an
        all-reduce every ``--log-interval`` updates and at the end of each epoch (it syncs the host), so all
        ranks stop at the same update."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return bool(stop)
        if stop:
            accelerator.set_trigger()
        at_check = (update_step % _arg(self.args, "log_interval", 50) == 0
                    or self.progress.batch_in_epoch == self.batches_per_epoch or update_step >= self.max_steps)
        return at_check and accelerator.check_trigger()

    def _accumulate_epoch(self) -> None:
        """Fold this process's running sums into the (all-process) epoch totals of :class:`Progress`."""
        sums = self._sums
        samples = torch.tensor(float(self._samples), device=sums["loss"].device)
        totals = self.accelerator.reduce(torch.stack([sums["loss"], sums["skipped"], samples]), reduction="sum")
        self.progress.epoch_loss_sum += float(totals[0])
        self.progress.epoch_samples += int(totals[2])
        self.progress.epoch_skipped += int(totals[1])
        self._epoch_images_per_second = float(totals[2]) / max(time.perf_counter() - self._started, 1e-9)
        sums["loss"].zero_()
        sums["skipped"].zero_()
        self._samples, self._started = 0, time.perf_counter()

    def _log_window(self, window: dict[str, torch.Tensor], batches: int, seconds: float) -> None:
        """One ``step`` row: the means of the terms since the last row (one reduction: no host sync between)."""
        means = {k: self.accelerator.reduce(v / max(batches, 1), "mean").item() for k, v in window.items()}
        self.last_loss = means.get("loss", float("nan"))
        if self.metrics is None:
            return
        samples = batches * self.args.batch_size * self.accelerator.num_processes
        row = {"step": self.progress.update_step, "epoch": self.progress.epoch,
               **{f"train_{k}": v for k, v in means.items()}, "lr": self.lr,
               "images_per_second": samples / max(seconds, 1e-9)}
        self.metrics.log(row)
        _logger.info("step %d epoch %d loss %.4f%s, %.1f samples/s", row["step"], row["epoch"], means["loss"],
                     "".join(f", {k} {v:.4f}" for k, v in means.items() if k != "loss"), row["images_per_second"])

    def _save(self, row: Optional[dict[str, Any]] = None) -> None:
        """Write ``last``, and ``best`` when ``row`` improves on it. A collective: every process calls it (RNG
        states are gathered), the main process writes."""
        accelerator, engine = self.accelerator, self.engine
        rng = gather_rng_states(accelerator)
        accelerator.wait_for_everyone()
        if not self.is_main:
            return
        key = engine.decision_key
        is_best = row is not None and key is not None and key in row and self.checkpointer.improves(row[key])
        if is_best:
            self.checkpointer.best, self.best_epoch = row[key], row["epoch"]
        metadata = dict(self._identity(), **engine.metadata(), epoch=str(self.progress.epoch),
                        step=str(self.progress.update_step))
        metadata.update({k: f"{v:.6g}" for k, v in (row or {}).items() if isinstance(v, float)})
        state = training_state(progress=self.progress, optimizer=self.optimizer, scheduler=self.scheduler,
                               ema=self.ema, scaler=accelerator.scaler, rng_states=rng,
                               args={k: v for k, v in vars(self.args).items() if not k.startswith("_")},
                               best=self.checkpointer.best, extra={"best_epoch": self.best_epoch})
        weights = self.trainable.state_dict()
        export = engine.export_weights(self)
        self.checkpointer.save("last", state, weights, metadata, export_weights=export)
        if is_best:
            self.checkpointer.save("best", state, weights, metadata, export_weights=export)

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        """Evaluate (epoch engines), step the schedule, move the position to the next epoch."""
        progress = self.progress
        row: dict[str, Any] = {}
        if self.engine.step_key == "epoch":
            row = {"epoch": epoch, "train_loss": progress.epoch_loss_sum / max(progress.epoch_samples, 1)}
            row.update(self.engine.evaluate(self, epoch))
            skipped = progress.epoch_skipped + int(row.pop("skipped", 0))
            row.update(lr=self.lr, images_per_second=self._epoch_images_per_second, skipped_images=skipped)
            if skipped:
                _logger.warning("epoch %d: %d unreadable image(s) skipped", epoch, skipped)
        if self.scheduler is not None:
            key = self.engine.decision_key
            self.scheduler.step(epoch + 1, row.get(key) if key else None)
        self.progress = dataclasses.replace(progress, epoch=epoch + 1, batch_in_epoch=0, epoch_loss_sum=0.0,
                                            epoch_samples=0, epoch_skipped=0)
        return row

    def fit(self) -> TrainResult:
        """Run the remaining epochs; returns when done or after a SIGINT/SIGTERM checkpoint."""
        args, accelerator, engine = self.args, self.accelerator, self.engine
        stopped_by, last_metrics, exported = None, {}, None
        self.last_loss = float("nan")
        if self._rng_to_restore is not None:
            restore_process_rng(self._rng_to_restore, accelerator)
        epoch_saves = not _arg(args, "checkpoint_steps")
        with graceful_stop() as stop:
            for epoch in range(self.progress.epoch, self.num_epochs):
                if self.progress.update_step >= self.max_steps:
                    break
                self.progress.epoch = epoch
                ended = self._train_epoch(epoch, stop)
                if ended == "signal":
                    stopped_by = stop.signal_number or signal_module.SIGTERM
                    self._save()
                    _logger.warning("stopped by signal %d during epoch %d; resume with --resume %s", stopped_by,
                                    epoch, self.run_dir)
                    break
                row = {}
                if ended is None or self.progress.batch_in_epoch == self.batches_per_epoch:
                    row = self._end_epoch(epoch)
                if row:
                    last_metrics = row
                    self.last_loss = row.get("train_loss", self.last_loss)
                if row or ended == "max_steps" or epoch_saves or self.progress.epoch >= self.num_epochs:
                    self._save(row or None)
                if row and self.metrics is not None:
                    self.metrics.log(row)
                    _logger.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                                  if isinstance(v, float)))
                if ended == "max_steps":
                    break
        curves = None
        if self.is_main:
            if stopped_by is None:
                exported = engine.finish(self)
            if self.metrics.rows:
                curves = self.metrics.plot(title=f"{engine.default_experiment()} ({self.run_dir.name})")
            self.metrics.close()
        accelerator.wait_for_everyone()
        best = self.run_dir / "best.safetensors"
        return TrainResult(
            run_dir=self.run_dir, steps=self.progress.update_step, epochs_completed=self.progress.epoch,
            world_size=accelerator.num_processes, last_loss=self.last_loss, last_metrics=last_metrics,
            eval_metric=engine.decision_key, best_value=self.checkpointer.best, best_epoch=self.best_epoch,
            curves=curves, best_checkpoint=best if best.exists() else None,
            last_checkpoint=self.run_dir / "last.safetensors", exported=exported, stopped_by_signal=stopped_by)
