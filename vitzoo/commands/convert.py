"""``vitzoo convert MODEL CHECKPOINT OUTPUT``: an official checkpoint to vitzoo safetensors.

The checkpoint goes through the same path as ``timm.create_model(MODEL, pretrained=True,
pretrained_cfg_overlay=dict(file=CHECKPOINT))`` (the family's weight choice and key mapping, a
strict load); the resulting state dict is written atomically with safetensors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._atomic import atomic_write
from ._types import nonnegative_int

HELP = "convert an official checkpoint (.pth) to vitzoo safetensors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registered vitzoo model, e.g. ravlt_s")
    parser.add_argument("checkpoint", help="official .pth / .pt / .safetensors file")
    parser.add_argument("output", help="output .safetensors path")
    parser.add_argument("--num-classes", type=nonnegative_int, default=None,
                        help="classes of the checkpoint's head (0: a headless backbone)")
    parser.add_argument("--model-kwargs", default="{}", help="JSON of extra constructor arguments")


def convert(model_name: str, checkpoint: str, output: str, **model_kwargs) -> Path:
    """Load ``checkpoint`` into ``model_name`` through its converter and write safetensors to ``output``."""
    from safetensors.torch import save_file

    import vitzoo

    overlay = dict(file=str(checkpoint))
    if model_kwargs.get("num_classes"):
        # the checkpoint's head has this many classes: keep it (timm drops a head whose size differs from the cfg's)
        overlay["num_classes"] = model_kwargs["num_classes"]
    model = vitzoo.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_kwargs)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"architecture": model_name, "source": Path(checkpoint).name,
                "model_kwargs": json.dumps(model_kwargs, default=str)}
    return atomic_write(output, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def run(args: argparse.Namespace) -> int:
    kwargs = json.loads(args.model_kwargs)
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    path = convert(args.model, args.checkpoint, args.output, **kwargs)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    return 0
