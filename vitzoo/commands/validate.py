"""``vitzoo validate``: top-1/top-5, loss and throughput of a checkpoint on an ImageFolder split, as JSON.

    vitzoo validate --checkpoint runs/demo/best.safetensors --dataset vitzoo/digits
    vitzoo validate --model ravlt_s --checkpoint RAVLT_S.pth --data-dir /data/imagenet --img-size 288
"""

from __future__ import annotations

import argparse

from ._models import check_model_kwargs
from ._training import default_workers
from ._types import nonnegative_int, positive_float, positive_int

HELP = "evaluate a vitzoo or official checkpoint on an ImageFolder (top-1/top-5, loss, images/s; JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo validate`` (timm ``validate.py`` names)."""
    from timm.utils import ParseKwargs

    from vitzoo.data import DIGITS_DATASET

    parser.add_argument("--checkpoint", metavar="PATH", default="",
                        help="vitzoo run directory / .safetensors / .state.pt, or an official checkpoint of --model")
    parser.add_argument("--model", metavar="NAME", default=None, help="needed for official checkpoints")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs)
    parser.add_argument("--pretrained", action="store_true", default=False,
                        help="use the model's pretrained cfg weights (downloads when the cfg has a URL)")
    parser.add_argument("--use-ema", action=argparse.BooleanOptionalAction, default=None,
                        help="for .state.pt: EMA or raw weights (default: what the run reported)")
    parser.add_argument("--num-classes", type=positive_int, default=None)
    parser.add_argument("--data-dir", metavar="DIR", default=None)
    parser.add_argument("--dataset", "-d", default="", choices=["", DIGITS_DATASET])
    parser.add_argument("--split", default="validation", help="split folder (validation also finds val/)")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=256)
    parser.add_argument("-j", "--workers", type=nonnegative_int, default=default_workers(),
                        help="data loading processes (default: 4, at most the CPUs available)")
    parser.add_argument("--img-size", type=positive_int, default=None, help="evaluate at this input side")
    parser.add_argument("--input-size", type=positive_int, nargs=3, default=None, metavar=("C", "H", "W"))
    parser.add_argument("--crop-pct", type=positive_float, default=None)
    parser.add_argument("--crop-mode", default=None)
    parser.add_argument("--mean", type=float, nargs="+", default=None)
    parser.add_argument("--std", type=positive_float, nargs="+", default=None)
    parser.add_argument("--interpolation", default="")
    parser.add_argument("--amp", action="store_true", default=False)
    parser.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true", default=False)
    parser.add_argument("--fuse", action="store_true", default=False,
                        help="evaluate vitzoo.optimize(model, fuse=True): BatchNorms folded into their convs")
    parser.add_argument("--compile", action="store_true", default=False,
                        help="evaluate torch.compile(model) (images_per_second then includes the compilation)")
    parser.add_argument("--device", default="", help="'cpu' forces the CPU")
    parser.add_argument("--results-file", default="", metavar="PATH", help="also write the results here (JSON)")


def run(args: argparse.Namespace) -> int:
    import json

    from vitzoo.train.evaluation import validate
    from vitzoo.train.runtime import configure_logging, is_main_process

    if args.model:
        check_model_kwargs(args.model, args.model_kwargs or {})
    is_main = is_main_process()
    configure_logging(is_main)
    result = validate(args)
    if is_main:
        print(json.dumps(result, indent=1))
    return 0
