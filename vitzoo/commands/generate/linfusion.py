"""``vitzoo generate --pipeline linfusion``: high-resolution text-to-image with LinFusion (SD-1.x / 2.x).

    vitzoo generate --pipeline linfusion --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --linfusion Yuanshi/LinFusion-1-5 --prompt "a lake at dawn" --height 16384 --width 16384 --output lake.png
    vitzoo generate --pipeline linfusion --model tiny-random --linfusion random --steps 10 \\
        --height 16384 --width 16384 --output tiny16k.png --stats-json tiny16k.json
    vitzoo generate --pipeline linfusion --model tiny-random --steps 10 --sweep 1024 2048 4096 8192 16384 \\
        --sweep-attention random none --sweep-out docs/bench/linfusion_highres

The image is written to PNG band by band. ``--model tiny-random`` builds the offline tiny random SD of
:mod:`vitzoo.testing.tiny_diffusion` (no download; its images are noise). ``--sweep`` runs one fresh
process per resolution and attention (so each peak RSS is its own) and writes CSV, PNG and a table;
each point's record is kept as ``<sweep-out>_<attention>_<size>.json`` and reused by a later sweep
(delete it to measure again), so an interrupted sweep resumes.

Timing here is the wall clock of one whole generation (``time.perf_counter``, seconds), not
:class:`torch.utils.benchmark.Timer`: a run of minutes to hours is measured once, not repeated to a
median; per-call medians of a denoiser are what ``vitzoo bench --denoiser`` measures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .._types import bounded_int, nonnegative_int, positive_float, positive_int

HELP = ("LinFusion high-resolution text-to-image for SD-1.x/2.x: base pass + upscale/SDEdit stages up to 16K, "
        "tiled VAE, streamed PNG")

TINY = "tiny-random"
TINY_XL = "tiny-random-xl"
DEFAULT_UPSCALE_STRENGTH = {False: 0.4, True: 0.32}  # SD-1.5 SDEdit chain (§6 A), SD-XL recipes (§6 B, C)
MULTIPLE = 8  # pixels per latent of every SD-1.x/2.x VAE (and of the tiny one): sides must be multiples of it
LINFUSION_CHOICES = "a directory, .safetensors file or hub id; 'auto', 'random' or 'none'"


def strength(text: str) -> float:
    """An SDEdit strength in (0, 1] (argparse ``type=``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a strength in (0, 1], got {text}")
    return value


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--linfusion", default="auto",
                       help="LinFusion checkpoint: a directory, .safetensors file or hub id; 'auto' looks the base "
                            "model up; 'random' mounts fresh modules (timing only); 'none' keeps the original "
                            "attention")
    group.add_argument("--base-size", type=positive_int, default=None,
                       help="long side of the base stage (default: native)")
    group.add_argument("--strengths", type=strength, nargs="+", default=None, help="SDEdit strength per upscale stage")
    group.add_argument("--upscale-strength", type=strength, default=None,
                       help="first upscale stage's strength, later ones fall linearly to 0 (default 0.4, the SD-1.5 "
                            "recipe; 0.32 for --pipeline linfusion-xl)")
    group.add_argument("--vae-tile-size", type=positive_int, default=None,
                       help="VAE tile size in pixels (a multiple of 8)")
    group.add_argument("--ff-chunks", type=positive_int, default=16, help="token chunks of each feed-forward (1: off)")
    group.add_argument("--unet-batch-size", type=nonnegative_int, default=1,
                       help="samples per UNet call (0: whole guidance batch)")
    group.add_argument("--save-stages", default=None, help="directory for the images of earlier stages")
    group.add_argument("--png-compress-level", type=bounded_int(0, 9), default=6, help="zlib level 0-9")
    group.add_argument("--stats-json", default=None, help="write wall time and peak memory of the run here")
    group.add_argument("--sweep", type=positive_int, nargs="+", default=None,
                       help="square resolutions to time, each in a fresh process (writes --sweep-out.csv/.png)")
    group.add_argument("--sweep-attention", nargs="+", default=["random", "none"],
                       help="--linfusion values to sweep ('none' = original attention)")
    group.add_argument("--sweep-out", default="bench/linfusion_highres", help="file stem of the sweep's CSV/PNG")
    group.add_argument("--sweep-timeout", type=positive_float, default=1800.0, help="seconds per sweep run")


