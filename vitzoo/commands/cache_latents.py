"""``vitzoo cache_latents``: encode an ImageFolder split once with a diffusers VAE, for ``vitzoo train_lit``.

    vitzoo cache_latents --data-dir /data/imagenet/train --output /data/in1k-latents-256 \\
        --vae stabilityai/sd-vae-ft-ema --image-size 256 --device cuda
    vitzoo cache_latents --data-dir ~/.cache/vitzoo/digits/train --output runs/digits-16px \\
        --vae none --image-size 16 --grayscale --no-flip            # pixel space, no VAE

Stores the VAE posterior's mean and std of each image (and of its mirror image unless ``--no-flip``), so
training still samples a fresh latent and a random flip per step as DiT does (see
:mod:`vitzoo.data.latents`).
"""

from __future__ import annotations

import argparse

from ._types import positive_int

HELP = "precompute VAE latents (or pixels) of an ImageFolder split for diffusion training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="one split folder: <split>/<class>/<image>")
    parser.add_argument("--output", required=True, help="cache directory to create")
    parser.add_argument("--vae", default="stabilityai/sd-vae-ft-ema",
                        help="diffusers AutoencoderKL (hub id or folder; a pipeline folder's vae/ works), or 'none' "
                             "for pixel space")
    parser.add_argument("--image-size", type=positive_int, default=256, help="side of DiT's (ADM) centre crop")
    parser.add_argument("--grayscale", action="store_true", help="read images as one channel")
    parser.add_argument("--no-flip", action="store_true", help="do not store mirror images (digits, text)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--shard-size", type=positive_int, default=10_000, help="images per safetensors shard")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="storage dtype")
    parser.add_argument("--device", default=None, help="where the VAE runs (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from vitzoo.data.latents import cache_latents

    # the checks cache_latents makes, before a VAE is loaded (or downloaded) for nothing
    if Path(args.output).exists():
        raise FileExistsError(f"{args.output} already exists; choose another --output or remove it")
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir}: no such image folder (layout: <split>/<class>/<image>)")
    vae = None
    if args.vae.lower() != "none":
        from diffusers import AutoencoderKL

        from vitzoo.diffusion.hub import hub_errors

        folder = Path(args.vae)
        subfolder = "vae" if (folder / "vae" / "config.json").is_file() else None
        with hub_errors(args.vae, what="--vae"):
            vae = AutoencoderKL.from_pretrained(args.vae, subfolder=subfolder)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if args.image_size % factor:
            raise ValueError(f"--image-size {args.image_size} is not a multiple of {factor}, the downsampling factor "
                             f"of --vae {args.vae}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from timm.data import ImageDataset

    total = len(ImageDataset(args.data_dir))
    with tqdm(total=total, desc="cache", unit="img") as bar:
        path = cache_latents(args.data_dir, args.output, vae=vae, vae_name=None if vae is None else args.vae,
                             image_size=args.image_size, grayscale=args.grayscale, flip=not args.no_flip,
                             batch_size=args.batch_size, shard_size=args.shard_size, dtype=getattr(torch, args.dtype),
                             device=device, progress=lambda done: bar.update(done - bar.n))
    print(f"wrote {path}")
    return 0
