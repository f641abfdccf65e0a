"""``vitzoo upscale IMAGE --to 16384 --model <pipeline>``: bring a user's image to up to 16K with LinFusion.

    vitzoo upscale photo.jpg --to 16384 --model ./sdxl-base --linfusion ./LinFusion-XL --prompt "a harbour"
    vitzoo upscale photo.png --to 8192 --model ./sd15 --linfusion Yuanshi/LinFusion-1-5 --output photo_8k.png
    vitzoo upscale photo.png --to 16384 --model tiny-random-xl --linfusion random --steps 10   # offline, noise

The family follows the model: an SD-XL pipeline folder (``text_encoder_2`` in its ``model_index.json``, or
``tiny-random-xl``) runs the SD-XL super-resolution chain (``SuperResolutionXLPipeline(chain=True)``,
``../shared/specs/linfusion.md`` §6 C: doubling calls with dilation ceil(long side / 1024) and strengths
0.32 falling to 0); an SD-1.x/2.x folder (or ``tiny-random``) runs the SDEdit chain of
``HighResolutionPipeline`` (§6 A) started from the image (strength 0.4 falling to 0). Either way the
doubling stages go from the image's size to the target and the PNG is written band by band.

Sizes: ``--to`` is the output's long side, a multiple of 8 (the VAE factor). The short side keeps the
image's aspect ratio, rounded down to a multiple of 8; the image is centre-cropped by the few pixels that
make its aspect equal the output's (never padded), and the command says so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._types import bounded_int, nonnegative_float, nonnegative_int, positive_int
from .generate.linfusion import TINY, TINY_XL, strength

HELP = ("upscale an image up to 16K with LinFusion: SD-XL super-resolution or the SD-1.x/2.x SDEdit chain, "
        "PNG streamed")

MULTIPLE = 8  # pixels per latent of every Stable Diffusion VAE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the image to upscale (any format Pillow reads, any size)")
    parser.add_argument("--to", type=positive_int, required=True,
                        help="long side of the output in pixels (a multiple of 8, larger than the image's)")
    parser.add_argument("--model", required=True,
                        help="a local diffusers pipeline folder (SD-1.x/2.x or SD-XL), or tiny-random(-xl)")
    parser.add_argument("--prompt", default="", help="what the image shows (helps the denoiser)")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--linfusion", default="auto",
                        help="LinFusion checkpoint: a directory, .safetensors file or hub id; 'auto' looks the base "
                             "model up; 'random' mounts fresh modules (timing only); 'none' keeps the original attention")
    parser.add_argument("--steps", type=positive_int, default=50, help="steps of the full schedule")
    parser.add_argument("--guidance-scale", type=nonnegative_float, default=7.5)
    parser.add_argument("--upscale-strength", type=strength, default=None,
                        help="first stage's strength, later ones fall linearly to 0 (default: 0.32 SD-XL, 0.4 SD)")
    parser.add_argument("--strengths", type=strength, nargs="+", default=None, help="strength of each stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--vae-tile-size", type=positive_int, default=None, help="VAE tile size in pixels")
    parser.add_argument("--ff-chunks", type=positive_int, default=16, help="token chunks of each feed-forward")
    parser.add_argument("--unet-batch-size", type=nonnegative_int, default=1,
                        help="samples per UNet call (0: whole guidance batch)")
    parser.add_argument("--save-stages", default=None, help="directory for the images of earlier stages")
    parser.add_argument("--png-compress-level", type=bounded_int(0, 9), default=6, help="zlib level 0-9")
    parser.add_argument("--stats-json", default=None, help="write wall time and peak memory of the run here")
    parser.add_argument("--output", default=None, help="output PNG (default: <image stem>_<to>.png)")


def _read_image(path: str):
    import PIL.Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"IMAGE {path}: no such file")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except PIL.Image.DecompressionBombError as err:
        raise ValueError(f"IMAGE {path}: {err}") from None
    except (PIL.UnidentifiedImageError, OSError) as err:
        raise ValueError(f"IMAGE {path} is not an image Pillow can read ({err})") from None


def _is_xl(model: str) -> bool:
    """SD-XL or SD-1.x/2.x, from the tiny names or the folder's ``model_index.json``."""
    if model in (TINY, TINY_XL):
        return model == TINY_XL
    index = Path(model) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"--model {model}: no diffusers pipeline folder there (expected model_index.json); "
                                f"give a local SD-1.x/2.x or SD-XL pipeline folder, or {TINY} / {TINY_XL}")
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--model {model}: model_index.json is not JSON ({err})") from None
    if "unet" not in components:
        raise ValueError(f"--model {model}: {components.get('_class_name', 'this pipeline')} has no UNet; "
                         "upscale needs a Stable Diffusion 1.x/2.x or SD-XL pipeline")
    return "text_encoder_2" in components


