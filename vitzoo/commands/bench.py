"""``vitzoo bench``: time and peak memory of mixers over token counts or models over resolutions.

    vitzoo bench --mixer linear softmax --dim 64 --heads 4 --tokens 1024 4096 16384 65536
    vitzoo bench --model vzvit_small:mixer=linear vzvit_small:mixer=softmax --img-size 224 512 1024

Writes ``<out>/<name>.csv`` and ``<out>/<name>.png`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitzoo.benchmark import parse_target

from ._models import check_mixer_kwargs, check_model_kwargs
from ._types import positive_float, positive_int

HELP = "benchmark mixers (over token counts) or models (over input sizes); CSV + PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--mixer", nargs="+", help="mixer names, each optionally NAME:key=value,...")
    target.add_argument("--model", nargs="+", help="model names, each optionally NAME:key=value,...")
    target.add_argument("--denoiser", nargs="+",
                        help="diffusion denoisers (vitzoo.benchmark.denoisers), NAME:key=value,...")
    parser.add_argument("--tokens", type=positive_int, nargs="+", default=[1024, 4096, 16384],
                        help="token counts (mixers)")
    parser.add_argument("--img-size", type=positive_int, nargs="+", default=[224, 512],
                        help="square input sizes (models, denoisers)")
    parser.add_argument("--dim", type=positive_int, default=64, help="mixer width")
    parser.add_argument("--heads", type=positive_int, default=4, help="mixer heads")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--backward", action="store_true", help="time forward+backward (mixers)")
    parser.add_argument("--iters", type=positive_int, default=3,
                        help="about this many timed calls per point, in torch.utils.benchmark.Timer blocks "
                             "(fewer when slow)")
    parser.add_argument("--max-seconds", type=positive_float, default=10.0,
                        help="time budget per point; ms is the median")
    parser.add_argument("--fuse", action="store_true", help="models: time vitzoo.optimize(model, fuse=True) "
                        "(BatchNorms folded into their convs)")
    parser.add_argument("--compile", action="store_true", help="models: time torch.compile(model) (compiled in "
                        "the warm-up call, not timed)")
    parser.add_argument("--out", default="bench", help="output folder")
    parser.add_argument("--name", default=None, help="file stem (default: from the targets)")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from vitzoo.benchmark import bench_denoiser, bench_mixer, bench_model, markdown_table, plot_results, write_csv

    dtype = getattr(torch, args.dtype)
    specs = args.mixer or args.model or args.denoiser
    if (args.fuse or args.compile) and not args.model:
        raise ValueError("--fuse and --compile apply to --model targets")
    for spec in specs:  # every target is checked before the first one is timed
        name, kwargs = parse_target(spec)
        if args.model:
            check_model_kwargs(name, kwargs, flag=f"--model {spec}")
        elif args.mixer:
            check_mixer_kwargs(name, kwargs, flag=f"--mixer {spec}")
    points = len(specs) * (len(args.tokens) if args.mixer else len(args.img_size))
    results = []
    with tqdm(total=points, desc="bench", unit="point") as bar:
        def progress(message: str) -> None:
            bar.set_postfix_str(message)
            bar.update()

        for spec in specs:
            name, kwargs = parse_target(spec)
            if args.mixer:
                results += bench_mixer(name, args.tokens, dim=args.dim, num_heads=args.heads, batch=args.batch,
                                       device=args.device, dtype=dtype, backward=args.backward, mixer_kwargs=kwargs,
                                       label=spec, min_iters=args.iters, max_seconds=args.max_seconds, progress=progress)
            elif args.denoiser:
                results += bench_denoiser(name, args.img_size, batch=args.batch, device=args.device, dtype=dtype,
                                          denoiser_kwargs=kwargs, label=spec, min_iters=args.iters,
                                          max_seconds=args.max_seconds, progress=progress)
            else:
                results += bench_model(name, args.img_size, batch=args.batch, device=args.device, dtype=dtype,
                                       model_kwargs=kwargs, label=spec, min_iters=args.iters,
                                       max_seconds=args.max_seconds, progress=progress, fuse=args.fuse,
                                       compile=args.compile)
    stem = args.name or "_".join(parse_target(s)[0] for s in specs)
    out = Path(args.out)
    csv_path = write_csv(results, out / f"{stem}.csv")
    png_path = plot_results(results, out / f"{stem}.png")
    print(markdown_table(results))
    print(f"\nwrote {csv_path} and {png_path}")
    return 0
