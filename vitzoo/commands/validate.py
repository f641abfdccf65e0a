"""``vitzoo validate``: top-1/top-5, loss and throughput of a checkpoint on an ImageFolder split, as JSON.

    vitzoo validate --checkpoint runs/demo/best.safetensors --dataset vitzoo/digits
    vitzoo validate --model ravlt_s --checkpoint RAVLT_S.pth --data-dir /data/imagenet --img-size 288
"""

from __future__ import annotations

import argparse

HELP = "evaluate a vitzoo or official checkpoint on an ImageFolder (top-1/top-5, loss, images/s; JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vitzoo.train.evaluation import add_validate_arguments

    add_validate_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from vitzoo.train.evaluation import validate
    from vitzoo.train.runtime import configure_logging, is_main_process

    is_main = is_main_process()
    configure_logging(is_main)
    result = validate(args)
    if is_main:
        print(json.dumps(result, indent=1))
    return 0
