"""``vitzoo eval_aigi``: score a ``train_aigi`` detector on a GenImage-style split: accuracy on real and on fake,
AP and ROC-AUC per generator with mean ± std (spec ``../shared/specs/ppl.md`` §4), as JSON and a table.

    vitzoo eval_aigi runs/<experiment> --dataset vitzoo/aigi-photos            # <run>/eval_val/metrics.json
    vitzoo eval_aigi runs/<experiment> --data-dir /data/GenImage --jpeg-quality 75 --output runs/eval_jpeg75
    vitzoo eval_aigi runs/<experiment> --dataset vitzoo/aigi-photos --cde 8 --pasted

Robustness (§3.4): ``--blur SIGMA``, ``--resize FACTOR`` and ``--jpeg-quality Q`` perturb every image before the
model, in that order. ``--cde N`` writes the CDE maps (§2) of N images as ``cde.png``; ``--pasted`` pastes patches
of the reconstruction into the held-out real images with known masks and reports the heatmap's mean inside and
outside the pasted patches.
"""

from __future__ import annotations

import argparse

from ._training import default_workers
from ._types import bounded_int, nonnegative_int, positive_float, positive_int, probability

HELP = "accuracy real/fake, AP and ROC-AUC per generator of a train_aigi detector (JSON + table; robustness, CDE)"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` / ``--dataset``: a GenImage-style root, or the embedded photos."""
    from vitzoo.aigi.embedded import AIGI_PHOTOS_DATASET

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None, metavar="DIR",
                      help="GenImage-style root <generator>/<split>/{ai,nature} (with --dataset: where it is built)")
    data.add_argument("--dataset", default="", choices=["", AIGI_PHOTOS_DATASET],
                      help=f"'{AIGI_PHOTOS_DATASET}': the embedded photos (built on first use)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo eval_aigi``."""
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                        help="train_aigi run directory, its detector.safetensors, or best/last.safetensors")
    add_data_arguments(parser)
    parser.add_argument("--split", default="val")
    parser.add_argument("--generators", nargs="+", default=None, metavar="NAME", help="default: all")
    parser.add_argument("--output", default="", metavar="DIR", help="default: <run>/eval_<split>")
    robust = parser.add_argument_group("robustness (applied before the model)")
    robust.add_argument("--jpeg-quality", type=bounded_int(1, 100), default=None, metavar="Q")
    robust.add_argument("--resize", type=positive_float, default=None, metavar="FACTOR",
                        help="resize every image by this factor (bicubic), e.g. 0.5")
    robust.add_argument("--blur", type=positive_float, default=None, metavar="SIGMA", help="Gaussian blur, pixels")
    maps = parser.add_argument_group("patch maps")
    maps.add_argument("--cde", type=nonnegative_int, default=0, metavar="N", help="CDE maps of N images -> cde.png")
    maps.add_argument("--pasted", action="store_true",
                      help="heatmap inside vs outside reconstructed patches pasted into the real images")
    maps.add_argument("--pasted-ratio", type=probability, default=0.5, help="fraction of patches pasted")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=32)
    parser.add_argument("-j", "--workers", type=nonnegative_int, default=default_workers(2))
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="masks of --pasted")
    parser.add_argument("--device", default="", help="'cpu' forces the CPU")


def resolve_device(name: str):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vitzoo.train.aigi import aigi_data_root, load_detector
    from vitzoo.train.aigi_eval import Perturb, evaluate_folder
    from vitzoo.train.runtime import configure_logging

    configure_logging(True)
    if not args.data_dir and not args.dataset:
        raise ValueError("no data: pass --data-dir DIR (GenImage-style) or --dataset vitzoo/aigi-photos")
    device = resolve_device(args.device)
    loaded = load_detector(args.checkpoint, device=device)
    checkpoint = Path(args.checkpoint)
    output = Path(args.output or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / f"eval_{args.split}")
    perturb = Perturb(jpeg_quality=args.jpeg_quality, resize=args.resize, blur=args.blur)
    result = evaluate_folder(loaded, aigi_data_root(args), output, split=args.split, generators=args.generators,
                             perturb=perturb, batch_size=args.batch_size, workers=args.workers, cde=args.cde,
                             pasted=args.pasted, pasted_ratio=args.pasted_ratio, seed=args.seed, device=device)
    print(result["table"])
    overall = result["overall"]
    print(f"{result['images']} images ({result['skipped']} skipped){' with ' + str(result['perturbation']) if result['perturbation'] else ''}: "
          f"AUC {overall['auc']:.4f}, AP {overall['ap']:.4f}, acc real {overall['acc_real']:.4f}, "
          f"acc fake {overall['acc_fake']:.4f}")
    if "pasted" in result:
        pasted = result["pasted"]
        probe = (f"probe heatmap inside {pasted['probe_inside']:.4f} vs outside {pasted['probe_outside']:.4f}; "
                 if pasted["probe_inside"] is not None else "")
        print(f"pasted patches ({pasted['images']} images, ratio {pasted['ratio']}): {probe}CDE inside "
              f"{pasted['cde_inside']:.4f} vs outside {pasted['cde_outside']:.4f}")
    print(f"wrote {output / 'metrics.json'}, {output / 'metrics.md'}"
          + "".join(f", {result[key]}" for key in ("cde_png", "pasted_png") if key in result))
    return 0