def output_size(width: int, height: int, to: int) -> tuple[int, int]:
    """(width, height) of the output: long side ``to``, short side in the image's aspect, down to a multiple of 8."""
    if to % MULTIPLE:
        raise ValueError(f"--to {to} is not possible: Stable Diffusion's VAE needs multiples of {MULTIPLE} pixels "
                         f"(e.g. {max(MULTIPLE, to // MULTIPLE * MULTIPLE)})")
    if to <= max(width, height):
        raise ValueError(f"--to {to} must be larger than the image's long side ({width}x{height})")
    short = max(MULTIPLE, int(to * min(width, height) / max(width, height)) // MULTIPLE * MULTIPLE)
    return (to, short) if width >= height else (short, to)


def crop_to_aspect(image, width: int, height: int):
    """The image centre-cropped to the aspect ``width / height`` (the fewest pixels); returns (image, note)."""
    w, h = image.size
    if w * height > h * width:
        new_w, new_h = max(1, round(h * width / height)), h
    else:
        new_w, new_h = w, max(1, round(w * height / width))
    if (new_w, new_h) == (w, h):
        return image, f"input {w}x{h} kept whole (its aspect fits {width}x{height})"
    left, top = (w - new_w) // 2, (h - new_h) // 2
    return (image.crop((left, top, left + new_w, top + new_h)),
            f"input {w}x{h} centre-cropped to {new_w}x{new_h} (the aspect of the {width}x{height} output, "
            f"whose sides are multiples of {MULTIPLE}; not padded)")


def run(args: argparse.Namespace) -> int:
    from .generate import resolve_device

    image = _read_image(args.image)
    xl = _is_xl(args.model)
    width, height = output_size(*image.size, args.to)
    image, note = crop_to_aspect(image, width, height)
    if args.negative_prompt is not None and args.guidance_scale <= 1:
        raise ValueError(f"--negative-prompt needs guidance: --guidance-scale {args.guidance_scale:g} (<= 1) turns "
                         "classifier-free guidance off")
    resolve_device(args.device)
    output = Path(args.output or f"{Path(args.image).stem}_{args.to}.png")
    print(note, flush=True)
    return _upscale(args, image, xl, width, height, output)


def _upscale(args: argparse.Namespace, image, xl: bool, width: int, height: int, output: Path) -> int:
    import torch

    from vitzoo.benchmark import PeakMemory
    from vitzoo.diffusion.pipelines import HighResolutionPipeline, SuperResolutionXLPipeline

    from .generate.linfusion import build_pipeline

    settings = argparse.Namespace(pipeline="linfusion-xl" if xl else "linfusion", model=args.model,
                                  linfusion=args.linfusion, dtype=args.dtype, device=args.device, seed=args.seed,
                                  scheduler=None)
    pipe, _ = build_pipeline(settings, SuperResolutionXLPipeline if xl else HighResolutionPipeline)
    strength_ = args.upscale_strength if args.upscale_strength is not None else (0.32 if xl else 0.4)
    common = dict(prompt=args.prompt, image=image, height=height, width=width, num_inference_steps=args.steps,
                  guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
                  generator=torch.Generator(device="cpu").manual_seed(args.seed), strengths=args.strengths,
                  upscale_strength=strength_, vae_tile_size=args.vae_tile_size, feed_forward_chunks=args.ff_chunks,
                  unet_batch_size=args.unet_batch_size or None, output_type="png", output_path=output,
                  intermediate_dir=args.save_stages, png_compress_level=args.png_compress_level)
    if xl:
        common["chain"] = True
    device = pipe._execution_device
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        result = pipe(**common)
    seconds = time.perf_counter() - start
    stats = {
        "input": list(image.size), "width": width, "height": height, "family": "sdxl" if xl else "sd",
        "stage_sizes": result.stage_sizes, "model": args.model, "linfusion": args.linfusion, "steps": args.steps,
        "device": str(device), "dtype": args.dtype, "seconds": round(seconds, 2),
        "peak_mem_mb": round(memory.peak_mb, 1),
        "peak_rss_mb": round(PeakMemory._rss_kb("VmHWM") / 1024, 1) if device.type == "cpu" else None,
        "output": [str(p) for p in result.images],
    }
    if args.stats_json:
        Path(args.stats_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats_json).write_text(json.dumps(stats, indent=1))
    print(f"wrote {', '.join(stats['output'])} ({width}x{height}, stages "
          f"{' -> '.join(f'{w}x{h}' for h, w in result.stage_sizes)}) in {seconds:.1f} s; peak memory "
          f"+{memory.peak_mb:.0f} MB above the loaded pipeline")
    return 0
