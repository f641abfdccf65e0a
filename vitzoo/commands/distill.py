"""``vitzoo distill --method linfusion``: distil a linear-attention UNet from a Stable Diffusion pipeline.

    vitzoo distill --method linfusion -c configs/diffusion/linfusion_sd15.yaml \
        --model stable-diffusion-v1-5/stable-diffusion-v1-5 --data-dir captions/ --experiment lf15
    accelerate launch --multi_gpu --num_processes 8 tools/distill.py --method linfusion -c ... # multi-GPU
    vitzoo distill --resume runs/lf15                                    # continue exactly, its own settings

``--data-dir`` is an image-caption folder (each image with a same-stem ``.txt``). ``-c/--config`` reads
a YAML file of flag defaults (keys are flag names with underscores); flags on the command line win.
The engine is :class:`vitzoo.train.distill.DistillEngine`.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ._training import add_run_arguments, finish_parser, report_stop

from ._types import multiple_of, nonnegative_float, positive_float, positive_int, probability

HELP = "distil linear attention into a diffusers Stable Diffusion UNet (--method linfusion); accelerate multi-GPU"

METHODS = ("linfusion",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, batch_size=8, epochs=300, seed=0, log_interval=10, model_ema=None,
                      checkpoint_steps=10_000, max_steps=True)
    group = parser.add_argument_group("distillation")
    group.add_argument("--method", choices=METHODS, default="linfusion")
    group.add_argument("--model", default=None,
                       help="diffusers SD-1.x/2.x/XL pipeline directory or hub id ('tiny-random': offline toy)")
    group.add_argument("--data-dir", default=None, help="image-caption folder (image + same-stem .txt)")
    group.add_argument("--resolution", type=multiple_of(8, "the VAE's factor"), default=512)
    group.add_argument("--resize", choices=["stretch", "center-crop"], default="stretch",
                       help="stretch: SD-1.5/2.1 recipe (no crop); center-crop: SD-XL recipe")
    group.add_argument("--lr", type=positive_float, default=1e-4)
    group.add_argument("--weight-decay", type=nonnegative_float, default=0.0)
    group.add_argument("--adam-beta1", type=probability, default=0.9)
    group.add_argument("--adam-beta2", type=probability, default=0.999)
    group.add_argument("--kd-weight", type=nonnegative_float, default=0.5,
                       help="weight of the output distillation term")
    group.add_argument("--feature-weight", type=nonnegative_float, default=0.5,
                       help="weight of the attention-feature term")
    group.add_argument("--mid-dim-scale", type=positive_int, default=None,
                       help="LinFusion MLP width C/scale (16 for SD-XL)")
    group.add_argument("--init", default=None, help="start from this LinFusion checkpoint instead of fresh modules")
    group.add_argument("--grad-checkpointing", action="store_true", help="recompute UNet activations in backward")
    finish_parser(parser)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Parser defaults < the resumed run's flags < config file (``-c``) < flags typed on the command line."""
    from vitzoo.train.config import resolve_args

    return resolve_args(args)


def _check(args: argparse.Namespace) -> argparse.Namespace:
    if args.model is None or args.data_dir is None:
        raise ValueError("--model and --data-dir are required (on the command line or in the config)")
    return args


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``vitzoo distill`` argument parsing for Python callers."""
    parser = argparse.ArgumentParser(prog="vitzoo distill")
    add_arguments(parser)
    return _check(resolve(parser.parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.distill import distill
    from vitzoo.train.runtime import configure_logging, is_main_process

    args = _check(resolve(args))
    configure_logging(is_main_process())
    result = distill(args)
    stopped = report_stop("distill", result)
    if stopped is not None:
        return stopped
    print(f"finished at update {result.steps} (last logged loss {result.last_loss:.4f}); run {result.run_dir}; "
          f"weights {result.exported}")
    return 0
