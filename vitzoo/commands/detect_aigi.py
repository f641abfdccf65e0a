"""``vitzoo detect_aigi``: is this image AI-generated? P(fake) and a patch heatmap for every image of files and
folders, from a ``train_aigi`` detector.

    vitzoo detect_aigi photos/ suspicious.jpg --model runs/<experiment> --output detections/

Writes ``report.csv`` and ``report.json`` (one row per file: P(fake), the prediction at ``--threshold``, size,
tiles, heatmap path, and for bad files the reason) and ``heatmaps/<name>.png`` (the patch heatmap over the image).
Images larger than the detector's input are tiled (``--stride``; spec ``../shared/specs/ppl.md`` §6) and their
tile logits averaged (``--agg``). Files that are not images, truncated or corrupt are reported and skipped.
"""

from __future__ import annotations

import argparse

from ._types import positive_int, probability

HELP = "P(AI-generated) and a patch heatmap PNG per image of files/folders (CSV + JSON report; tiled inference)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo detect_aigi``."""
    from vitzoo.aigi.attribution import AGGREGATIONS

    parser.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS", help="image files and folders (recursive)")
    parser.add_argument("--model", required=True, metavar="RUN",
                        help="train_aigi run directory, its detector.safetensors, or best/last.safetensors")
    parser.add_argument("--output", default="aigi_detections", metavar="DIR")
    parser.add_argument("--threshold", type=probability, default=0.5, help="P(fake) at which an image is called fake")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="tile step for large images, a multiple of the patch size (default: the input size)")
    parser.add_argument("--agg", default="mean_logit", choices=list(AGGREGATIONS), help="how tile logits combine")
    parser.add_argument("--heatmap", default="auto", choices=["auto", "probe", "cde", "none"],
                        help="auto: the patch probe when the detector has one, else CDE")
    parser.add_argument("--cmap", default="inferno", help="matplotlib colormap of the overlay")
    parser.add_argument("--alpha", type=probability, default=0.5, help="overlay opacity")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=16, help="tiles per forward pass")
    parser.add_argument("--device", default="", help="'cpu' forces the CPU")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import matplotlib

    from vitzoo.train.aigi import load_detector
    from vitzoo.train.aigi_eval import detect_files
    from vitzoo.train.runtime import configure_logging

    from .eval_aigi import resolve_device

    configure_logging(True)
    if args.cmap not in matplotlib.colormaps:
        raise ValueError(f"--cmap {args.cmap!r} is not a matplotlib colormap (e.g. inferno, viridis, jet)")
    device = resolve_device(args.device)
    loaded = load_detector(args.model, device=device)
    if args.stride is not None and (args.stride % loaded.detector.patch_size or args.stride > loaded.input_size):
        raise ValueError(f"--stride {args.stride} must be a multiple of the patch size {loaded.detector.patch_size} "
                         f"and at most the input size {loaded.input_size}")
    output = Path(args.output)
    report = detect_files(loaded, args.inputs, output, stride=args.stride, agg=args.agg, heatmap=args.heatmap,
                          threshold=args.threshold, batch_size=args.batch_size, cmap=args.cmap, alpha=args.alpha,
                          device=device)
    for row in report["results"]:
        if row["status"] == "ok":
            print(f"{row['p_fake']:.4f}  {row['prediction']:4s}  {row['path']}")
        else:
            print(f"{row['status']}: {row['path']}: {row['note']}")
    print(f"{report['ok']} image(s) scored ({report['fake']} fake), {report['skipped']} skipped, "
          f"{report['unreadable']} unreadable; wrote {output / 'report.csv'}, {output / 'report.json'}")
    return 0
