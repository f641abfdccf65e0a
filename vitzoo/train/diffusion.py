"""Training engine of the class-conditional diffusion transformers: DiT's recipe, and LiT's (weights
inherited from a DiT, hybrid distillation from a frozen DiT teacher).

    vitzoo cache_latents --data-dir /data/imagenet/train --output /data/imagenet-latents-256 \\
        --vae stabilityai/sd-vae-ft-ema
    accelerate launch --multi_gpu --num_processes 8 tools/train_lit.py -c configs/diffusion/lit_xl_2_256.yaml \\
        --data-dir /data/imagenet-latents-256 --teacher DiT-XL-2-256x256.pt

Data are latents cached once by :func:`vitzoo.data.latents.cache_latents` (or pixels, for pixel-space
models). Each step draws t uniformly, noises the latents
(:class:`~vitzoo.diffusion.gaussian_diffusion.GaussianDiffusion`), drops labels to the null class with
the model's ``class_dropout_prob`` and minimises DiT's loss (ε MSE + learned-variance VLB) plus, with a
teacher, LiT's distillation terms (:class:`~vitzoo.diffusion.distill.lit.LiTDistillationLoss`). accelerate distributes the run (DDP over
GPUs and nodes, mixed precision, gradient accumulation); the EMA of the weights is what sampling uses.
Checkpoints (``last`` every ``--checkpoint-steps`` and on SIGINT/SIGTERM) hold the optimizer, EMA, loop
position and every process's RNG state, and each sample's randomness is seeded by (seed, epoch, position),
so a resumed run continues the interrupted one step for step. The end of a run writes a ``LiTPipeline``
(EMA weights, scheduler, VAE) to ``<run>/pipeline``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .checkpoint import Checkpointer, capture_rng_state, restore_rng_state
from .metrics import MetricsLogger
from .signals import graceful_stop

__all__ = [
    "DiffusionTrainer",
    "TrainResult",
    "add_train_lit_arguments",
    "enable_config_file",
    "parse_train_lit_args",
    "resolve_train_lit_args",
    "train_lit",
]

_logger = logging.getLogger("vitzoo.train")

STATE_FORMAT = "vitzoo-diffusion-train/1"
CHECKPOINT_KIND = "vitzoo-diffusion"
DIGITS_DATASET = "vitzoo/digits"


def add_train_lit_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo train_lit`` (timm/DiT names where they exist)."""
    from timm.utils import ParseKwargs

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None,
                      help="latent cache written by `vitzoo cache_latents` (with --dataset: where to build it)")
    data.add_argument("--dataset", default=None, choices=[DIGITS_DATASET],
                      help="the embedded digits as 8x8 grey pixels (built and cached on first use)")
    data.add_argument("--no-flip", action="store_true", help="do not use the cached mirror images")
    data.add_argument("--preload", action="store_true", help="load the whole cache into memory")
    data.add_argument("--workers", type=int, default=4, help="data loader processes")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="lit", choices=["lit", "dit"], help="student architecture")
    model.add_argument("--variant", default=None, help="published size: S/2, B/2, L/2, XL/2 (default: the class's)")
    model.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="constructor overrides, key=value (e.g. hidden_size=64 depth=4 guidance_channels=None)")
    model.add_argument("--grad-checkpointing", action="store_true")
    teacher = parser.add_argument_group("teacher, inheritance and distillation")
    teacher.add_argument("--teacher", default=None,
                         help="DiT checkpoint: official .pt, vitzoo/diffusers model or pipeline folder")
    teacher.add_argument("--teacher-kwargs", nargs="*", default={}, action=ParseKwargs,
                         help="teacher constructor values the checkpoint cannot tell (e.g. num_heads=16)")
    teacher.add_argument("--inherit", default="none", choices=["none", "class2image", "text2image"],
                         help="initialise the student from the teacher's weights (class2image: the paper's rule)")
    teacher.add_argument("--distill", action="store_true", help="add LiT's distillation terms (needs --teacher)")
    teacher.add_argument("--kd-noise-weight", type=float, default=0.5, help="lambda1 (paper: 0.5 class-conditional)")
    teacher.add_argument("--kd-variance-weight", type=float, default=0.05, help="lambda2 (paper: 0.05)")
    teacher.add_argument("--kd-variance-target", default="raw", choices=["raw", "log_variance"])
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=1400, help="DiT's default; --max-steps usually ends the run")
    optim.add_argument("--max-steps", type=int, default=None, help="optimizer updates to train for")
    optim.add_argument("-b", "--batch-size", type=int, default=32, help="per process (DiT: 256 global)")
    optim.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, constant (DiT)")
    optim.add_argument("--weight-decay", type=float, default=0.0)
    optim.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (default: no clipping)")
    optim.add_argument("--grad-accum-steps", type=int, default=1)
    optim.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=True)
    optim.add_argument("--model-ema-decay", type=float, default=0.9999)
    optim.add_argument("--amp", action="store_true", help="mixed precision")
    optim.add_argument("--amp-dtype", default="bfloat16", choices=["float16", "bfloat16"])
    run = parser.add_argument_group("run")
    run.add_argument("--output", default="runs", help="folder of run folders")
    run.add_argument("--experiment", default=None, help="run folder name (default: model, variant and time)")
    run.add_argument("--resume", default=None, help="run folder or state file to continue")
    run.add_argument("--checkpoint-steps", type=int, default=50_000, help="write `last` every N updates")
    run.add_argument("--log-interval", type=int, default=100, help="log metrics every N updates")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="", help="'cpu' to force the CPU (default: accelerate's choice)")
    run.add_argument("--vae", default=None,
                     help="VAE for the exported pipeline (default: the one the cache was made with)")
    run.add_argument("--no-pipeline", action="store_true", help="do not write <run>/pipeline at the end")


