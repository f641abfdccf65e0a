"""``vitzoo train``: train an image classifier on an ImageFolder (or the embedded digits) with accelerate.

    vitzoo train -c configs/demo/digits.yaml --output runs --experiment demo
    accelerate launch --multi_gpu --num_processes 8 tools/train.py -c configs/imagenet/ravlt_s.yaml --data-dir DIR
    vitzoo train --resume runs/demo                 # exact continuation of a stopped run

Flags follow timm's ``train.py``; a YAML config (``-c``) holds defaults and typed flags win. Exits with
128 + the signal number when stopped by SIGINT/SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse

HELP = "train a classifier (timm flags, YAML config, accelerate; exact resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vitzoo.train.classification import add_train_arguments
    from vitzoo.train.config import enable_config_file

    add_train_arguments(parser)
    enable_config_file(parser)


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.classification import resolve_train_args, train_classifier
    from vitzoo.train.runtime import configure_logging, is_main_process

    is_main = is_main_process()
    configure_logging(is_main)
    result = train_classifier(resolve_train_args(args))
    if not is_main:
        return 128 + result.stopped_by_signal if result.stopped_by_signal else 0
    if result.stopped_by_signal:
        print(f"stopped by signal {result.stopped_by_signal}; resume with: vitzoo train --resume {result.run_dir}")
        return 128 + result.stopped_by_signal
    metrics = result.last_metrics
    if metrics:
        key = "ema_top1" if "ema_top1" in metrics else "top1"
        weights = "EMA weights" if key == "ema_top1" else "weights"
        print(f"validation top-1 {metrics[key]:.2f}% ({weights}, last epoch {metrics['epoch']}); "
              f"best {result.eval_metric} {result.best_value:.4g} at epoch {result.best_epoch}")
    print(f"curves:     {result.curves}")
    print(f"checkpoint: {result.best_checkpoint or result.last_checkpoint}")
    return 0
