"""``vitzoo generate --pipeline linfusion-xl``: SD-XL high-resolution text-to-image with LinFusion-XL.

    vitzoo generate --pipeline linfusion-xl --model stabilityai/stable-diffusion-xl-base-1.0 \\
        --linfusion Yuanshi/LinFusion-XL --prompt "a lake at dawn" --height 4096 --width 4096 --output lake.png
    vitzoo generate --pipeline linfusion-xl --model tiny-random-xl --linfusion random --steps 10 \\
        --height 16384 --width 16384 --output tiny16k.png --stats-json tiny16k.json

The recipe is LinFusion's SD-XL HighRes pipeline (``../shared/specs/linfusion.md`` §6 B, in
:class:`vitzoo.diffusion.pipelines.HighResolutionXLPipeline`): a base at the UNet's native size, then
doubling stages with skip residual, a dilated second UNet pass on blurred latents and re-standardisation.
Every flag of ``--pipeline linfusion`` applies (this module only adds the recipe's own); ``--model
tiny-random-xl`` builds the offline tiny random SD-XL of :mod:`vitzoo.testing.tiny_diffusion`, and
``--upscale-strength`` defaults to the SD-XL recipe's 0.32.
"""

from __future__ import annotations

import argparse

from .._types import nonnegative_float, positive_float

HELP = ("LinFusion-XL high-resolution text-to-image for SD-XL (§6 B): base pass + doubling stages with skip "
        "residual and dilated second pass, up to 16K, tiled VAE, streamed PNG")

SHARES = ("linfusion",)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--cosine-scales", type=nonnegative_float, nargs=3, default=[3.0, 1.0, 1.0],
                       metavar=("C1", "C2", "C3"),
                       help="exponents of the skip-residual, dilated-pass and blur weights (3 1 1)")
    group.add_argument("--gaussian-sigma", type=positive_float, default=1.0,
                       help="sigma of the blur before the dilated pass at the first timestep")


def run(args: argparse.Namespace) -> int:
    from .linfusion import run as run_linfusion

    return run_linfusion(args)
