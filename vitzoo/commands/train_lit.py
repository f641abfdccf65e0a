"""``vitzoo train_lit``: train LiT (or its DiT twin) on cached latents, with inheritance and distillation from a DiT.

    vitzoo train_lit -c configs/diffusion/lit_digits.yaml                  # the embedded digits generator (CPU)
    accelerate launch --multi_gpu --num_processes 8 tools/train_lit.py -c configs/diffusion/lit_xl_2_256.yaml \\
        --data-dir <latent cache> --teacher DiT-XL-2-256x256.pt
    vitzoo train_lit --resume runs/lit_digits --max-steps 6000             # continue a run, its own settings

A YAML config (``-c``) holds flag defaults; typed flags win; ``--resume`` starts from the run's own
arguments. Exits with 128 + the signal number when stopped by SIGINT/SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse

HELP = "train LiT/DiT on cached latents (DiT loss, LiT inheritance + distillation; accelerate, exact resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vitzoo.train.diffusion import add_train_lit_arguments, enable_config_file

    add_train_lit_arguments(parser)
    enable_config_file(parser)


def run(args: argparse.Namespace) -> int:
    from vitzoo.train.diffusion import resolve_train_lit_args, train_lit

    result = train_lit(resolve_train_lit_args(args))
    if result.stopped_by_signal:
        print(f"stopped by signal {result.stopped_by_signal} at step {result.steps}; "
              f"resume with: vitzoo train_lit --resume {result.run_dir}")
        return 128 + result.stopped_by_signal
    print(f"trained {result.steps} steps (last loss {result.last_loss:.4f}); run {result.run_dir}"
          + (f"; pipeline {result.pipeline_dir}" if result.pipeline_dir else ""))
    return 0
