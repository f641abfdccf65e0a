"""``vitzoo eval_det``: COCO box (and mask) mAP of a ``vitzoo train_det`` checkpoint on a COCO split, as JSON,
and a PNG of its predictions.

    vitzoo eval_det --checkpoint runs/<experiment> --dataset vitzoo/shapes      # <run>/eval_val/metrics.json
    vitzoo eval_det --untrained --dataset vitzoo/shapes --output runs/untrained  # the recipe before training

A checkpoint carries its detector and categories, so the detector flags are refused with it; ``--untrained``
builds the detector those flags describe, initialised from ``--seed`` exactly as ``train_det`` initialises it.
"""

from __future__ import annotations

import argparse

from ._detection import add_data_arguments, add_detector_arguments, refuse_unused_detector_flags
from ._training import default_workers, finish_parser
from ._types import nonnegative_int, positive_int

HELP = "COCO box/mask mAP of a train_det checkpoint (or an untrained detector) on a COCO split; JSON + PNG"

_DRAWING = {"score_thresh", "preview_images"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo eval_det``."""
    parser.add_argument("--checkpoint", metavar="PATH", default="",
                        help="train_det run directory (best, else last), .safetensors or .state.pt")
    parser.add_argument("--untrained", action="store_true",
                        help="evaluate the detector of the detector flags and --seed before any training")
    add_data_arguments(parser)
    parser.add_argument("--split", default="val", help="annotations/instances_<split>.json and <split>/")
    parser.add_argument("--output", default="", metavar="DIR",
                        help="where metrics.json and predictions.png go (default: <run>/eval_<split>)")
    add_detector_arguments(parser)
    parser.add_argument("-b", "--batch-size", type=positive_int, default=8)
    parser.add_argument("-j", "--workers", type=nonnegative_int, default=default_workers(),
                        help="data loading processes (default: 4, at most the CPUs available)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="initialisation of --untrained")
    parser.add_argument("--device", default="", help="'cpu' forces the CPU")
    finish_parser(parser)


def _detector_dests() -> set[str]:
    parser = argparse.ArgumentParser()
    add_detector_arguments(parser)
    return {a.dest for a in parser._actions if a.dest != "help"} - _DRAWING


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from vitzoo.train.config import resolve_args
    from vitzoo.train.detection import evaluate_run
    from vitzoo.train.runtime import configure_logging, is_main_process

    typed = set(vars(args))
    args = resolve_args(args)
    if bool(args.checkpoint) == bool(args.untrained):
        raise ValueError("give --checkpoint (a train_det run) or --untrained (the detector of the flags), not both")
    if args.checkpoint:
        clashing = sorted(typed & _detector_dests())
        if clashing:
            raise ValueError(f"{', '.join('--' + d.replace('_', '-') for d in clashing)}: the checkpoint carries its "
                             f"detector; these flags go with --untrained")
        checkpoint = Path(args.checkpoint)
        run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
        args.output = args.output or str(run_dir / f"eval_{args.split}")
    elif not args.output:
        raise ValueError("--untrained needs --output DIR (where metrics.json and predictions.png go)")
    else:
        refuse_unused_detector_flags(typed, args.detector)
    configure_logging(is_main_process())
    result = evaluate_run(args)
    if is_main_process():
        print(json.dumps(result, indent=1))
    return 0
