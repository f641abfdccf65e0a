"""``vitzoo info MODEL``: parameters, FLOPs (fvcore), feature maps and the pretrained config."""

from __future__ import annotations

import argparse
import json

HELP = "show parameters, FLOPs, feature_info and pretrained_cfg of a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, help="H [W] for FLOPs (default: cfg input size)")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _sdpa_flops(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: the multiply-adds of QKᵀ and of the
    weights times V, B·heads·Nq·Nk·(D + Dv), what fvcore counts when the two matmuls are explicit."""
    from math import prod

    query, key, value = (tensor.type().sizes() for tensor in inputs[:3])
    return prod(query[:-1]) * key[-2] * (query[-1] + value[-1])


def count_flops(model, input_size: tuple[int, int, int]) -> float:
    """fvcore FLOPs (one multiply-add counts 1) of one forward at ``input_size``, in GFLOPs.

    fvcore has no handle for SDPA and would count fused softmax attention as zero; :func:`_sdpa_flops`
    counts it like the explicit matmuls of the official implementations.
    """
    import logging

    import torch
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, *input_size))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total() / 1e9


def run(args: argparse.Namespace) -> int:
    import vitzoo

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
