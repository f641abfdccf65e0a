"""``vitzoo generate --pipeline NAME ...``: images from a vitzoo diffusion pipeline.

The flags every pipeline shares are defined here; each pipeline is a module of this package
(``vitzoo/commands/generate/<name>.py``, one per ``--pipeline`` value) that defines ``HELP`` (one line),
``add_arguments(group)`` for flags only it uses (never the common ones) and ``run(args) -> int``, and may
define ``UNUSED``: common flags (by ``dest``) it cannot honour, each with the reason, and ``SHARES``: other
pipelines whose flags it uses too (``linfusion-xl`` takes every flag of ``linfusion``). A module name's
underscores are dashes in ``--pipeline`` (``linfusion_xl.py`` is ``--pipeline linfusion-xl``).
A flag the chosen pipeline does not use is an error, never silently ignored: another pipeline's flag given
with a value other than its default, or a common flag in the pipeline's ``UNUSED``.
Pipeline modules must not import diffusers at import time: the ``vitzoo`` command builds its parser
from all of them. The command discovery (:mod:`vitzoo.cli`) lists only the top level of
``vitzoo/commands/``, so they are not taken for subcommands.
"""

from __future__ import annotations

import argparse

from .._types import nonnegative_float, positive_int

HELP = "generate images with a vitzoo diffusion pipeline (--pipeline NAME)"

DEFAULT_OUTPUT = "generated.png"


def pipelines() -> dict[str, object]:
    """The pipeline modules of this package by name."""
    from vitzoo._discovery import import_submodules

    return {name.replace("_", "-"): module for name, module in import_submodules(__name__, __path__).items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    found = pipelines()
    parser.add_argument("--pipeline", required=True, choices=sorted(found) or None,
                        help="; ".join(f"{n}: {m.HELP}" for n, m in sorted(found.items())))
    parser.add_argument("--model", default=None, help="pipeline directory (save_pretrained) or checkpoint")
    parser.add_argument("--prompt", default=None, help="text prompt (text-to-image pipelines)")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--height", type=positive_int, default=None,
                        help="image height in pixels (default: the model's native size)")
    parser.add_argument("--width", type=positive_int, default=None,
                        help="image width in pixels (default: the model's native size)")
    parser.add_argument("--steps", type=positive_int, default=None, help="denoising steps")
    parser.add_argument("--guidance-scale", type=nonnegative_float, default=None,
                        help="classifier-free guidance scale (<= 1: no guidance)")
    parser.add_argument("--scheduler", default=None, help="diffusers scheduler class name, e.g. DPMSolverMultistepScheduler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="output image path")
    for name, module in sorted(found.items()):
        module.add_arguments(parser.add_argument_group(f"--pipeline {name}"))


def refuse_unused(args: argparse.Namespace, found: dict[str, object]) -> None:
    """Raise ValueError naming every flag given that ``--pipeline`` does not use (see the module docstring)."""
    chosen = found[args.pipeline]
    problems = [f"--{dest.replace('_', '-')}: {reason}" for dest, reason in getattr(chosen, "UNUSED", {}).items()
                if getattr(args, dest, None) is not None]
    for name, module in sorted(found.items()):
        if name == args.pipeline or name in getattr(chosen, "SHARES", ()):
            continue
        scratch = argparse.ArgumentParser(add_help=False)
        module.add_arguments(scratch.add_argument_group(name))
        for action in scratch._actions:
            if getattr(args, action.dest, action.default) != action.default:
                problems.append(f"{action.option_strings[0]} is an option of --pipeline {name}, "
                                f"not of --pipeline {args.pipeline}")
    if problems:
        raise ValueError("; ".join(problems))


def resolve_device(name: str | None) -> str:
    """``--device``, or cuda when available else cpu; a CUDA device that is not there is a ValueError."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return name


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class ``--scheduler name``; anything else is a ValueError."""
    import diffusers
    from diffusers.schedulers import SchedulerMixin

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"--scheduler {name!r} is not a diffusers scheduler class "
                         "(e.g. DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler)")
    return cls


def run(args: argparse.Namespace) -> int:
    found = pipelines()
    refuse_unused(args, found)
    return found[args.pipeline].run(args)
