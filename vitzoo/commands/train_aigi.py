"""``vitzoo train_aigi``: train a PPL detector of AI-generated images (Panoptic Patch Learning, arXiv:2504.01396)
on a GenImage-style folder or the embedded ``vitzoo/aigi-photos``.

    vitzoo train_aigi -c configs/aigi/photos.yaml              # embedded photos vs tiny-VAE reconstructions, CPU
    vitzoo train_aigi --data-dir /data/GenImage --generators sdv14 --backbone vit_large_patch14_clip_224 \\
        --pretrained-backbone clip_l14.safetensors --img-size 224 --finetune lora --lora-rank 8
    vitzoo train_aigi --resume runs/<experiment>               # continues exactly after Ctrl-C / SIGTERM / a crash

Defaults are the spec's (``../shared/specs/ppl.md`` §3.2-§3.3): randomized patch reconstruction with r_rpr = 0.5 and
p_rpr = 0.9, loss λ·L_con + (1 − λ)·L_bce with λ = 0.3 and α = 1.0, LoRA fine-tuning. A YAML config (``-c``) holds
flag defaults; typed flags win; ``--resume`` starts from the run's own arguments. The engine is
:class:`vitzoo.train.aigi.AIGIEngine`. Exits with 128 + the signal number when stopped by SIGINT/SIGTERM after
writing a checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ._training import add_per_update_optimizer_arguments, add_run_arguments, finish_parser, report_stop
from ._types import nonnegative_float, positive_float, positive_int, probability

HELP = "train a PPL detector of AI-generated images (patch reconstruction + patch contrastive loss; exact resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo train_aigi`` (timm ``train.py`` names for the optimisation)."""
    from timm.utils import ParseKwargs

    from vitzoo.aigi.detector import FINETUNE_MODES
    from vitzoo.aigi.embedded import AIGI_PHOTOS_DATASET
    from vitzoo.aigi.losses import CONTRASTIVE_LOSSES
    from vitzoo.train.aigi import RPR_CHOICES

    add_run_arguments(parser, batch_size=32, epochs=10, seed=0, log_interval=20, model_ema=False)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None, metavar="DIR",
                      help="GenImage-style root <generator>/{train,val}/{ai,nature} (reconstructions of the real "
                           "images in <root>/recon/); with --dataset: where to build it")
    data.add_argument("--dataset", default="", choices=["", AIGI_PHOTOS_DATASET],
                      help=f"'{AIGI_PHOTOS_DATASET}': the embedded photos vs tiny-VAE reconstructions, built on first "
                           f"use at --data-dir (default ~/.cache/vitzoo/aigi-photos)")
    data.add_argument("--train-split", default="train")
    data.add_argument("--val-split", default="val")
    data.add_argument("--generators", nargs="+", default=None, metavar="NAME",
                      help="train on these generators only (GenImage protocol: sdv14); default all")

    model = parser.add_argument_group("detector")
    model.add_argument("--backbone", default="vzvit_small", metavar="NAME",
                       help="a patch-token backbone: vzvit_*, inline_deit_*, timm vit_* (CLIP / DINOv2)")
    model.add_argument("--backbone-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="backbone constructor arguments, key=value (e.g. patch_size=14 depth=4 mixer=linear)")
    model.add_argument("--pretrained-backbone", default=None, metavar="FILE",
                       help="local backbone weights (official, timm or vitzoo; never downloaded)")
    model.add_argument("--img-size", type=positive_int, default=224,
                       help="input side, a multiple of the patch size (the crop the detector sees)")
    model.add_argument("--finetune", default="lora", choices=list(FINETUNE_MODES),
                       help="lora (peft, the paper's), partial (last blocks), full, frozen (heads only)")
    model.add_argument("--lora-rank", type=positive_int, default=8)
    model.add_argument("--lora-alpha", type=positive_float, default=16.0)
    model.add_argument("--lora-dropout", type=probability, default=0.0)
    model.add_argument("--lora-targets", nargs="+", default=None, metavar="REGEX",
                       help="regexes of the backbone's Linear names to adapt (default: every Linear of each "
                            "block's token mixer)")
    model.add_argument("--partial-blocks", type=positive_int, default=1, help="blocks trained by --finetune partial")
    model.add_argument("--patch-head", action=argparse.BooleanOptionalAction, default=True,
                       help="the patch probe giving one-pass heatmaps (vitzoo's extension, spec §6)")

    rpr = parser.add_argument_group("patch mixing and loss (spec §3.2-§3.3)")
    rpr.add_argument("--rpr", default="iclr", choices=list(RPR_CHOICES),
                     help="iclr: real image + reconstructed patches; v1: random patch replacement; none")
    rpr.add_argument("--rpr-ratio", type=probability, default=0.5, help="r_rpr, the fraction of patches mixed")
    rpr.add_argument("--rpr-prob", type=probability, default=0.9,
                     help="p_rpr, the probability that a fake sample is replaced by a mixed image")
    rpr.add_argument("--lam", type=probability, default=0.3, help="λ, the weight of the patch contrastive loss")
    rpr.add_argument("--margin", type=nonnegative_float, default=1.0, help="α of the contrastive hinge")
    rpr.add_argument("--contrastive", default="margin", choices=list(CONTRASTIVE_LOSSES))
    rpr.add_argument("--temperature", type=positive_float, default=0.5, help="τ of --contrastive infonce")
    rpr.add_argument("--patch-probe-weight", type=nonnegative_float, default=1.0,
                     help="weight of the patch probe's BCE (0: off)")
    rpr.add_argument("--max-tokens", type=positive_int, default=4096,
                     help="patch tokens per batch in the contrastive term (a seeded subset when more)")

    add_per_update_optimizer_arguments(parser, lr=1e-4, warmup_lr=1e-6)
    finish_parser(parser)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``vitzoo train_aigi`` flags over a ``-c`` YAML file and, on ``--resume``, the run's own arguments."""
    from vitzoo.train.aigi import check_aigi_args
    from vitzoo.train.config import resolve_args

    parser = argparse.ArgumentParser(prog="vitzoo train_aigi")
    add_arguments(parser)
    return check_aigi_args(resolve_args(parser.parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.aigi import train_aigi
    from vitzoo.train.config import resolve_args
    from vitzoo.train.runtime import configure_logging, is_main_process

    configure_logging(is_main_process())
    result = train_aigi(resolve_args(args))
    stopped = report_stop("train_aigi", result)
    if stopped is not None:
        return stopped
    metrics = result.last_metrics
    summary = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("auc", "ap", "acc_real", "acc_fake", "ema_auc")
                        if k in metrics)
    print(f"trained {result.steps} updates ({summary}); run {result.run_dir}"
          + (f"; detector {result.exported}" if result.exported else ""))
    return 0