def _linfusion_source(value: str, model: str, flag: str = "--linfusion"):
    """What ``LinFusion.construct_for(pretrained=...)`` gets for a ``--linfusion`` value; None for 'none'."""
    if value == "none":
        return None
    if value == "random":
        return False
    if value == "auto":
        from vitzoo.diffusion.linfusion import KNOWN_CHECKPOINTS

        if model not in KNOWN_CHECKPOINTS:
            raise ValueError(
                f"{flag} auto knows no LinFusion checkpoint for --model {model}; give {flag} <directory, "
                ".safetensors file or hub id>, 'random' (fresh modules, for timing) or 'none' (the original "
                f"attention). 'auto' knows: {', '.join(sorted(KNOWN_CHECKPOINTS))}")
        return KNOWN_CHECKPOINTS[model]
    if not Path(value).exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
        raise FileNotFoundError(f"{flag} {value}: no such directory or file, nor a hub id owner/name; "
                                f"expected {LINFUSION_CHOICES}")
    return value


def is_xl(args: argparse.Namespace) -> bool:
    """Whether the run is the SD-XL family (``--pipeline linfusion-xl``)."""
    return getattr(args, "pipeline", "linfusion") == "linfusion-xl"


def _tiny_name(xl: bool) -> str:
    return TINY_XL if xl else TINY


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, every flag value this pipeline cannot honour (ValueError naming it)."""
    from . import DEFAULT_OUTPUT, scheduler_class

    if args.model is None:
        family = "an SD-XL" if is_xl(args) else "a Stable Diffusion"
        raise ValueError(f"--model is required: {family} directory or hub id, or '{_tiny_name(is_xl(args))}'")
    if args.model == _tiny_name(not is_xl(args)):
        raise ValueError(f"--model {args.model} is the tiny model of --pipeline "
                         f"{'linfusion' if is_xl(args) else 'linfusion-xl'}; use --model {_tiny_name(is_xl(args))}")
    sizes = [("--height", args.height), ("--width", args.width), ("--vae-tile-size", args.vae_tile_size)]
    sizes += [("--sweep", size) for size in args.sweep or ()]
    for flag, value in sizes:
        if value is not None and value % MULTIPLE:
            raise ValueError(f"{flag} {value} is not possible: Stable Diffusion's VAE needs multiples of {MULTIPLE} "
                             f"pixels (e.g. {max(MULTIPLE, value // MULTIPLE * MULTIPLE)})")
    guidance = 7.5 if args.guidance_scale is None else args.guidance_scale
    if args.negative_prompt is not None and guidance <= 1:
        raise ValueError(f"--negative-prompt needs guidance: --guidance-scale {guidance:g} (<= 1) turns "
                         "classifier-free guidance off; give a scale > 1 (default 7.5) or omit --negative-prompt")
    if args.scheduler:
        scheduler_class(args.scheduler)
    if args.sweep:
        # a sweep sets size, attention and outputs of each run itself
        given = [flag for flag, value, default in (
            ("--height", args.height, None), ("--width", args.width, None), ("--output", args.output, DEFAULT_OUTPUT),
            ("--stats-json", args.stats_json, None), ("--save-stages", args.save_stages, None),
            ("--linfusion", args.linfusion, "auto")) if value != default]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with --sweep, which sets each run's size, "
                             "attention (--sweep-attention) and outputs (--sweep-out)")
        for value in args.sweep_attention:
            _linfusion_source(value, args.model, "--sweep-attention")
    else:
        given = [flag for flag, value, default in (
            ("--sweep-attention", args.sweep_attention, ["random", "none"]),
            ("--sweep-out", args.sweep_out, "bench/linfusion_highres"), ("--sweep-timeout", args.sweep_timeout, 1800.0))
            if value != default]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --sweep <sizes>")
        _linfusion_source(args.linfusion, args.model)


def build_pipeline(args: argparse.Namespace, pipeline_class: type | None = None):
    """The high-resolution pipeline of ``--model`` with ``--linfusion`` mounted; returns (pipe, linfusion or None).

    ``pipeline_class`` defaults to ``HighResolutionPipeline`` (``HighResolutionXLPipeline`` for linfusion-xl).
    """
    import torch

    from vitzoo.diffusion.hub import hub_errors
    from vitzoo.diffusion.linfusion import LinFusion
    from vitzoo.diffusion.pipelines import HighResolutionPipeline, HighResolutionXLPipeline

    from . import resolve_device, scheduler_class

    if args.model is None:
        raise ValueError(f"--model is required: a Stable Diffusion directory or hub id, or '{_tiny_name(is_xl(args))}'")
    xl = is_xl(args)
    pipeline_class = pipeline_class or (HighResolutionXLPipeline if xl else HighResolutionPipeline)
    pretrained = _linfusion_source(args.linfusion, args.model)
    dtype = getattr(torch, args.dtype)
    device = resolve_device(args.device)
    if args.model in (TINY, TINY_XL):
        from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion, tiny_stable_diffusion_xl

        build = tiny_stable_diffusion_xl if args.model == TINY_XL else tiny_stable_diffusion
        pipe = build(seed=args.seed, pipeline_class=pipeline_class)
        if dtype != torch.float32:
            # each module cast by torch: ModelMixin.to / pipe.to(dtype) log "should be kept in float32: []" per model
            for component in pipe.components.values():
                if isinstance(component, torch.nn.Module):
                    torch.nn.Module.to(component, dtype=dtype)
    else:
        with hub_errors(args.model, what="--model"):
            extra = {} if xl else dict(safety_checker=None, requires_safety_checker=False)
            if Path(args.model).suffix in (".safetensors", ".ckpt"):
                pipe = pipeline_class.from_single_file(args.model, dtype=dtype)
            else:
                pipe = pipeline_class.from_pretrained(args.model, dtype=dtype, **extra)
    if args.scheduler:
        pipe.scheduler = scheduler_class(args.scheduler).from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=False)
    linfusion = None
    if pretrained is not None:
        with hub_errors(str(pretrained), what="--linfusion"):
            # fresh modules of an SD-XL UNet take LinFusion-XL's layout (MLP width C / 16)
            scale = 16 if pretrained is False and "text_time" == pipe.unet.config.addition_embed_type else None
            linfusion = LinFusion.construct_for(pipe, pretrained=pretrained, mid_dim_scale=scale)
    return pipe, linfusion


def _check_strengths(args: argparse.Namespace, pipe) -> None:
    """``--strengths`` must give one strength per upscale stage of this target size."""
    from vitzoo.diffusion.highres_vae import vae_scale_factor
    from vitzoo.diffusion.pipelines import stage_sizes, xl_stage_sizes

    factor = vae_scale_factor(pipe.vae)
    native = pipe.unet.config.sample_size * factor
    height, width = args.height or native, args.width or native
    sizes = (xl_stage_sizes if is_xl(args) else stage_sizes)(height, width, args.base_size or native, factor)
    if not args.strengths:
        return
    if len(args.strengths) != len(sizes) - 1:
        raise ValueError(f"--strengths: {width}x{height} from a base of {args.base_size or native} px takes "
                         f"{len(sizes) - 1} upscale stage(s) ({' -> '.join(f'{w}x{h}' for h, w in sizes)}), so give "
                         f"{len(sizes) - 1} strength(s), got {len(args.strengths)}")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    if args.sweep:
        return sweep(args)
    import torch

    from vitzoo.benchmark import PeakMemory

    pipe, _ = build_pipeline(args)
    _check_strengths(args, pipe)
    steps = 50 if args.steps is None else args.steps
    device = pipe._execution_device
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        output = pipe(
            args.prompt or "", height=args.height, width=args.width, num_inference_steps=steps,
            guidance_scale=7.5 if args.guidance_scale is None else args.guidance_scale,
            negative_prompt=args.negative_prompt, generator=generator, base_size=args.base_size,
            strengths=args.strengths, upscale_strength=upscale_strength(args), vae_tile_size=args.vae_tile_size,
            feed_forward_chunks=args.ff_chunks, unet_batch_size=args.unet_batch_size or None,
            output_type="png", output_path=args.output, intermediate_dir=args.save_stages,
            png_compress_level=args.png_compress_level, **extra_call_kwargs(args))
    seconds = time.perf_counter() - start
    stats = {
        "height": output.stage_sizes[-1][0], "width": output.stage_sizes[-1][1], "stage_sizes": output.stage_sizes,
        "model": args.model, "linfusion": args.linfusion, "steps": steps, "device": str(device),
        "dtype": args.dtype, "seconds": round(seconds, 2), "peak_mem_mb": round(memory.peak_mb, 1),
        "peak_rss_mb": round(PeakMemory._rss_kb("VmHWM") / 1024, 1) if device.type == "cpu" else None,
        "output": [str(p) for p in output.images],
    }
    if args.stats_json:
        Path(args.stats_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats_json).write_text(json.dumps(stats, indent=1))
    print(f"wrote {', '.join(stats['output'])} ({stats['width']}x{stats['height']}, stages "
          f"{' -> '.join(f'{w}x{h}' for h, w in output.stage_sizes)}) in {seconds:.1f} s; peak memory "
          f"+{memory.peak_mb:.0f} MB above the loaded pipeline")
    return 0


def upscale_strength(args: argparse.Namespace) -> float:
    """``--upscale-strength``, or the recipe's default of the family."""
    return DEFAULT_UPSCALE_STRENGTH[is_xl(args)] if args.upscale_strength is None else args.upscale_strength


