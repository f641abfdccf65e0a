"""The flags ``vitzoo train_det`` and ``vitzoo eval_det`` share: the COCO data, the detector and the prediction
picture. Their defaults are the embedded CPU recipe (``configs/detection/shapes.yaml`` writes the same values
out): Mask R-CNN on a narrow RAVLT-T (widths 32-128, depths 1-2-2-1) with a 64-channel FPN, small heads and
fewer proposals, at 128 px."""

from __future__ import annotations

import argparse

from ._types import bounded_int, nonnegative_int, positive_int, probability

__all__ = ["add_data_arguments", "add_detector_arguments"]

SHAPES_BACKBONE_KWARGS = {"embed_dims": [32, 64, 96, 128], "depths": [1, 2, 2, 1], "num_heads": [1, 2, 3, 4],
                          "drop_path_rate": 0.0}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` / ``--dataset``: a COCO root, or the embedded shapes set."""
    from vitzoo.data import SHAPES_DATASET

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None, metavar="DIR",
                      help="COCO root: annotations/instances_<split>.json and <split>/ images (with --dataset: "
                           "where to build it)")
    data.add_argument("--dataset", default=None, choices=[SHAPES_DATASET],
                      help="the embedded shapes set (photo-textured shapes on package photos; built on first use)")


def add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    """The detector of :func:`vitzoo.detection.build_detector` and how predictions are drawn."""
    from timm.utils import ParseKwargs

    from vitzoo.detection import DETECTORS

    model = parser.add_argument_group("detector")
    model.add_argument("--detector", default="maskrcnn", choices=list(DETECTORS))
    model.add_argument("--backbone", default="ravlt_t", metavar="NAME",
                       help="a hierarchical vitzoo model (or a timm model with multi-scale features_only)")
    model.add_argument("--backbone-kwargs", nargs="*", default=dict(SHAPES_BACKBONE_KWARGS), action=ParseKwargs,
                       help="backbone constructor overrides, key=value (default: a narrow RAVLT-T; the flag "
                            "with no value: the published sizes)")
    model.add_argument("--pretrained-backbone", default=None, metavar="FILE",
                       help="official, mmdet or vitzoo checkpoint of the backbone")
    model.add_argument("--frozen-stages", type=bounded_int(-1, 4), default=-1,
                       help="-1 none, 0 the stem, k the stem and stages 0..k-1 (mmdet's meaning)")
    model.add_argument("--norm-eval", action=argparse.BooleanOptionalAction, default=False,
                       help="keep the backbone's BatchNorms in eval mode")
    model.add_argument("--fpn-channels", type=positive_int, default=64)
    model.add_argument("--box-head-dim", type=positive_int, default=128, help="R-CNN box head width")
    model.add_argument("--mask-head-channels", type=positive_int, nargs="+", default=[64, 64],
                       help="Mask R-CNN mask head conv widths")
    model.add_argument("--min-size", type=positive_int, default=128, help="shorter image side after resizing")
    model.add_argument("--max-size", type=positive_int, default=128, help="longest image side after resizing")
    model.add_argument("--detections-per-img", type=positive_int, default=20,
                       help="detections kept per image (torchvision: 100; the shapes images hold 1-4 objects)")
    model.add_argument("--proposals", type=positive_int, nargs=2, default=[300, 150], metavar=("PRE", "POST"),
                       help="R-CNNs: RPN proposals per image kept before and after NMS (torchvision: 2000 1000 in "
                            "training, 1000 1000 in evaluation)")
    model.add_argument("--box-samples", type=positive_int, default=64,
                       help="R-CNNs: proposals sampled per image to train the box head (torchvision: 512)")
    model.add_argument("--detector-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="more torchvision detector arguments, key=value (e.g. box_score_thresh=0.01)")
    preview = parser.add_argument_group("prediction picture")
    preview.add_argument("--score-thresh", type=probability, default=0.5, help="draw predictions scoring at least this")
    preview.add_argument("--preview-images", type=nonnegative_int, default=6,
                         help="validation images in predictions.png (0: none)")


# flags that only some detectors read: given with another --detector they would be silently unused
_ONLY_FOR = {"proposals": ("maskrcnn", "fasterrcnn"), "box_samples": ("maskrcnn", "fasterrcnn"),
             "box_head_dim": ("maskrcnn", "fasterrcnn"), "mask_head_channels": ("maskrcnn",)}


def refuse_unused_detector_flags(typed: set[str], detector: str) -> None:
    """ValueError naming every flag typed on the command line that ``--detector`` does not read."""
    unused = [f"--{dest.replace('_', '-')} (only {' / '.join(kinds)})" for dest, kinds in _ONLY_FOR.items()
              if dest in typed and detector not in kinds]
    if unused:
        raise ValueError(f"--detector {detector} does not use {', '.join(unused)}")

