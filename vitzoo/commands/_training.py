"""The flags every training command shares (``vitzoo train``, ``train_lit``, ``distill``), defined once, and
the one way their values are resolved: parser defaults < the resumed run's ``args.yaml`` < ``-c`` YAML <
typed flags (:func:`vitzoo.train.config.resolve_args`). Each command passes its own defaults."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ._types import nonnegative_float, nonnegative_int, positive_float, positive_int, probability

__all__ = ["add_run_arguments", "default_workers", "finish_parser", "report_stop"]


def default_workers(wanted: int = 4) -> int:
    """Data-loading processes per rank: ``wanted``, but no more than the CPUs this process may use (more
    only makes torch warn and the loaders compete with the training threads)."""
    import os

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(wanted, available))


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int, epochs: int, seed: int,
                      log_interval: int, amp_dtype: str = "float16", model_ema: Optional[bool] = False,
                      model_ema_decay: float = 0.9998, workers: Optional[int] = None,
                      checkpoint_steps: Optional[int] = None, max_steps: bool = False, output: str = "runs") -> None:
    """Add the run, optimisation-loop and EMA flags (timm ``train.py`` names).

    Args:
        checkpoint_steps: default of ``--checkpoint-steps`` (write ``last`` every N updates); None leaves the
            flag out and the core writes ``last`` after every epoch.
        max_steps: add ``--max-steps`` (step-limited engines).
        model_ema: default of ``--model-ema``; None leaves the EMA flags out (engines without an EMA).
    """
    loop = parser.add_argument_group("training loop")
    loop.add_argument("-b", "--batch-size", type=positive_int, default=batch_size, metavar="N",
                      help="batch per process")
    loop.add_argument("--epochs", type=positive_int, default=epochs)
    if max_steps:
        loop.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                          help="optimizer updates to train for (default: --epochs)")
    loop.add_argument("--grad-accum-steps", type=positive_int, default=1, metavar="N",
                      help="micro-batches per optimizer update")
    loop.add_argument("--clip-grad", type=positive_float, default=None, metavar="NORM",
                      help="gradient clipping (off if unset)")
    loop.add_argument("--clip-mode", default="norm", choices=["norm", "value", "agc"])
    loop.add_argument("-j", "--workers", type=nonnegative_int,
                      default=default_workers() if workers is None else workers,
                      metavar="N", help="data loading processes per rank (default: 4, at most the CPUs available)")
    if model_ema is not None:
        ema = parser.add_argument_group("model EMA")
        ema.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=model_ema)
        ema.add_argument("--model-ema-decay", type=probability, default=model_ema_decay)
        ema.add_argument("--model-ema-warmup", action=argparse.BooleanOptionalAction, default=False)
        ema.add_argument("--model-ema-ref-batch", type=positive_int, default=None,
                         help="vitzoo: the decay is given for this global batch; use decay**(batch/ref) (DeiT-style)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=nonnegative_int, default=seed)
    run.add_argument("--device", default="", help="'cpu' forces the CPU; default: accelerate's choice")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                     help="mixed precision (through accelerate)")
    run.add_argument("--amp-dtype", default=amp_dtype, choices=["float16", "bfloat16"])
    run.add_argument("--output", default=output, metavar="DIR", help="parent folder of run directories")
    run.add_argument("--experiment", default="", metavar="NAME", help="run directory name (default: time-model)")
    run.add_argument("--resume", metavar="PATH", default="",
                     help="run directory or .state.pt to continue exactly; its saved flags become the defaults")
    run.add_argument("--log-interval", type=positive_int, default=log_interval, metavar="N",
                     help="updates between progress reports")
    if checkpoint_steps is not None:
        run.add_argument("--checkpoint-steps", type=positive_int, default=checkpoint_steps, metavar="N",
                         help="write `last` every N updates (and on a signal, and at the end)")


def add_per_update_optimizer_arguments(parser: argparse.ArgumentParser, *, lr: float, warmup_lr: float) -> None:
    """The flags :func:`vitzoo.train.engine.per_update_optimizer` reads (timm optimizer, schedule stepped per
    update), with a command's own learning-rate defaults."""
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--opt", default="adamw", help="timm optimizer name (adamw, sgd, ...)")
    optim.add_argument("--lr", type=positive_float, default=lr)
    optim.add_argument("--weight-decay", type=nonnegative_float, default=0.05)
    optim.add_argument("--momentum", type=nonnegative_float, default=0.9, help="SGD momentum")
    optim.add_argument("--sched", default="cosine", help="timm scheduler, stepped per update")
    optim.add_argument("--warmup-epochs", type=nonnegative_int, default=1)
    optim.add_argument("--warmup-lr", type=nonnegative_float, default=warmup_lr)
    optim.add_argument("--min-lr", type=nonnegative_float, default=warmup_lr)


def finish_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-c/--config`` and set the defaults aside (see :func:`vitzoo.train.config.enable_config_file`)."""
    from vitzoo.train.config import enable_config_file

    return enable_config_file(parser)


def report_stop(command: str, result: Any) -> Optional[int]:
    """Print how to continue a run stopped by a signal and return its exit status (128 + signal), else None."""
    if not result.stopped_by_signal:
        return None
    print(f"stopped by signal {result.stopped_by_signal} at update {result.steps}; resume with: "
          f"vitzoo {command} --resume {result.run_dir}")
    return 128 + result.stopped_by_signal
