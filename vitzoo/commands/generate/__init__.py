"""``vitzoo generate --pipeline NAME ...``: images from a vitzoo diffusion pipeline.

The flags every pipeline shares are defined here; each pipeline is a module of this package
(``vitzoo/commands/generate/<name>.py``, one per ``--pipeline`` value) that defines ``HELP`` (one line),
``add_arguments(group)`` for flags only it uses (never the common ones) and ``run(args) -> int``.
Pipeline modules must not import diffusers at import time: the ``vitzoo`` command builds its parser
from all of them. The command discovery (:mod:`vitzoo.cli`) lists only the top level of
``vitzoo/commands/``, so they are not taken for subcommands.
"""

from __future__ import annotations

import argparse

HELP = "generate images with a vitzoo diffusion pipeline (--pipeline NAME)"


def pipelines() -> dict[str, object]:
    """The pipeline modules of this package by name."""
    from vitzoo._discovery import import_submodules

    return import_submodules(__name__, __path__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    found = pipelines()
    parser.add_argument("--pipeline", required=True, choices=sorted(found) or None,
                        help="; ".join(f"{n}: {m.HELP}" for n, m in sorted(found.items())))
    parser.add_argument("--model", default=None, help="pipeline directory (save_pretrained) or checkpoint")
    parser.add_argument("--prompt", default=None, help="text prompt (text-to-image pipelines)")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps")
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--scheduler", default=None, help="diffusers scheduler class name, e.g. DPMSolverMultistepScheduler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--output", default="generated.png", help="output image path")
    for name, module in sorted(found.items()):
        module.add_arguments(parser.add_argument_group(f"--pipeline {name}"))


def run(args: argparse.Namespace) -> int:
    return pipelines()[args.pipeline].run(args)