def enable_config_file(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-c/--config`` and keep the flags' defaults aside, so :func:`resolve_train_lit_args` can tell the
    flags a user typed (they win) from those a YAML config or a resumed run sets."""
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="YAML file of flag defaults (keys are flag names with underscores); flags win")
    defaults = {}
    for action in parser._actions:
        if action.dest not in ("help", argparse.SUPPRESS):
            defaults[action.dest] = action.default
            action.default = argparse.SUPPRESS
    parser.set_defaults(_flag_defaults=defaults)
    return parser


def _run_arguments(resume: str) -> dict[str, Any]:
    """The arguments a run was started with (``args.json`` of its folder)."""
    path = Path(resume)
    path = (path if path.is_dir() else path.parent) / "args.json"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    return json.loads(path.read_text())


def resolve_train_lit_args(args: argparse.Namespace) -> argparse.Namespace:
    """Merge flag defaults < the resumed run's arguments < the ``-c`` YAML file < typed flags."""
    import yaml

    typed = {k: v for k, v in vars(args).items() if k != "_flag_defaults"}
    defaults = args._flag_defaults
    merged = dict(defaults)
    if typed.get("resume"):
        saved = _run_arguments(typed["resume"])
        merged.update({k: v for k, v in saved.items() if k in defaults and k not in ("resume", "config", "command")})
    if typed.get("config"):
        path = Path(typed["config"])
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of flag names to values")
        unknown = sorted(str(k) for k in values if str(k).replace("-", "_") not in defaults or k == "config")
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}")
        merged.update({str(k).replace("-", "_"): v for k, v in values.items()})
    merged.update(typed)
    if not merged.get("data_dir") and not merged.get("dataset"):
        raise ValueError("give --data-dir (a latent cache from `vitzoo cache_latents`) or --dataset vitzoo/digits")
    return argparse.Namespace(**merged)


def parse_train_lit_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse ``vitzoo train_lit`` flags over a ``-c`` YAML file and, on ``--resume``, the run's own arguments."""
    parser = argparse.ArgumentParser(prog="vitzoo train_lit")
    add_train_lit_arguments(parser)
    enable_config_file(parser)
    return resolve_train_lit_args(parser.parse_args(argv))


def _sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 32-bit seed per sample, decorrelated across its inputs (NumPy's SeedSequence hash)."""
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1)[0])