def extra_call_kwargs(args: argparse.Namespace) -> dict:
    """Pipeline arguments of the SD-XL recipe's own flags (none for SD-1.x/2.x)."""
    if not is_xl(args):
        return {}
    return dict(cosine_scales=tuple(args.cosine_scales), gaussian_sigma=args.gaussian_sigma)


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The generation flags a sweep passes to each child run."""
    flags = ["--model", args.model, "--prompt", args.prompt or "", "--seed", str(args.seed), "--dtype", args.dtype,
             "--upscale-strength", str(upscale_strength(args)), "--ff-chunks", str(args.ff_chunks),
             "--unet-batch-size", str(args.unet_batch_size), "--png-compress-level", str(args.png_compress_level)]
    for flag, value in (("--steps", args.steps), ("--guidance-scale", args.guidance_scale), ("--device", args.device),
                        ("--base-size", args.base_size), ("--vae-tile-size", args.vae_tile_size),
                        ("--scheduler", args.scheduler), ("--negative-prompt", args.negative_prompt)):
        if value is not None:
            flags += [flag, str(value)]
    if args.strengths:
        flags += ["--strengths", *map(str, args.strengths)]
    if is_xl(args):
        flags += ["--cosine-scales", *map(str, args.cosine_scales), "--gaussian-sigma", str(args.gaussian_sigma)]
    return flags


def sweep(args: argparse.Namespace) -> int:
    """Time and peak memory of whole generations against resolution, one fresh process per point."""
    from vitzoo.benchmark import BenchResult, markdown_table, plot_results, write_csv

    stem = Path(args.sweep_out)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for attention in args.sweep_attention:
            exceeded = None
            for size in sorted(args.sweep):
                label = "original attention" if attention == "none" else f"LinFusion ({attention})"
                kept = stem.parent / f"{stem.name}_{attention}_{size}.json"
                stats_path = Path(tmp) / f"{attention}_{size}.json"
                status, stats = "ok", {}
                if kept.is_file():
                    stats = json.loads(kept.read_text())  # measured before: delete the file to measure again
                elif exceeded is not None:
                    status = f"skipped: {exceeded}px already exceeded {args.sweep_timeout:.0f} s"
                else:
                    command = [sys.executable, "-m", "vitzoo.cli", "generate", "--pipeline", args.pipeline,
                               *_forwarded(args), "--linfusion", attention, "--height", str(size), "--width", str(size),
                               "--output", str(Path(tmp) / f"{attention}_{size}.png"), "--stats-json", str(stats_path)]
                    try:
                        done = subprocess.run(command, timeout=args.sweep_timeout, capture_output=True, text=True)
                        if done.returncode == 0:
                            stats = json.loads(stats_path.read_text())
                        else:
                            status = "oom" if done.returncode in (-9, 137) else f"error {done.returncode}"
                            print(done.stderr[-2000:], file=sys.stderr)
                    except subprocess.TimeoutExpired:
                        status, exceeded = f"timeout > {args.sweep_timeout:.0f} s", size
                print(f"{label} {size}px: {status} {stats.get('seconds', '')} s {stats.get('peak_mem_mb', '')} MB",
                      flush=True)
                results.append(BenchResult(
                    label, "pipeline", f"{size}x{size}", size * size, 1, 1000 * stats.get("seconds", float("nan")),
                    1 / stats["seconds"] if stats else float("nan"), stats.get("peak_mem_mb", float("nan")),
                    stats.get("device", args.device or "cpu"), args.dtype, status))
                if stats and not kept.is_file():
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    kept.write_text(json.dumps(stats, indent=1))
    csv_path = write_csv(results, stem.with_suffix(".csv"))
    png_path = plot_results(results, stem.with_suffix(".png"),
                            title=f"{args.model}: whole generation vs resolution ({results[0].device})")
    print(markdown_table(results))
    print(f"\nwrote {csv_path} and {png_path}")
    return 0
