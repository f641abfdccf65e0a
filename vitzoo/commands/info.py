"""``vitzoo info MODEL``: parameters, FLOPs (fvcore), feature maps and the pretrained config."""

from __future__ import annotations

import argparse
import json

from ._types import positive_int

HELP = "show parameters, FLOPs, feature_info and pretrained_cfg of a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("--img-size", type=positive_int, nargs="+", default=None,
                        help="H [W] for FLOPs (default: cfg input size)")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import vitzoo
    from vitzoo.benchmark import count_flops

    model = vitzoo.create_model(args.model)
    cfg = dict(model.pretrained_cfg)
    chans, height, width = cfg.get("input_size", (3, 224, 224))
    if args.img_size:
        height, width = args.img_size[0], args.img_size[-1]
    info = {
        "model": args.model,
        "params": sum(p.numel() for p in model.parameters()),
        "feature_info": getattr(model, "feature_info", None),
        "pretrained_cfg": {k: v for k, v in cfg.items() if k not in ("state_dict",)},
    }
    if not args.no_flops:
        info["gflops"] = round(count_flops(model, (chans, height, width)), 4)
        info["flops_input"] = [chans, height, width]
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"{args.model}: {info['params'] / 1e6:.3f} M parameters")
    if "gflops" in info:
        print(f"FLOPs (fvcore, {height}x{width}): {info['gflops']:.3f} G")
    for item in info["feature_info"] or []:
        print(f"  feature {item['module']}: {item['num_chs']} channels, stride {item['reduction']}")
    for key, value in info["pretrained_cfg"].items():
        print(f"  {key}: {value}")
    return 0
