"""The diffusion-transformer engine: DiT's recipe, and LiT's (weights inherited from a DiT, hybrid distillation
from a frozen DiT teacher).

    vitzoo cache_latents --data-dir /data/imagenet/train --output /data/imagenet-latents-256 \\
        --vae stabilityai/sd-vae-ft-ema
    accelerate launch --multi_gpu --num_processes 8 tools/train_lit.py -c configs/diffusion/lit_xl_2_256.yaml \\
        --data-dir /data/imagenet-latents-256 --teacher DiT-XL-2-256x256.pt

Data are latents cached once by :func:`vitzoo.data.latents.cache_latents` (or pixels, for pixel-space
models). Each step draws t uniformly, noises the latents
(:class:`~vitzoo.diffusion.gaussian_diffusion.GaussianDiffusion`), drops labels to the null class with the
model's ``class_dropout_prob`` and minimises DiT's loss (ε MSE + learned-variance VLB) plus, with a teacher,
LiT's distillation terms (:class:`~vitzoo.diffusion.distill.lit.LiTDistillationLoss`). The flags are defined
in :mod:`vitzoo.commands.train_lit`; the loop, the EMA (what sampling uses), checkpoints every
``--checkpoint-steps`` and exact resume are the training core's (:mod:`vitzoo.train.loop`). The end of a run
writes a ``LiTPipeline`` (EMA weights, scheduler, VAE) to ``<run>/pipeline``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from ..data import DIGITS_DATASET
from .engine import Engine, StepResult
from .loop import Trainer, TrainResult

__all__ = ["DiffusionEngine", "build_student", "check_train_lit_args", "load_teacher", "train_lit"]

_logger = logging.getLogger("vitzoo.train")

CHECKPOINT_KIND = "vitzoo-diffusion"


def check_train_lit_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse resolved flags that cannot make a run."""
    if not args.data_dir and not args.dataset:
        raise ValueError("give --data-dir (a latent cache from `vitzoo cache_latents`) or --dataset vitzoo/digits")
    if args.distill and not args.teacher:
        raise ValueError("--distill needs --teacher")
    if args.inherit != "none" and not args.teacher:
        raise ValueError(f"--inherit {args.inherit} needs --teacher")
    return args


def _model_class(name: str):
    from ..diffusion.dit import VzDiTTransformer2DModel
    from ..diffusion.lightnet import LightNetTransformer2DModel
    from ..diffusion.lit import LiTTransformer2DModel

    return {"lit": LiTTransformer2DModel, "dit": VzDiTTransformer2DModel, "lightnet": LightNetTransformer2DModel}[name]


def build_student(args: argparse.Namespace, shape: tuple[int, int, int], num_classes: int):
    """The student for a cache of ``shape`` [C, h, w] latents and ``num_classes`` classes: the variant's
    sizes, then the cache's latent size, channels and classes, then ``--model-kwargs``."""
    cls = _model_class(args.model)
    channels, height, width = shape
    if height != width:
        raise ValueError(f"cached latents are {height}x{width}; training expects square latents")
    kwargs: dict[str, Any] = {}
    if args.variant:
        if args.variant not in cls.VARIANTS:
            raise ValueError(f"unknown --variant {args.variant!r}; expected one of {', '.join(cls.VARIANTS)}")
        kwargs.update(cls.VARIANTS[args.variant])
    kwargs.update(sample_size=height, in_channels=channels, num_classes=num_classes)
    kwargs.update(args.model_kwargs or {})
    return cls(**kwargs)