class _EpochOrder(Sampler):
    """A permutation of the dataset per epoch (seeded by seed and epoch), as ``(index, sample_seed)`` items."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for position, index in enumerate(order.tolist()):
            yield index, _sample_seed(self.seed, self.epoch, 0, position)

    def __len__(self) -> int:
        return self.size


@dataclass
class TrainResult:
    """How a run ended: its folder, the updates done, the last logged loss, the exported pipeline (if any)
    and the signal that stopped it (None when it ran to the end)."""

    run_dir: Path
    steps: int
    last_loss: float
    pipeline_dir: Optional[Path]
    stopped_by_signal: Optional[int] = None


def _model_class(name: str):
    from ..diffusion.dit import VzDiTTransformer2DModel
    from ..diffusion.lit import LiTTransformer2DModel

    return {"lit": LiTTransformer2DModel, "dit": VzDiTTransformer2DModel}[name]


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


class DiffusionTrainer:
    """One run: data, student (and teacher), optimizer, EMA, checkpoints; :meth:`fit` trains."""

    def __init__(self, args: argparse.Namespace):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from ..data.latents import LatentDataset
        from ..diffusion.distill.lit import LiTDistillationLoss
        from ..diffusion.gaussian_diffusion import GaussianDiffusion

        self.args = args
        if args.distill and not args.teacher:
            raise ValueError("--distill needs --teacher")
        if args.inherit != "none" and not args.teacher:
            raise ValueError(f"--inherit {args.inherit} needs --teacher")
        # rng_types=[]: every sample is seeded by (seed, epoch, position); accelerate must not re-sync RNGs
        self.accelerator = accelerator = Accelerator(
            cpu=args.device == "cpu", mixed_precision={"float16": "fp16", "bfloat16": "bf16"}[args.amp_dtype]
            if args.amp else "no", gradient_accumulation_steps=args.grad_accum_steps, rng_types=[])
        set_seed(args.seed, device_specific=True)
        data_dir = args.data_dir
        if args.dataset == DIGITS_DATASET:
            from ..data.latents import digits_pixel_cache

            with accelerator.main_process_first():
                data_dir = digits_pixel_cache(args.data_dir)
        self.dataset = LatentDataset(data_dir, flip=not args.no_flip, preload=args.preload)
        self.classes = self.dataset.classes
        state = Checkpointer.load(args.resume) if args.resume else None

        student = build_student(args, self.dataset.shape, len(self.classes))
        self.teacher = None
        if args.teacher:
            teacher = load_teacher(args.teacher, args.teacher_kwargs)
            self.teacher = teacher.to(accelerator.device).eval().requires_grad_(False)
        if state is not None:
            self._check_resume(state, student)
            student.load_state_dict(state["model"])
        elif args.inherit != "none":
            from ..diffusion.inherit import inherit_from_dit

            report = inherit_from_dit(student, self.teacher, rule=args.inherit)
            _logger.info("inherited from %s: %s; new: %s", args.teacher, report.summary(),
                         ", ".join(sorted({k.split(".", 2)[-1] for k in report.new})))
        if args.grad_checkpointing:
            student.enable_gradient_checkpointing()
        student = student.to(accelerator.device)
        self.optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=args.lr,
                                           weight_decay=args.weight_decay)
        self.order = _EpochOrder(len(self.dataset), args.seed)
        # the loader's own generator: starting an epoch must not draw from the global stream (exact resume)
        loader = DataLoader(self.dataset, batch_size=args.batch_size, sampler=self.order, num_workers=args.workers,
                            drop_last=True, generator=torch.Generator().manual_seed(args.seed))
        if len(loader) == 0:
            raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(self.dataset)} cached samples")
        self.model, self.optimizer, self.loader = accelerator.prepare(student, self.optimizer, loader)
        self.base_model = accelerator.unwrap_model(self.model)
        # after prepare: DDP has broadcast rank 0's weights, so every process starts the same EMA (as DiT does)
        self.ema = copy.deepcopy(self.base_model).requires_grad_(False).eval() if args.model_ema else None
        self.diffusion = GaussianDiffusion()
        self.loss = LiTDistillationLoss(self.diffusion, noise_weight=args.kd_noise_weight,
                                        variance_weight=args.kd_variance_weight,
                                        variance_target=args.kd_variance_target)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.run_dir = self._run_dir(resuming=state is not None)
        self.checkpointer = Checkpointer(self.run_dir)
        self.metrics = MetricsLogger(self.run_dir, step_key="step") if accelerator.is_main_process else None
        if state is not None:
            self._restore(state)
        if accelerator.is_main_process:
            saved = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "resume"}
            (self.run_dir / "args.json").write_text(json.dumps(saved, indent=1, default=str) + "\n")

    def _run_dir(self, resuming: bool) -> Path:
        if resuming:
            path = Path(self.args.resume)
            return path if path.is_dir() else path.parent
        name = self.args.experiment or "-".join(filter(None, [
            self.args.model, (self.args.variant or "").replace("/", ""), time.strftime("%Y%m%d-%H%M%S")]))
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            # the clock may tick between processes: every process uses the main process's folder name
            name = broadcast_object_list([name])[0]
        path = Path(self.args.output) / name
        if self.accelerator.is_main_process:
            if (path / "last.state.pt").exists():
                raise FileExistsError(f"{path} already holds a run; pass --resume {path} or another --experiment")
            path.mkdir(parents=True, exist_ok=True)
        return path

    def _identity(self, model) -> dict[str, str]:
        return {"kind": CHECKPOINT_KIND, "model_class": type(model).__name__,
                "model_config": json.dumps({k: v for k, v in model.config.items() if not k.startswith("_")},
                                           sort_keys=True)}

    def _check_resume(self, state: dict[str, Any], student) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.args.resume} is not a diffusion training state (format {state.get('format')!r})")
        expected, found = self._identity(student), state.get("metadata", {})
        wrong = [f"{k}: checkpoint {found.get(k)!r}, this run {v!r}" for k, v in expected.items() if found.get(k) != v]
        if wrong:
            raise ValueError(f"cannot resume from {self.args.resume}: " + "; ".join(wrong))

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("this run uses --model-ema but the checkpoint has no EMA weights")
            self.ema.load_state_dict(state["ema"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        rng = state["rng"]
        if len(rng) == self.accelerator.num_processes:
            restore_rng_state(rng[self.accelerator.process_index])
        else:
            _logger.warning("checkpoint has RNG states of %d processes, this run has %d: the random streams restart",
                            len(rng), self.accelerator.num_processes)
        _logger.info("resumed %s at step %d (epoch %d, batch %d)", self.run_dir, self.step, self.epoch,
                     self.batch_in_epoch)

    def _save(self) -> None:
        rng = [capture_rng_state()]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rng = list(gather_object(rng))
        if not self.accelerator.is_main_process:
            return
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "optimizer": self.optimizer.state_dict(),
            "ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()} if self.ema is not None else None,
            "rng": rng,
            "args": {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, type(None)))},
        }
        metadata = dict(self._identity(self.base_model), classes=json.dumps(self.classes), step=str(self.step))
        self.checkpointer.save("last", state, self.base_model.state_dict(), metadata)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.args.model_ema_decay
        for ema_param, param in zip(self.ema.parameters(), self.base_model.parameters()):
            ema_param.lerp_(param.detach(), 1 - decay)

    def _train_step(self, latents: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self.base_model
        timesteps = self.diffusion.sample_timesteps(latents.shape[0], latents.device)
        noise = torch.randn_like(latents)
        x_t = self.diffusion.q_sample(latents, timesteps, noise)
        labels = model.y_embedder.drop_labels(labels)
        teacher_out = None
        if self.args.distill:
            with torch.no_grad(), self.accelerator.autocast():
                teacher_out = self.teacher(x_t, timesteps, labels).sample.float()
        with self.accelerator.autocast():
            out = self.model(x_t, timesteps, labels).sample
        return self.loss(out.float(), latents, x_t, timesteps, noise, teacher_out)

    def fit(self) -> TrainResult:
        args, accelerator = self.args, self.accelerator
        max_steps = args.max_steps or args.epochs * len(self.loader) // args.grad_accum_steps
        sums: dict[str, torch.Tensor] = {}
        count, last_loss, since = 0, float("nan"), time.perf_counter()
        halted = False
        with graceful_stop() as stop:
            while self.step < max_steps and self.epoch < args.epochs and not halted:
                self.order.epoch = self.epoch
                loader = self.loader
                if self.batch_in_epoch:
                    loader = accelerator.skip_first_batches(self.loader, self.batch_in_epoch)
                for latents, labels in loader:
                    with accelerator.accumulate(self.model):
                        terms = self._train_step(latents, labels)
                        loss = terms["loss"].mean()
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and args.clip_grad:
                            accelerator.clip_grad_norm_(self.model.parameters(), args.clip_grad)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    self.batch_in_epoch += 1
                    for key, value in terms.items():
                        sums[key] = sums.get(key, 0.0) + value.detach().mean()
                    count += 1
                    if not accelerator.sync_gradients:
                        continue
                    self.step += 1
                    if self.ema is not None:
                        self._update_ema()
                    if self.step % args.log_interval == 0 or self.step == max_steps:
                        # one reduction per log line: no host sync on the other steps
                        means = {k: accelerator.reduce(v / count, "mean").item() for k, v in sums.items()}
                        last_loss = means["loss"]
                        self._log(means, count, time.perf_counter() - since)
                        sums, count, since = {}, 0, time.perf_counter()
                    halted = self._should_stop(stop)
                    if self.step % args.checkpoint_steps == 0 or halted or self.step >= max_steps:
                        self._save()
                    if halted or self.step >= max_steps:
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
        signal_number = (stop.signal_number or signal.SIGTERM) if halted else None
        if halted:
            _logger.warning("stopped by signal %s at step %d; resume with --resume %s", signal_number, self.step,
                            self.run_dir)
        pipeline_dir = None
        if not args.no_pipeline and accelerator.is_main_process and not halted:
            pipeline_dir = self.export_pipeline()
        if self.metrics is not None:
            if self.metrics.rows:
                self.metrics.plot(title=f"{args.model} {args.variant or ''} on {Path(self.dataset.root).name}")
            self.metrics.close()
        accelerator.wait_for_everyone()
        return TrainResult(self.run_dir, self.step, last_loss, pipeline_dir, signal_number)

    def _should_stop(self, stop) -> bool:
        """Whether a process received SIGINT/SIGTERM. Several processes combine their flags with an all-reduce
        (a host sync) every ``--log-interval`` updates, so all of them stop after the same update."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return bool(stop)
        if stop:
            accelerator.set_trigger()
        return self.step % self.args.log_interval == 0 and accelerator.check_trigger()

    def _log(self, means: dict[str, float], batches: int, seconds: float) -> None:
        if self.metrics is None:
            return
        images = batches * self.args.batch_size * self.accelerator.num_processes
        row = {"step": self.step, "epoch": self.epoch, **{f"train_{k}": v for k, v in means.items()},
               "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": images / max(seconds, 1e-9)}
        self.metrics.log(row)
        _logger.info("step %d epoch %d loss %.4f (%s) %.1f img/s", self.step, self.epoch, means["loss"],
                     ", ".join(f"{k} {v:.4f}" for k, v in means.items() if k != "loss"), row["images_per_s"])

    def export_pipeline(self) -> Path:
        """Write ``<run>/pipeline``: the EMA weights (or the model's), DiT's DDPM scheduler, the VAE and the
        class names."""
        from ..diffusion.pipelines import LiTPipeline, ddpm_scheduler

        transformer = copy.deepcopy(self.ema if self.ema is not None else self.base_model).cpu()
        vae = None
        cache_vae = self.dataset.index["vae"]
        if cache_vae is not None:
            from diffusers import AutoencoderKL

            name = self.args.vae or cache_vae.get("name")
            vae = AutoencoderKL.from_pretrained(name) if name else AutoencoderKL.from_config(cache_vae["config"])
            if not name:
                _logger.warning("the cache does not name its VAE; the pipeline gets a VAE built from its config "
                                "(random weights): pass --vae")
        pipe = LiTPipeline(transformer=transformer, scheduler=ddpm_scheduler(), vae=vae,
                           id2label={i: name for i, name in enumerate(self.classes)})
        path = self.run_dir / "pipeline"
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
        if config.get("_class_name") in ("VzDiTTransformer2DModel", "LiTTransformer2DModel"):
            return VzDiTTransformer2DModel.from_pretrained(folder, **(kwargs or {}))
    state_dict = load_dit_state_dict(source)
    kwargs = dict(kwargs or {})
    config = dit_config_from_state_dict(state_dict, num_heads=kwargs.get("num_heads"))
    teacher = VzDiTTransformer2DModel(**dict(config, **kwargs))
    teacher.load_state_dict(state_dict)
    return teacher


def train_lit(args: argparse.Namespace) -> TrainResult:
    """Train with resolved flags (see :func:`parse_train_lit_args`)."""
    if not logging.getLogger("vitzoo").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logging.getLogger("vitzoo").addHandler(handler)
        logging.getLogger("vitzoo").setLevel(logging.INFO)
    result = DiffusionTrainer(args).fit()
    _logger.info("done: %d steps, last loss %.4f, run %s", result.steps, result.last_loss, result.run_dir)
    return result

