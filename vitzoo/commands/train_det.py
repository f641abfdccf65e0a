"""``vitzoo train_det``: train a torchvision detector (Mask R-CNN, Faster R-CNN, RetinaNet, FCOS) on a vitzoo
backbone with COCO-format data.

    vitzoo train_det --dataset vitzoo/shapes               # the embedded shapes set, the CPU recipe (defaults)
    vitzoo train_det -c configs/detection/shapes.yaml      # the same recipe, written out
    vitzoo train_det --data-dir /data/coco --train-split train2017 --val-split val2017 --backbone ravlt_s \\
        --backbone-kwargs --pretrained-backbone RAVLT-S.pth --min-size 800 --max-size 1333 --fpn-channels 256 \\
        --proposals 2000 1000 --box-samples 512 --box-head-dim 1024 --mask-head-channels 256 256 256 256
    vitzoo train_det --resume runs/<experiment>            # continues exactly after Ctrl-C / SIGTERM / a crash

The defaults are the shapes recipe; ``--backbone-kwargs`` with no value gives the backbone its published sizes.
A YAML config (``-c``) holds flag defaults; typed flags win; ``--resume`` starts from the run's own arguments.
The engine is :class:`vitzoo.train.detection.DetectionEngine`. Exits with 128 + the signal number when stopped
by SIGINT/SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ._detection import add_data_arguments, add_detector_arguments, refuse_unused_detector_flags
from ._training import add_per_update_optimizer_arguments, add_run_arguments, finish_parser, report_stop

HELP = "train a torchvision detector on a vitzoo backbone with COCO data (box/mask mAP; accelerate, exact resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo train_det`` (timm ``train.py`` names for the optimisation)."""
    add_run_arguments(parser, batch_size=8, epochs=6, seed=0, log_interval=10, model_ema=False, workers=0)
    add_data_arguments(parser)
    splits = parser.add_argument_group("splits")
    splits.add_argument("--train-split", default="train", help="annotations/instances_<split>.json and <split>/")
    splits.add_argument("--val-split", default="val")
    splits.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    add_detector_arguments(parser)
    add_per_update_optimizer_arguments(parser, lr=1e-3, warmup_lr=1e-5)
    finish_parser(parser)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``vitzoo train_det`` flags over a ``-c`` YAML file and, on ``--resume``, the run's own arguments."""
    from vitzoo.train.config import resolve_args
    from vitzoo.train.detection import check_detection_args

    parser = argparse.ArgumentParser(prog="vitzoo train_det")
    add_arguments(parser)
    typed = parser.parse_args(argv)
    args = check_detection_args(resolve_args(typed))
    refuse_unused_detector_flags(set(vars(typed)), args.detector)
    return args


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.config import resolve_args
    from vitzoo.train.detection import train_detector
    from vitzoo.train.runtime import configure_logging, is_main_process

    typed = set(vars(args))
    args = resolve_args(args)
    refuse_unused_detector_flags(typed, args.detector)
    configure_logging(is_main_process())
    result = train_detector(args)
    stopped = report_stop("train_det", result)
    if stopped is not None:
        return stopped
    metrics = result.last_metrics
    summary = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("bbox_mAP", "segm_mAP", "ema_bbox_mAP", "ema_segm_mAP")
                        if k in metrics)
    print(f"trained {result.steps} updates ({summary}); run {result.run_dir}"
          + (f"; predictions {result.exported}" if result.exported else ""))
    return 0