class DiffusionEngine(Engine):
    """A class-conditional diffusion transformer (LiT or its DiT twin) on cached latents, optionally inheriting
    from and distilled by a DiT teacher."""

    kind = CHECKPOINT_KIND
    step_key = "step"

    def default_experiment(self) -> str:
        return "-".join(filter(None, [self.args.model, (self.args.variant or "").replace("/", "")]))

    def build(self, trainer: Trainer, state: Optional[dict[str, Any]]) -> None:
        from ..data.latents import LatentDataset
        from ..diffusion.distill.lit import LiTDistillationLoss
        from ..diffusion.gaussian_diffusion import GaussianDiffusion

        args, accelerator = self.args, trainer.accelerator
        data_dir = args.data_dir
        if args.dataset == DIGITS_DATASET:
            from ..data.latents import digits_pixel_cache

            with accelerator.main_process_first():
                data_dir = digits_pixel_cache(args.data_dir)
        self.train_set = LatentDataset(data_dir, flip=not args.no_flip, preload=args.preload)
        self.classes = self.train_set.classes
        student = build_student(args, self.train_set.shape, len(self.classes))
        self.teacher = None
        if args.teacher:
            teacher = load_teacher(args.teacher, args.teacher_kwargs)
            self.teacher = teacher.to(accelerator.device).eval().requires_grad_(False)
        if state is None and args.inherit != "none":
            from ..diffusion.inherit import inherit_from_dit

            report = inherit_from_dit(student, self.teacher, rule=args.inherit)
            _logger.info("inherited from %s: %s; new: %s", args.teacher, report.summary(),
                         ", ".join(sorted({k.split(".", 2)[-1] for k in report.new})))
        if args.grad_checkpointing:
            student.enable_gradient_checkpointing()
        self.model = student.to(accelerator.device)
        self.optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=args.lr,
                                           weight_decay=args.weight_decay)
        self.diffusion = GaussianDiffusion()
        self.loss = LiTDistillationLoss(self.diffusion, noise_weight=args.kd_noise_weight,
                                        variance_weight=args.kd_variance_weight,
                                        variance_target=args.kd_variance_target)

    def identity(self) -> dict[str, str]:
        config = {k: v for k, v in self.model.config.items() if not k.startswith("_")}
        return {"model_class": type(self.model).__name__, "model_config": json.dumps(config, sort_keys=True)}

    def metadata(self) -> dict[str, str]:
        return {"classes": json.dumps(self.classes)}

    def step(self, model, batch) -> StepResult:
        latents, labels = (t.to(self.accelerator.device) for t in batch)
        timesteps = self.diffusion.sample_timesteps(latents.shape[0], latents.device)
        noise = torch.randn_like(latents)
        x_t = self.diffusion.q_sample(latents, timesteps, noise)
        labels = self.model.y_embedder.drop_labels(labels)
        teacher_out = None
        if self.args.distill:
            with torch.no_grad(), self.accelerator.autocast():
                teacher_out = self.teacher(x_t, timesteps, labels).sample.float()
        with self.accelerator.autocast():
            out = model(x_t, timesteps, labels).sample
        terms = self.loss(out.float(), latents, x_t, timesteps, noise, teacher_out)
        loss = terms.pop("loss").mean()
        return StepResult(loss=loss, samples=latents.shape[0], terms={k: v.mean() for k, v in terms.items()})

    def finish(self, trainer: Trainer) -> Optional[Path]:
        """Write ``<run>/pipeline``: the EMA weights (or the model's), DiT's DDPM scheduler, the VAE and the
        class names."""
        if self.args.no_pipeline:
            return None
        from ..diffusion.pipelines import LiTPipeline, ddpm_scheduler

        transformer = copy.deepcopy(trainer.ema.module if trainer.ema is not None else trainer.trainable).cpu()
        vae = None
        cache_vae = self.train_set.index["vae"]
        if cache_vae is not None:
            from diffusers import AutoencoderKL

            name = self.args.vae or cache_vae.get("name")
            from ..diffusion.hub import hub_errors

            with hub_errors(name or "", what="--vae"):
                vae = AutoencoderKL.from_pretrained(name) if name else AutoencoderKL.from_config(cache_vae["config"])
            if not name:
                _logger.warning("the cache does not name its VAE; the pipeline gets a VAE built from its config "
                                "(random weights): pass --vae")
        pipe = LiTPipeline(transformer=transformer, scheduler=ddpm_scheduler(), vae=vae,
                           id2label={i: name for i, name in enumerate(self.classes)})
        path = trainer.run_dir / "pipeline"
        pipe.save_pretrained(path)
        _logger.info("wrote the pipeline to %s", path)
        return path


def load_teacher(source: Any, kwargs: Optional[dict[str, Any]] = None):
    """A frozen-ready DiT twin from a checkpoint (see :func:`vitzoo.diffusion.inherit.load_dit_state_dict`).

    A vitzoo model folder carries its config; otherwise the architecture is read off the weights' shapes,
    and the head count (which shapes do not tell) comes from DiT's table for the width, or ``kwargs``.
    """
    from ..diffusion.dit import VzDiTTransformer2DModel
    from ..diffusion.inherit import dit_config_from_state_dict, load_dit_state_dict

    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is not None and path.is_dir():
        folder = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
        config = json.loads((folder / "config.json").read_text())
        if config.get("_class_name") in ("VzDiTTransformer2DModel", "LiTTransformer2DModel",
                                          "LightNetTransformer2DModel"):
            return VzDiTTransformer2DModel.from_pretrained(folder, **(kwargs or {}))
    state_dict = load_dit_state_dict(source)
    kwargs = dict(kwargs or {})
    config = dit_config_from_state_dict(state_dict, num_heads=kwargs.get("num_heads"))
    teacher = VzDiTTransformer2DModel(**dict(config, **kwargs))
    teacher.load_state_dict(state_dict)
    return teacher


def train_lit(args: argparse.Namespace, *, on_update=None) -> TrainResult:
    """Train with resolved flags (:func:`vitzoo.commands.train_lit.parse_args`); ``on_update`` as in
    :class:`~vitzoo.train.loop.Trainer`."""
    result = Trainer(DiffusionEngine(check_train_lit_args(args)), on_update=on_update).fit()
    _logger.info("done: %d steps, last loss %.4f, run %s", result.steps, result.last_loss, result.run_dir)
    return result
