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

from .._types import positive_int

HELP = "class-conditional LiT/DiT samples (class ids or names) as a grid PNG"

# common flags this pipeline cannot honour (refused by ``vitzoo generate``)
UNUSED = {
    "prompt": "LiT is class-conditional and takes no text prompt; give --class-labels (ids or names)",
    "negative_prompt": "LiT is class-conditional and takes no negative prompt (its guidance is against the null "
                       "class, set by --guidance-scale)",
}

DEFAULT_MODEL = "runs/lit_digits/pipeline"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--class-labels", nargs="+", default=None,
                       help="class ids or names (default: every class of a model with at most 16)")
    group.add_argument("--per-class", type=positive_int, default=4, help="samples per class label (grid columns)")
    group.add_argument("--images-per-call", type=positive_int, default=64, help="images per pipeline call")
    group.add_argument("--cell-size", type=positive_int, default=64,
                       help="minimum grid cell side in pixels (small images are enlarged with nearest-neighbour)")
    group.add_argument("--classifier", default=None,
                       help="vitzoo classifier checkpoint (e.g. the digits run of `vitzoo train`): report how often it "
                            "recognises each requested class in the samples (class consistency), also as <output>.json")


def load_pipeline(model: str | None, device: str, dtype: str):
    """The saved ``LiTPipeline`` at ``model`` (default: the embedded digits run) on ``device``."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    from vitzoo.diffusion.pipelines import LiTPipeline

    path = Path(model or DEFAULT_MODEL)
    if not (path / "model_index.json").is_file():
        hint = (" Train the embedded default first: vitzoo train_lit -c configs/diffusion/lit_digits.yaml"
                if model is None else "")
        raise FileNotFoundError(f"no LiTPipeline at {path} (expected model_index.json).{hint}")
    # the dtype at load, not a later pipe.to(dtype): that warns "should be kept in float32: []" per model;
    # no "Loading pipeline components" bar for a local pipeline that loads in a blink
    shown = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        pipe = LiTPipeline.from_pretrained(path, dtype=getattr(torch, dtype))
    finally:
        if shown:
            diffusers_logging.enable_progress_bar()
    return pipe.to(device)


def use_scheduler(pipe, name: str) -> None:
    """Replace the pipeline's scheduler by the diffusers class ``name`` built from the current config.

    A scheduler other than DDPM gets ``variance_type=None``: the pipeline hands it the noise prediction only.
    """
    import inspect

    from diffusers import DDPMScheduler

    from . import scheduler_class

    cls = scheduler_class(name)
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


def class_consistency(predicted: list[int], requested: list[int], names: dict[int, str], num_classes: int) -> dict:
    """Share of the samples of each requested class that a classifier assigns to that class.

    Args:
        predicted: the classifier's class per sample, in the generator's class ids.
        requested: the class each sample was generated for.
        names: class id -> name, for the report.
        num_classes: classes of the generator (chance level is 1 / num_classes).

    Returns:
        ``{"accuracy": overall, "per_class": {name: accuracy}, "samples": n, "chance": 1 / classes}``.
    """
    per_class = {}
    for cls in sorted(set(requested)):
        hits = [p == r for p, r in zip(predicted, requested) if r == cls]
        per_class[names.get(cls, str(cls))] = sum(hits) / len(hits)
    correct = sum(p == r for p, r in zip(predicted, requested))
    return {"accuracy": correct / len(requested), "per_class": per_class, "samples": len(requested),
            "chance": 1 / num_classes}


def _classify(classifier_path: str, images, pipe) -> list[int]:
    """Predictions of a vitzoo-trained classifier, mapped from its class names to the pipeline's class ids."""
    from vitzoo.train.evaluation import load_classifier

    classifier = load_classifier(classifier_path, device=images.device)
    # classes are matched by name (folder names of both runs); a class the generator lacks never counts as a hit
    to_pipeline = {}
    for index, name in enumerate(classifier.classes):
        key = name.strip().lower()
        to_pipeline[index] = pipe.labels.get(key, int(key) if key.isdigit() else -1)
    return [to_pipeline[p] for p in classifier.predict(images).tolist()]


def check_arguments(args: argparse.Namespace, pipe) -> tuple[list[int], float]:
    """The class ids and guidance scale of the run; ValueError naming the flag for anything ``pipe`` cannot do."""
    config = pipe.transformer.config
    factor = pipe.vae_scale_factor
    multiple, native = factor * config.patch_size, config.sample_size * factor
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and value % multiple:
            raise ValueError(
                f"{flag} {value} is not possible: this LiT pipeline generates sides that are multiples of {multiple} "
                f"(VAE factor {factor} x patch size {config.patch_size}); it was trained at {native}x{native}, "
                "the size it generates when --height/--width are omitted")
    labels = args.class_labels
    if labels is None:
        if config.num_classes > 16:
            raise ValueError(f"give --class-labels (ids or names): this model has {config.num_classes} classes")
        labels = list(range(config.num_classes))
    try:
        ids = pipe.get_label_ids(labels)
    except ValueError as err:
        raise ValueError(f"--class-labels: {err}") from None
    outside = [i for i in ids if not 0 <= i < config.num_classes]
    if outside:
        raise ValueError(f"--class-labels: class ids must lie in [0, {config.num_classes}), got {outside}")
    guided = pipe.transformer.null_class_id is not None
    guidance = (4.0 if guided else 1.0) if args.guidance_scale is None else args.guidance_scale
    if guidance > 1 and not guided:
        raise ValueError(f"--guidance-scale {guidance:g} needs a model trained with label dropout (a null class); "
                         "this one has none: give --guidance-scale 1 or omit it")
    if args.classifier and not Path(args.classifier).exists():
        raise FileNotFoundError(f"--classifier {args.classifier}: no such checkpoint")
    return ids, guidance


def run(args: argparse.Namespace) -> int:
    from . import resolve_device

    device = resolve_device(args.device)
    pipe = load_pipeline(args.model, device, args.dtype)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler:
        use_scheduler(pipe, args.scheduler)
    labels, guidance = check_arguments(args, pipe)
    steps = 250 if args.steps is None else args.steps
    images, ids = generate_grid(pipe, labels, args.per_class, steps=steps, guidance_scale=guidance, seed=args.seed,
                                height=args.height, width=args.width, batch_size=args.images_per_call)
    path = save_grid(images, args.per_class, args.output, args.cell_size)
    print(f"wrote {path}: {len(ids)} samples of {images.shape[-1]}x{images.shape[-2]} px, classes {sorted(set(ids))} "
          f"({steps} steps of {type(pipe.scheduler).__name__}, guidance {guidance})")
    if args.classifier:
        import json

        names = {int(k): v.split(",")[0].strip() for k, v in (pipe.config.id2label or {}).items()}
        report = class_consistency(_classify(args.classifier, images, pipe), ids, names,
                                   pipe.transformer.config.num_classes)
        report.update(model=str(args.model or DEFAULT_MODEL), classifier=args.classifier, steps=steps,
                      scheduler=type(pipe.scheduler).__name__, guidance_scale=guidance, seed=args.seed)
        report_path = Path(args.output).with_suffix(".json")
        report_path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"class consistency {report['accuracy']:.1%} (chance {report['chance']:.0%}) over {len(ids)} samples; "
              + ", ".join(f"{k}: {v:.0%}" for k, v in report["per_class"].items()) + f"; wrote {report_path}")
    return 0
