"""``vitzoo generate --pipeline lit``: a grid of class-conditional samples from a saved ``LiTPipeline``.

    vitzoo generate --pipeline lit --model runs/lit_digits/pipeline --class-labels 0 1 2 3 4 5 6 7 8 9 \\
        --per-class 8 --output digits.png
    vitzoo generate --pipeline lit --model <lit-xl-2 pipeline> --class-labels "golden retriever" 88 \\
        --scheduler DPMSolverMultistepScheduler --steps 25 --guidance-scale 4.0

Rows are the requested classes, columns the samples of each. Without ``--model`` the embedded default is
used: the digits LiT that ``vitzoo train_lit -c configs/diffusion/lit_digits.yaml`` writes.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "class-conditional LiT/DiT samples (class ids or names) as a grid PNG"

DEFAULT_MODEL = "runs/lit_digits/pipeline"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--class-labels", nargs="+", default=None,
                       help="class ids or names (default: every class of a model with at most 16)")
    group.add_argument("--per-class", type=int, default=4, help="samples per class label (grid columns)")
    group.add_argument("--batch-size", type=int, default=64, help="images per pipeline call")
    group.add_argument("--cell-size", type=int, default=64, help="minimum grid cell side in pixels (small images are "
                                                                  "enlarged with nearest-neighbour)")


def load_pipeline(model: str | None, device: str, dtype: str):
    """The saved ``LiTPipeline`` at ``model`` (default: the embedded digits run) on ``device``."""
    import torch

    from vitzoo.diffusion.pipelines import LiTPipeline

    path = Path(model or DEFAULT_MODEL)
    if not (path / "model_index.json").is_file():
        hint = (" Train the embedded default first: vitzoo train_lit -c configs/diffusion/lit_digits.yaml"
                if model is None else "")
        raise FileNotFoundError(f"no LiTPipeline at {path} (expected model_index.json).{hint}")
    return LiTPipeline.from_pretrained(path).to(device=device, dtype=getattr(torch, dtype))


def use_scheduler(pipe, name: str) -> None:
    """Replace the pipeline's scheduler by the diffusers class ``name`` built from the current config.

    A scheduler other than DDPM gets ``variance_type=None``: the pipeline hands it the noise prediction only.
    """
    import inspect

    import diffusers
    from diffusers import DDPMScheduler
    from diffusers.schedulers import SchedulerMixin

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{name!r} is not a diffusers scheduler class (e.g. DPMSolverMultistepScheduler, DDIMScheduler)")
    overrides = {}
    if not issubclass(cls, DDPMScheduler) and "variance_type" in inspect.signature(cls.__init__).parameters:
        overrides["variance_type"] = None
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def generate_grid(pipe, labels: list, per_class: int, *, steps: int, guidance_scale: float, seed: int,
                  height: int | None = None, width: int | None = None, batch_size: int = 64):
    """Images [len(labels)·per_class, C, H, W] in [0, 1], class-major, and their class ids."""
    import torch

    ids = pipe.get_label_ids(labels)
    requested = [i for i in ids for _ in range(per_class)]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    images = []
    for start in range(0, len(requested), batch_size):
        out = pipe(requested[start: start + batch_size], guidance_scale=guidance_scale, num_inference_steps=steps,
                   height=height, width=width, generator=generator, output_type="pt")
        images.append(out.images.float().cpu())
    return torch.cat(images), requested


def save_grid(images, columns: int, path: str | Path, cell_size: int = 64) -> Path:
    """Write images [N, C, H, W] in [0, 1] as a PNG grid with ``columns`` per row."""
    import torch.nn.functional as F
    from torchvision.utils import save_image

    scale = max(1, math.ceil(cell_size / max(images.shape[-2:])))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=columns, padding=2, pad_value=1.0)
    return path


def run(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model, device, args.dtype)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler:
        use_scheduler(pipe, args.scheduler)
    labels = args.class_labels
    if labels is None:
        if pipe.transformer.config.num_classes > 16:
            raise ValueError("give --class-labels (ids or names) for a model with more than 16 classes")
        labels = list(range(pipe.transformer.config.num_classes))
    steps = args.steps or 250
    guidance = 4.0 if args.guidance_scale is None else args.guidance_scale
    images, ids = generate_grid(pipe, labels, args.per_class, steps=steps, guidance_scale=guidance, seed=args.seed,
                                height=args.height, width=args.width, batch_size=args.batch_size)
    path = save_grid(images, args.per_class, args.output, args.cell_size)
    print(f"wrote {path}: {len(ids)} samples of classes {sorted(set(ids))} "
          f"({steps} steps of {type(pipe.scheduler).__name__}, guidance {guidance})")
    return 0
