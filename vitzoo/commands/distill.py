"""``vitzoo distill --method linfusion``: distil a linear-attention UNet from a Stable Diffusion pipeline.

    vitzoo distill --method linfusion -c configs/diffusion/linfusion_sd15.yaml \\
        --model stable-diffusion-v1-5/stable-diffusion-v1-5 --data-dir captions/ --output runs/lf15
    accelerate launch --multi_gpu --num_processes 8 tools/distill.py --method linfusion -c ... # multi-GPU

``--data-dir`` is an image-caption folder (each image with a same-stem ``.txt``). ``-c/--config`` reads
a YAML file of flag defaults (keys are flag names with underscores); flags on the command line win.
The engine is :func:`vitzoo.train.distill.distill`.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

HELP = "distil linear attention into a diffusers Stable Diffusion UNet (--method linfusion); accelerate multi-GPU"

METHODS = ("linfusion",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=None, help="YAML file of flag defaults (flags typed here win)")
    parser.add_argument("--method", choices=METHODS, default="linfusion")
    parser.add_argument("--model", default=None,
                        help="diffusers SD-1.x/2.x/XL pipeline directory or hub id ('tiny-random': offline toy)")
    parser.add_argument("--data-dir", default=None, help="image-caption folder (image + same-stem .txt)")
    parser.add_argument("--output", default="runs/distill", help="run directory (checkpoints, metrics, export)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--resize", choices=["stretch", "center-crop"], default="stretch",
                        help="stretch: SD-1.5/2.1 recipe (no crop); center-crop: SD-XL recipe")
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--grad-accum-steps", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--adam-beta1", type=float, default=0.9)
    parser.add_argument("--adam-beta2", type=float, default=0.999)
    parser.add_argument("--max-grad-norm", type=float, default=None,
                        help="clip gradients (the official recipe does not)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps (default: epochs x steps per epoch)")
    parser.add_argument("--kd-weight", type=float, default=0.5, help="weight of the output distillation term")
    parser.add_argument("--feature-weight", type=float, default=0.5, help="weight of the attention-feature term")
    parser.add_argument("--mid-dim-scale", type=int, default=None, help="LinFusion MLP width C/scale (16 for SD-XL)")
    parser.add_argument("--init", default=None, help="start from this LinFusion checkpoint instead of fresh modules")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--grad-checkpointing", action="store_true", help="recompute UNet activations in backward")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu forces the CPU")
    parser.add_argument("--workers", type=int, default=4, help="data loader processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10, help="steps between metric rows")
    parser.add_argument("--checkpoint-every", type=int, default=10000, help="steps between checkpoints")
    parser.add_argument("--resume", default=None,
                        help="a last.state.pt, or 'auto' for <output>/last.state.pt when present")
    # flags take their defaults only after the config file had its say (timm's -c semantics): park them
    defaults, actions = {}, {}
    for action in parser._actions:
        if action.dest != "help":
            defaults[action.dest], actions[action.dest] = action.default, action
            action.default = argparse.SUPPRESS
    parser.set_defaults(_distill_defaults=defaults, _distill_actions=actions)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Parser defaults < config file (``-c``) < flags typed on the command line."""
    defaults = getattr(args, "_distill_defaults")
    typed = {k: v for k, v in vars(args).items() if k in defaults}
    merged = dict(defaults)
    if typed.get("config"):
        merged.update(_read_config(Path(typed["config"]), getattr(args, "_distill_actions")))
    merged.update(typed)
    return argparse.Namespace(**merged)


def _read_config(path: Path, actions: dict[str, argparse.Action]) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of flag names to values")
    out = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions or dest == "config":
            close = difflib.get_close_matches(dest, list(actions), n=2)
            raise ValueError(f"{path}: unknown key {key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        action = actions[dest]
        if value is not None and action.type is not None:
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: {key}={value!r} is not a valid {action.type.__name__}") from None
        if value is not None and action.choices is not None and value not in action.choices:
            raise ValueError(f"{path}: {key}={value!r} is not one of {list(action.choices)}")
        out[dest] = value
    return out


def run(args: argparse.Namespace) -> int:
    import logging

    from vitzoo.train.distill import distill

    args = resolve(args)
    if args.method not in METHODS:
        raise ValueError(f"method {args.method!r} is not one of {list(METHODS)}")
    if args.model is None or args.data_dir is None:
        raise ValueError("--model and --data-dir are required (on the command line or in the config)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = distill(args)
    state = "stopped" if summary["stopped"] else "finished"
    print(f"{state} at step {summary['step']} (last logged loss {summary['last_loss']:.4f}); "
          f"run directory {summary['output']}")
    return 0
