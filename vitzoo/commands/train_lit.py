"""``vitzoo train_lit``: train LiT (or its DiT twin) on cached latents, with inheritance and distillation from a DiT.

    vitzoo train_lit -c configs/diffusion/lit_digits.yaml                  # the embedded digits generator (CPU)
    accelerate launch --multi_gpu --num_processes 8 tools/train_lit.py -c configs/diffusion/lit_xl_2_256.yaml \\
        --data-dir <latent cache> --teacher DiT-XL-2-256x256.pt
    vitzoo train_lit --resume runs/lit_digits --max-steps 6000             # continue a run, its own settings

A YAML config (``-c``) holds flag defaults; typed flags win; ``--resume`` starts from the run's own
arguments. The engine is :class:`vitzoo.train.diffusion.DiffusionEngine`. Exits with 128 + the signal
number when stopped by SIGINT/SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ._training import add_run_arguments, finish_parser, report_stop

from ._types import nonnegative_float, positive_float

HELP = "train LiT/DiT on cached latents (DiT loss, LiT inheritance + distillation; accelerate, exact resume)"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo train_lit`` (timm/DiT names where they exist)."""
    from timm.utils import ParseKwargs

    from vitzoo.data import DIGITS_DATASET

    add_run_arguments(parser, batch_size=32, epochs=1400, seed=0, log_interval=100, amp_dtype="bfloat16",
                      model_ema=True, model_ema_decay=0.9999, checkpoint_steps=50_000, max_steps=True)

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None,
                      help="latent cache written by `vitzoo cache_latents` (with --dataset: where to build it)")
    data.add_argument("--dataset", default=None, choices=[DIGITS_DATASET],
                      help="the embedded digits as 8x8 grey pixels (built and cached on first use)")
    data.add_argument("--no-flip", action="store_true", help="do not use the cached mirror images")
    data.add_argument("--preload", action="store_true", help="load the whole cache into memory")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="lit", choices=["lit", "dit", "lightnet"],
                       help="student architecture (lightnet: DiT with the one-scan LightNet attention)")
    model.add_argument("--variant", default=None, help="published size: S/2, B/2, L/2, XL/2 (default: the class's)")
    model.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="constructor overrides, key=value (e.g. hidden_size=64 depth=4 guidance_channels=None)")
    model.add_argument("--grad-checkpointing", action="store_true")
    teacher = parser.add_argument_group("teacher, inheritance and distillation")
    teacher.add_argument("--teacher", default=None,
                         help="DiT checkpoint: official .pt, vitzoo/diffusers model or pipeline folder")
    teacher.add_argument("--teacher-kwargs", nargs="*", default={}, action=ParseKwargs,
                         help="teacher constructor values the checkpoint cannot tell (e.g. num_heads=16)")
    teacher.add_argument("--inherit", default="none", choices=["none", "class2image", "text2image"],
                         help="initialise the student from the teacher's weights (class2image: the paper's rule)")
    teacher.add_argument("--distill", action="store_true", help="add LiT's distillation terms (needs --teacher)")
    teacher.add_argument("--kd-noise-weight", type=nonnegative_float, default=0.5,
                         help="lambda1 (paper: 0.5 class-conditional)")
    teacher.add_argument("--kd-variance-weight", type=nonnegative_float, default=0.05, help="lambda2 (paper: 0.05)")
    teacher.add_argument("--kd-variance-target", default="raw", choices=["raw", "log_variance"])
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW learning rate, constant (DiT)")
    optim.add_argument("--weight-decay", type=nonnegative_float, default=0.0)
    export = parser.add_argument_group("export")
    export.add_argument("--vae", default=None,
                     help="VAE for the exported pipeline (default: the one the cache was made with)")
    export.add_argument("--no-pipeline", action="store_true", help="do not write <run>/pipeline at the end")
    finish_parser(parser)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``vitzoo train_lit`` flags over a ``-c`` YAML file and, on ``--resume``, the run's own arguments."""
    from vitzoo.train.config import resolve_args
    from vitzoo.train.diffusion import check_train_lit_args

    parser = argparse.ArgumentParser(prog="vitzoo train_lit")
    add_arguments(parser)
    return check_train_lit_args(resolve_args(parser.parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.config import resolve_args
    from vitzoo.train.diffusion import train_lit
    from vitzoo.train.runtime import configure_logging, is_main_process

    configure_logging(is_main_process())
    result = train_lit(resolve_args(args))
    stopped = report_stop("train_lit", result)
    if stopped is not None:
        return stopped
    print(f"trained {result.steps} steps (last loss {result.last_loss:.4f}); run {result.run_dir}"
          + (f"; pipeline {result.exported}" if result.exported else ""))
    return 0
