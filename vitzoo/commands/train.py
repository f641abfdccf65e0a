"""``vitzoo train``: train an image classifier on an ImageFolder (or the embedded digits) with accelerate.

    vitzoo train -c configs/demo/digits.yaml --output runs --experiment demo
    accelerate launch --multi_gpu --num_processes 8 tools/train.py -c configs/imagenet/ravlt_s.yaml --data-dir DIR
    vitzoo train --resume runs/demo                 # exact continuation of a stopped run

Flags follow timm's ``train.py``; a YAML config (``-c``) holds defaults and typed flags win. The engine is
:class:`vitzoo.train.classification.ClassificationEngine`. Exits with 128 + the signal number when stopped
by SIGINT/SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ._models import check_model_kwargs
from ._training import add_run_arguments, finish_parser, report_stop
from ._types import nonnegative_float, nonnegative_int, positive_float, positive_int, probability

HELP = "train a classifier (timm flags, YAML config, accelerate; exact resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo train`` (timm ``train.py`` names; vitzoo additions say so in their help)."""
    from timm.utils import ParseKwargs

    from vitzoo.data import DIGITS_DATASET

    add_run_arguments(parser, batch_size=128, epochs=300, seed=42, log_interval=50, model_ema=False,
                      model_ema_decay=0.9998)

    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", metavar="DIR", default=None,
                       help="ImageFolder root with <train-split>/<class>/<image> and <val-split>/<class>/<image>")
    group.add_argument("--dataset", "-d", metavar="NAME", default="", choices=["", DIGITS_DATASET],
                       help=f"'' for an ImageFolder at --data-dir; '{DIGITS_DATASET}' builds the embedded digits "
                            f"there (default: ~/.cache/vitzoo/digits) on first use")
    group.add_argument("--train-split", metavar="NAME", default="train")
    group.add_argument("--val-split", metavar="NAME", default="validation", help="also finds val/, valid/, eval/")
    group.add_argument("--pin-mem", action=argparse.BooleanOptionalAction, default=False)

    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="NAME", default=None, help="a registered model (vitzoo or timm)")
    group.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="constructor keyword arguments, key=value (in YAML: a mapping)")
    group.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False,
                       help="start from the model's pretrained cfg weights")
    group.add_argument("--initial-checkpoint", metavar="PATH", default="",
                       help="start from these weights (official .pth through the family converter, or safetensors)")
    group.add_argument("--num-classes", type=positive_int, default=None, metavar="N",
                       help="default: classes found in the data")
    group.add_argument("--gp", default=None, metavar="POOL", help="global pool type (model default if unset)")
    group.add_argument("--img-size", type=positive_int, default=None, metavar="N",
                       help="input side (model default if unset)")
    group.add_argument("--input-size", type=positive_int, nargs=3, default=None, metavar=("C", "H", "W"))
    group.add_argument("--crop-pct", type=positive_float, default=None, help="evaluation center-crop fraction")
    group.add_argument("--crop-mode", default=None, help="evaluation crop mode (timm: center, squash, border)")
    group.add_argument("--mean", type=float, nargs="+", default=None)
    group.add_argument("--std", type=positive_float, nargs="+", default=None)
    group.add_argument("--interpolation", default="", help="evaluation resize interpolation (model default if unset)")
    group.add_argument("-vb", "--validation-batch-size", type=positive_int, default=None, metavar="N")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--torchcompile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                       help="torch.compile the model (backend, default inductor)")
    group.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=False,
                       help="SyncBatchNorm across processes")

    group = parser.add_argument_group("optimizer")
    group.add_argument("--opt", default="adamw", metavar="OPTIMIZER", help="a timm optimizer name")
    group.add_argument("--opt-eps", type=positive_float, default=None)
    group.add_argument("--opt-betas", type=probability, nargs="+", default=None)
    group.add_argument("--momentum", type=nonnegative_float, default=0.9)
    group.add_argument("--weight-decay", type=nonnegative_float, default=0.05)
    group.add_argument("--layer-decay", type=positive_float, default=None)

    group = parser.add_argument_group("learning-rate schedule")
    group.add_argument("--sched", default="cosine", metavar="SCHEDULER")
    group.add_argument("--sched-on-updates", action=argparse.BooleanOptionalAction, default=False,
                       help="step the schedule every update")
    group.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: from --lr-base)")
    group.add_argument("--lr-base", type=positive_float, default=5e-4,
                       help="learning rate at a global batch of --lr-base-size")
    group.add_argument("--lr-base-size", type=positive_int, default=512)
    group.add_argument("--lr-base-scale", default="", choices=["", "linear", "sqrt"],
                       help="'' chooses like timm: sqrt for adaptive optimizers, linear otherwise")
    group.add_argument("--warmup-lr", type=nonnegative_float, default=1e-6)
    group.add_argument("--min-lr", type=nonnegative_float, default=1e-5)
    group.add_argument("--warmup-epochs", type=nonnegative_int, default=5)
    group.add_argument("--warmup-prefix", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--cooldown-epochs", type=nonnegative_int, default=0)
    group.add_argument("--decay-epochs", type=positive_float, default=90)
    group.add_argument("--decay-milestones", type=nonnegative_int, nargs="+", default=[90, 180, 270])
    group.add_argument("--decay-rate", type=positive_float, default=0.1)
    group.add_argument("--patience-epochs", type=nonnegative_int, default=10)

    group = parser.add_argument_group("augmentation and regularisation")
    group.add_argument("--no-aug", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--scale", type=probability, nargs=2, default=[0.08, 1.0], help="random-resized-crop area range")
    group.add_argument("--ratio", type=positive_float, nargs=2, default=[3.0 / 4.0, 4.0 / 3.0])
    group.add_argument("--hflip", type=probability, default=0.5)
    group.add_argument("--vflip", type=probability, default=0.0)
    group.add_argument("--color-jitter", type=nonnegative_float, default=0.4)
    group.add_argument("--aa", default=None, metavar="POLICY", help="auto-augment policy, e.g. rand-m9-mstd0.5-inc1")
    group.add_argument("--aug-repeats", type=nonnegative_float, default=0,
                       help="repeated augmentation (timm RepeatAugSampler)")
    group.add_argument("--reprob", type=probability, default=0.0, help="random erasing probability")
    group.add_argument("--remode", default="pixel")
    group.add_argument("--recount", type=positive_int, default=1)
    group.add_argument("--mixup", type=nonnegative_float, default=0.0)
    group.add_argument("--cutmix", type=nonnegative_float, default=0.0)
    group.add_argument("--cutmix-minmax", type=probability, nargs="+", default=None)
    group.add_argument("--mixup-prob", type=probability, default=1.0)
    group.add_argument("--mixup-switch-prob", type=probability, default=0.5)
    group.add_argument("--mixup-mode", default="batch", choices=["batch", "pair", "elem"])
    group.add_argument("--mixup-off-epoch", type=nonnegative_int, default=0)
    group.add_argument("--smoothing", type=probability, default=0.1)
    group.add_argument("--train-interpolation", default="random")
    group.add_argument("--drop", type=probability, default=0.0, help="dropout before the head")
    group.add_argument("--drop-path", type=probability, default=None, help="stochastic depth (model default if unset)")


    group = parser.add_argument_group("evaluation")
    group.add_argument("--eval-metric", default="top1", choices=["top1", "top5", "loss"], help="decides 'best'")
    finish_parser(parser)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``vitzoo train`` flags resolved over a ``-c`` YAML file and, on ``--resume``, the run's own flags."""
    from vitzoo.train.classification import check_train_args
    from vitzoo.train.config import resolve_args

    parser = argparse.ArgumentParser(prog="vitzoo train")
    add_arguments(parser)
    return check_train_args(resolve_args(parser.parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.classification import check_train_args, train_classifier
    from vitzoo.train.config import resolve_args
    from vitzoo.train.runtime import configure_logging, is_main_process

    args = check_train_args(resolve_args(args))
    check_model_kwargs(args.model, args.model_kwargs or {})
    is_main = is_main_process()
    configure_logging(is_main)
    result = train_classifier(args)
    if not is_main:
        return 128 + result.stopped_by_signal if result.stopped_by_signal else 0
    stopped = report_stop("train", result)
    if stopped is not None:
        return stopped
    metrics = result.last_metrics
    if metrics:
        key = "ema_top1" if "ema_top1" in metrics else "top1"
        weights = "EMA weights" if key == "ema_top1" else "weights"
        print(f"validation top-1 {metrics[key]:.2f}% ({weights}, last epoch {metrics['epoch']}); "
              f"best {result.eval_metric} {result.best_value:.4g} at epoch {result.best_epoch}")
    print(f"curves:     {result.curves}")
    print(f"checkpoint: {result.best_checkpoint or result.last_checkpoint}")
    return 0
