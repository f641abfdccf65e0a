"""``vitzoo perf_report``: measure and write the performance report (``docs/performance.md`` with CSVs and PNGs).

    vitzoo perf_report --out docs --official-root ~/official    # also times the official code side by side

The official code is never shipped: ``--official-root`` is a folder holding clones of the official repositories
(``InLine``, ``RALA``, ``MALA``, ``L2ViT``; see :mod:`vitzoo.benchmark.official`). Without it the report shows the
official-code table recorded by the last run that had it (``<out>/perf/official_vs_vitzoo.csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._types import bounded_int, positive_float

MAX_SECONDS = 3600.0
HELP = "measure and write the performance report (docs/performance.md): vs official code, softmax twins, compile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="docs", help="folder for performance.md (CSVs and PNGs go to <out>/perf)")
    parser.add_argument("--official-root", type=Path, default=None,
                        help="folder with clones of the official repositories, to time them side by side")
    parser.add_argument("--official-models", nargs="+", default=None,
                        help="vitzoo names to time against the official code (default: every tiny and small variant)")
    parser.add_argument("--families", nargs="+", default=None,
                        help="families to time against their softmax twin (default: all), e.g. RAVLT L2ViT")
    parser.add_argument("--sizes", type=bounded_int(16, 8192), nargs="+", default=[224, 512, 1024],
                        help="square input sizes of the twin comparison")
    parser.add_argument("--diffusion-sizes", type=bounded_int(64, 8192), nargs="*", default=[256, 512, 1024, 2048],
                        help="image sizes of the diffusion comparison (none: skip it)")
    parser.add_argument("--compile-models", nargs="*", default=None,
                        help="models whose torch.compile speedup is measured (none: skip)")
    parser.add_argument("--mixers", nargs="*", default=None, help="linear mixers for the scaling table (none: skip)")
    parser.add_argument("--mixer-tokens", type=bounded_int(16, 1 << 22), nargs=2, default=[1024, 65536],
                        help="the two token counts of the scaling table")
    parser.add_argument("--official-inputs", type=_input, nargs="+", default=None,
                        help="SIZExBATCH inputs of the official table (default: 224x8 512x1)")
    parser.add_argument("--repeats", type=bounded_int(1, 1000), default=9,
                        help="repetitions of the interleaved timings (official table, mixer scaling)")
    parser.add_argument("--max-seconds", type=positive_float, default=10.0,
                        help=f"time budget per measured point, at most {MAX_SECONDS:.0f}")


def _input(text: str) -> tuple[int, int]:
    size, sep, batch = text.partition("x")
    if not sep or not size.isdigit() or not batch.isdigit() or not int(size) or not int(batch):
        raise argparse.ArgumentTypeError(f"expected SIZExBATCH with positive integers (224x8), got {text!r}")
    return int(size), int(batch)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vitzoo.benchmark.official import OFFICIAL_MODELS
    from vitzoo.benchmark.report import DEFAULT_FAMILIES, ReportOptions, write_report

    if args.max_seconds > MAX_SECONDS:
        raise ValueError(f"--max-seconds must be at most {MAX_SECONDS:.0f}, got {args.max_seconds:g}")
    families = DEFAULT_FAMILIES
    if args.families is not None:
        unknown = sorted(set(args.families) - set(DEFAULT_FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {unknown}; expected some of {', '.join(DEFAULT_FAMILIES)}")
        families = {name: DEFAULT_FAMILIES[name] for name in args.families}
    if args.official_models is not None:
        unknown = sorted(set(args.official_models) - set(OFFICIAL_MODELS))
        if unknown:
            raise ValueError(f"no official model is known for {unknown}; expected some of "
                             f"{', '.join(OFFICIAL_MODELS)}")
    if args.official_root is not None and not args.official_root.is_dir():
        raise FileNotFoundError(f"--official-root {args.official_root} is not a folder")
    defaults = ReportOptions(families=families)
    options = ReportOptions(
        families=families, sizes=args.sizes, diffusion_sizes=args.diffusion_sizes,
        diffusion=defaults.diffusion if args.diffusion_sizes else (),
        compile_models=defaults.compile_models if args.compile_models is None else args.compile_models,
        mixers=defaults.mixers if args.mixers is None else args.mixers, mixer_tokens=tuple(args.mixer_tokens),
        official_root=args.official_root,
        official_models=args.official_models or defaults.official_models,
        official_inputs=args.official_inputs or defaults.official_inputs, repeats=args.repeats,
        max_seconds=args.max_seconds)
    with tqdm(desc="perf_report", unit="point") as bar:
        def progress(message: str) -> None:
            bar.set_postfix_str(message)
            bar.update()

        path = write_report(args.out, options, progress=progress)
    print(f"wrote {path}")
    return 0
