"""Image classification training on accelerate: ImageFolder data through ``timm.data``, timm's optimizers,
schedulers, losses and EMA, atomic checkpoints with exact resume, and per-epoch logs.

    vitzoo train -c configs/imagenet/ravlt_s.yaml --data-dir /data/imagenet
    accelerate launch --multi_gpu --num_processes 8 tools/train.py -c configs/imagenet/ravlt_s.yaml --data-dir ...
    vitzoo train --resume runs/<experiment>            # continues exactly where the run stopped

Flags carry timm ``train.py`` names (``--batch-size`` is per process; the global batch is
``batch_size * processes * grad_accum_steps``). When ``--lr`` is not given, it is ``--lr-base`` scaled
by ``global batch / --lr-base-size`` (linearly or by the square root, ``--lr-base-scale``), as in timm.

A run directory holds ``args.yaml`` (the resolved flags; ``-c args.yaml`` repeats the run),
``last.safetensors`` / ``last.state.pt`` and ``best.*`` (see :mod:`vitzoo.train.checkpoint`),
``metrics.jsonl`` / ``metrics.csv`` (one row per epoch), ``curves.png`` and, when tensorboard is
installed, ``tensorboard/``. SIGINT/SIGTERM finish the current update, write ``last`` and exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal as signal_module
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..data import DIGITS_DATASET, ImageFolderDataset, SeededSampler, build_digits_imagefolder, check_image_folder
from ..data.folder import DatasetError
from .checkpoint import Checkpointer
from .config import enable_config_file, resolve_args, save_args
from .ema import create_model_ema, effective_ema_decay
from .evaluation import CHECKPOINT_KIND, data_config_of, evaluate
from .metrics import MetricsLogger
from .progress import EpochProgress
from .runtime import make_accelerator
from .signals import graceful_stop
from .state import (Progress, check_resume_compatible, gather_rng_states, restore_process_rng,
                    restore_training_state, training_state)

__all__ = ["ClassificationTrainer", "RunDirectoryError", "TrainResult", "add_train_arguments", "parse_train_args",
           "resolve_train_args", "train_classifier"]

_logger = logging.getLogger("vitzoo.train")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``vitzoo train`` (timm ``train.py`` names; vitzoo additions say so in their help)."""
    from timm.utils import ParseKwargs

    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", metavar="DIR", default=None,
                       help="ImageFolder root with <train-split>/<class>/<image> and <val-split>/<class>/<image>")
    group.add_argument("--dataset", "-d", metavar="NAME", default="", choices=["", DIGITS_DATASET],
                       help=f"'' for an ImageFolder at --data-dir; '{DIGITS_DATASET}' builds the embedded digits "
                            f"there (default: ~/.cache/vitzoo/digits) on first use")
    group.add_argument("--train-split", metavar="NAME", default="train")
    group.add_argument("--val-split", metavar="NAME", default="validation", help="also finds val/, valid/, eval/")
    group.add_argument("-j", "--workers", type=int, default=4, metavar="N", help="data loading processes per rank")
    group.add_argument("--pin-mem", action=argparse.BooleanOptionalAction, default=False)

    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="NAME", default=None, help="a registered model (vitzoo or timm)")
    group.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs,
                       help="constructor keyword arguments, key=value (in YAML: a mapping)")
    group.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False,
                       help="start from the model's pretrained cfg weights")
    group.add_argument("--initial-checkpoint", metavar="PATH", default="",
                       help="start from these weights (official .pth through the family converter, or safetensors)")
    group.add_argument("--resume", metavar="PATH", default="",
                       help="run directory or .state.pt to continue exactly; its saved flags become the defaults")
    group.add_argument("--num-classes", type=int, default=None, metavar="N", help="default: classes found in the data")
    group.add_argument("--gp", default=None, metavar="POOL", help="global pool type (model default if unset)")
    group.add_argument("--img-size", type=int, default=None, metavar="N", help="input side (model default if unset)")
    group.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"))
    group.add_argument("--crop-pct", type=float, default=None, help="evaluation center-crop fraction")
    group.add_argument("--crop-mode", default=None, help="evaluation crop mode (timm: center, squash, border)")
    group.add_argument("--mean", type=float, nargs="+", default=None)
    group.add_argument("--std", type=float, nargs="+", default=None)
    group.add_argument("--interpolation", default="", help="evaluation resize interpolation (model default if unset)")
    group.add_argument("-b", "--batch-size", type=int, default=128, metavar="N", help="batch per process")
    group.add_argument("-vb", "--validation-batch-size", type=int, default=None, metavar="N")
    group.add_argument("--grad-accum-steps", type=int, default=1, metavar="N",
                       help="micro-batches per optimizer update")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--torchcompile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                       help="torch.compile the model (backend, default inductor)")
    group.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=False,
                       help="SyncBatchNorm across processes")

    group = parser.add_argument_group("optimizer")
    group.add_argument("--opt", default="adamw", metavar="OPTIMIZER", help="a timm optimizer name")
    group.add_argument("--opt-eps", type=float, default=None)
    group.add_argument("--opt-betas", type=float, nargs="+", default=None)
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=0.05)
    group.add_argument("--clip-grad", type=float, default=None, metavar="NORM", help="gradient clipping (off if unset)")
    group.add_argument("--clip-mode", default="norm", choices=["norm", "value", "agc"])
    group.add_argument("--layer-decay", type=float, default=None)

    group = parser.add_argument_group("learning-rate schedule")
    group.add_argument("--sched", default="cosine", metavar="SCHEDULER")
    group.add_argument("--sched-on-updates", action=argparse.BooleanOptionalAction, default=False,
                       help="step the schedule every update")
    group.add_argument("--lr", type=float, default=None, help="learning rate (default: from --lr-base)")
    group.add_argument("--lr-base", type=float, default=5e-4, help="learning rate at a global batch of --lr-base-size")
    group.add_argument("--lr-base-size", type=int, default=512)
    group.add_argument("--lr-base-scale", default="", choices=["", "linear", "sqrt"],
                       help="'' chooses like timm: sqrt for adaptive optimizers, linear otherwise")
    group.add_argument("--warmup-lr", type=float, default=1e-6)
    group.add_argument("--min-lr", type=float, default=1e-5)
    group.add_argument("--epochs", type=int, default=300)
    group.add_argument("--warmup-epochs", type=int, default=5)
    group.add_argument("--warmup-prefix", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--cooldown-epochs", type=int, default=0)
    group.add_argument("--decay-epochs", type=float, default=90)
    group.add_argument("--decay-milestones", type=int, nargs="+", default=[90, 180, 270])
    group.add_argument("--decay-rate", type=float, default=0.1)
    group.add_argument("--patience-epochs", type=int, default=10)

    group = parser.add_argument_group("augmentation and regularisation")
    group.add_argument("--no-aug", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--scale", type=float, nargs=2, default=[0.08, 1.0], help="random-resized-crop area range")
    group.add_argument("--ratio", type=float, nargs=2, default=[3.0 / 4.0, 4.0 / 3.0])
    group.add_argument("--hflip", type=float, default=0.5)
    group.add_argument("--vflip", type=float, default=0.0)
    group.add_argument("--color-jitter", type=float, default=0.4)
    group.add_argument("--aa", default=None, metavar="POLICY", help="auto-augment policy, e.g. rand-m9-mstd0.5-inc1")
    group.add_argument("--aug-repeats", type=float, default=0, help="repeated augmentation (timm RepeatAugSampler)")
    group.add_argument("--reprob", type=float, default=0.0, help="random erasing probability")
    group.add_argument("--remode", default="pixel")
    group.add_argument("--recount", type=int, default=1)
    group.add_argument("--mixup", type=float, default=0.0)
    group.add_argument("--cutmix", type=float, default=0.0)
    group.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    group.add_argument("--mixup-prob", type=float, default=1.0)
    group.add_argument("--mixup-switch-prob", type=float, default=0.5)
    group.add_argument("--mixup-mode", default="batch", choices=["batch", "pair", "elem"])
    group.add_argument("--mixup-off-epoch", type=int, default=0)
    group.add_argument("--smoothing", type=float, default=0.1)
    group.add_argument("--train-interpolation", default="random")
    group.add_argument("--drop", type=float, default=0.0, help="dropout before the head")
    group.add_argument("--drop-path", type=float, default=None, help="stochastic depth (model default if unset)")

    group = parser.add_argument_group("model EMA")
    group.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--model-ema-decay", type=float, default=0.9998)
    group.add_argument("--model-ema-warmup", action=argparse.BooleanOptionalAction, default=False)
    group.add_argument("--model-ema-ref-batch", type=int, default=None,
                       help="vitzoo: the decay is given for this global batch; use decay**(batch/ref) (DeiT-style)")

    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--device", default="", help="'cpu' forces the CPU; default: accelerate's choice")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                       help="mixed precision (through accelerate)")
    group.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    group.add_argument("--output", default="runs", metavar="DIR", help="parent folder of run directories")
    group.add_argument("--experiment", default="", metavar="NAME", help="run directory name (default: time-model-size)")
    group.add_argument("--eval-metric", default="top1", choices=["top1", "top5", "loss"], help="decides 'best'")
    group.add_argument("--log-interval", type=int, default=50, metavar="N",
                       help="updates between progress-bar refreshes")


def resume_base_args(resume: str) -> dict[str, Any]:
    """The flags saved by the run being resumed (``args.yaml`` beside the checkpoint, else its state file),
    with the run directory set to where the checkpoint is now (the folder may have been moved)."""
    import yaml

    path = Path(resume)
    folder = path if path.is_dir() else path.parent
    saved = folder / "args.yaml"
    if saved.is_file():
        values = yaml.safe_load(saved.read_text()) or {}
    else:
        values = dict(Checkpointer.load(path).get("args") or {})
    return dict(values, output=str(folder.parent), experiment=folder.name)


def resolve_train_args(args: argparse.Namespace) -> argparse.Namespace:
    """Merge defaults, the resumed run's flags, the config file and the typed flags; check the result."""
    base = resume_base_args(args.resume) if getattr(args, "resume", "") else None
    resolved = resolve_args(args, base=base)
    if not resolved.model:
        raise ValueError("no model: pass --model NAME or set 'model:' in the config")
    if not resolved.data_dir and resolved.dataset != DIGITS_DATASET:
        raise ValueError("no data: pass --data-dir DIR (an ImageFolder root) or --dataset vitzoo/digits")
    if resolved.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {resolved.batch_size}")
    return resolved


def parse_train_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``vitzoo train`` argument parsing for Python callers (tests, notebooks)."""
    parser = argparse.ArgumentParser(prog="vitzoo train")
    add_train_arguments(parser)
    enable_config_file(parser)
    return resolve_train_args(parser.parse_args(argv))


class RunDirectoryError(ValueError):
    """The run directory already holds another run."""


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    eval_metric: str  # the metric that decides 'best' (``ema_top1`` when EMA is on)
    best_value: Optional[float]
    best_epoch: Optional[int]
    last_metrics: dict[str, Any]
    curves: Optional[Path]
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    epochs_completed: int
    world_size: int
    stopped_by_signal: Optional[int] = None


def _data_root(args: argparse.Namespace, accelerator) -> Path:
    if args.dataset == DIGITS_DATASET:
        # one process writes the folder, the others wait and then read it
        with accelerator.main_process_first():
            return build_digits_imagefolder(args.data_dir or None)
    return Path(args.data_dir)


def _create_model(args: argparse.Namespace, num_classes: int, *, load_weights: bool = True):
    """The model of ``args``; ``load_weights=False`` skips --pretrained / --initial-checkpoint (a resume
    overwrites them anyway, and their file may be gone by then)."""
    import timm

    from ..models import check_model_name

    if not timm.is_model(args.model):
        check_model_name(args.model)
    kwargs = dict(args.model_kwargs or {})
    kwargs["num_classes"] = num_classes
    if args.drop:
        kwargs["drop_rate"] = args.drop
    if args.drop_path is not None:
        kwargs["drop_path_rate"] = args.drop_path
    if args.gp:
        kwargs["global_pool"] = args.gp
    if args.initial_checkpoint and load_weights:
        kwargs["pretrained_cfg_overlay"] = dict(file=args.initial_checkpoint)
    pretrained = load_weights and bool(args.pretrained or args.initial_checkpoint)
    return timm.create_model(args.model, pretrained=pretrained, **kwargs)


def _resolve_lr(args: argparse.Namespace, global_batch: int) -> float:
    if args.lr is not None:
        return args.lr
    scale = args.lr_base_scale or ("sqrt" if any(name in args.opt.lower() for name in ("ada", "lamb")) else "linear")
    ratio = global_batch / args.lr_base_size
    return args.lr_base * (math.sqrt(ratio) if scale == "sqrt" else ratio)


class ClassificationTrainer:
    """One classification run: builds data, model, optimizer, schedule and EMA from resolved flags,
    resumes when asked, and runs the epoch loop. Use :func:`train_classifier` unless you need the
    pieces (``trainer.model``, ``trainer.train_loader``, ...)."""

    def __init__(self, args: argparse.Namespace, *, on_update: Optional[Callable[[int, torch.Tensor], None]] = None):
        from timm.data import Mixup, create_transform, resolve_data_config
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
        from timm.optim import create_optimizer_v2, optimizer_kwargs
        from timm.scheduler import create_scheduler_v2, scheduler_kwargs

        self.args = args
        self.on_update = on_update
        accelerator = self.accelerator = make_accelerator(device=args.device, amp=args.amp, amp_dtype=args.amp_dtype,
                                                          grad_accum_steps=args.grad_accum_steps, seed=args.seed)
        self.is_main = accelerator.is_main_process
        _logger.info("%d process(es) (%s) on %s, mixed precision %s", accelerator.num_processes,
                     accelerator.distributed_type, accelerator.device, accelerator.mixed_precision)

        # data checks come first: a bad folder fails in seconds, before any model is built
        root = _data_root(args, accelerator)
        splits = check_image_folder(root, (args.train_split, args.val_split))
        train_dir, classes = splits[args.train_split]
        val_dir, _ = splits[args.val_split]
        self.classes = classes
        num_classes = args.num_classes or len(classes)
        if num_classes < len(classes):
            raise DatasetError(f"--num-classes {num_classes} is smaller than the {len(classes)} classes in {train_dir}")
        self.num_classes = num_classes

        state = None
        if args.resume:
            state = Checkpointer.load(args.resume)
            check_resume_compatible(state.get("metadata", {}), self._identity(), args.resume)

        model = _create_model(args, num_classes, load_weights=state is None)
        if state is not None:
            from ..models._checkpoint import load_state_dict_checked

            load_state_dict_checked(model, state["model"], source=str(args.resume))
        self.data_config = resolve_data_config(vars(args), model=model)
        if args.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if args.sync_bn and accelerator.num_processes > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(accelerator.device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.base_model = model

        train_tf = create_transform(
            self.data_config["input_size"], is_training=True, no_aug=args.no_aug, scale=tuple(args.scale),
            ratio=tuple(args.ratio), hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
            auto_augment=args.aa, interpolation=args.train_interpolation, mean=self.data_config["mean"],
            std=self.data_config["std"], re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        )
        eval_tf = create_transform(
            self.data_config["input_size"], is_training=False, interpolation=self.data_config["interpolation"],
            mean=self.data_config["mean"], std=self.data_config["std"], crop_pct=self.data_config["crop_pct"],
            crop_mode=self.data_config.get("crop_mode"),
        )
        self.train_set = ImageFolderDataset(train_dir, transform=train_tf)
        self.val_set = ImageFolderDataset(val_dir, class_to_idx=self.train_set.class_to_idx, transform=eval_tf)
        self._build_loaders()

        mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
        self.mixup = None
        if mixup_active:
            if args.batch_size % 2:
                raise ValueError(f"mixup/cutmix pair images within a batch: --batch-size must be even, "
                                 f"got {args.batch_size}")
            self.mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                               prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                               label_smoothing=args.smoothing, num_classes=num_classes)
            self.criterion = SoftTargetCrossEntropy()
        elif args.smoothing:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
        else:
            self.criterion = torch.nn.CrossEntropyLoss()

        self.global_batch = args.batch_size * accelerator.num_processes * args.grad_accum_steps
        self.lr = _resolve_lr(args, self.global_batch)
        optimizer = create_optimizer_v2(model, **dict(optimizer_kwargs(args), lr=self.lr))
        self.scheduler, self.num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args),
                                                              updates_per_epoch=self.updates_per_epoch)
        if args.torchcompile:
            model = torch.compile(model, backend=args.torchcompile)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.val_loader = accelerator.prepare(self.val_loader)
        self.ema = None
        if args.model_ema:
            # after prepare: DDP has broadcast rank 0's initial weights, so every rank averages the same model
            decay = effective_ema_decay(args.model_ema_decay, ref_batch=args.model_ema_ref_batch,
                                        global_batch=self.global_batch)
            self.ema = create_model_ema(self.base_model, decay, warmup=args.model_ema_warmup)

        self.progress = Progress(world_size=accelerator.num_processes, batch_size=args.batch_size)
        self.run_dir = self._run_dir(resuming=state is not None)
        self.checkpointer = Checkpointer(self.run_dir, metric=args.eval_metric,
                                         mode="min" if args.eval_metric == "loss" else "max")
        self._rng_to_restore = None
        self._epoch_images_per_second = 0.0
        self.best_epoch: Optional[int] = None
        # with EMA on, its weights are evaluated, exported and decide 'best' (as in timm)
        self.decision_key = ("ema_" if self.ema is not None else "") + args.eval_metric
        if state is not None:
            self._resume(state)
        self.metrics = MetricsLogger(self.run_dir) if self.is_main else None
        if self.is_main:
            # without 'resume', so `-c args.yaml` repeats the run instead of continuing this one
            save_args(argparse.Namespace(**dict(vars(args), resume="")), self.run_dir / "args.yaml")
        _logger.info("model %s (%.2f M params), %d classes, %d train / %d val images, global batch %d, lr %.3g, "
                     "%d epochs of %d updates", args.model, sum(p.numel() for p in self.base_model.parameters()) / 1e6,
                     num_classes, len(self.train_set), len(self.val_set), self.global_batch, self.lr,
                     self.num_epochs, self.updates_per_epoch)

    def _identity(self) -> dict[str, str]:
        """Metadata a resumed checkpoint must match."""
        return {"model": self.args.model, "num_classes": str(self.num_classes), "classes": json.dumps(self.classes)}

    def _build_loaders(self) -> None:
        from timm.data.distributed_sampler import RepeatAugSampler
        from torch.utils.data import DataLoader, DistributedSampler

        args, accelerator = self.args, self.accelerator
        world, rank = accelerator.num_processes, accelerator.process_index
        if args.aug_repeats:
            base = RepeatAugSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True,
                                    num_repeats=int(args.aug_repeats))
        else:
            # an explicit sampler (also for one process): the epoch order depends on (seed, epoch) only
            base = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        self.train_sampler = SeededSampler(base, seed=args.seed, rank=rank)
        batches = len(self.train_sampler) // args.batch_size
        if batches < args.grad_accum_steps:
            raise DatasetError(
                f"{len(self.train_set)} training images give {batches} full batches of {args.batch_size} per process "
                f"on {world} process(es), fewer than one update of {args.grad_accum_steps} batches; lower --batch-size"
            )
        # whole updates only: a partial accumulation would leak into the next epoch
        self.updates_per_epoch = batches // args.grad_accum_steps
        self.batches_per_epoch = self.updates_per_epoch * args.grad_accum_steps
        # dedicated generators keep loader start-up from drawing on the global RNG (exact resume)
        self.train_loader = DataLoader(self.train_set, batch_size=args.batch_size, sampler=self.train_sampler,
                                       drop_last=True, num_workers=args.workers, pin_memory=args.pin_mem,
                                       generator=torch.Generator().manual_seed(args.seed))
        self.val_loader = DataLoader(self.val_set, batch_size=args.validation_batch_size or args.batch_size,
                                     shuffle=False, num_workers=args.workers, pin_memory=args.pin_mem,
                                     generator=torch.Generator().manual_seed(args.seed))

    def _run_dir(self, resuming: bool) -> Path:
        args = self.args
        name = args.experiment or "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"), args.model.replace("/", "_"),
                                            str(self.data_config["input_size"][-1])])
        run_dir = Path(args.output) / name
        if not resuming and (run_dir / "last.state.pt").exists():
            raise RunDirectoryError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or "
                                    f"choose another --experiment")
        if not args.experiment:
            # every process must agree on a time-stamped name
            from accelerate.utils import broadcast_object_list

            run_dir = Path(broadcast_object_list([str(run_dir)])[0]) if self.accelerator.num_processes > 1 else run_dir
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.args.experiment = run_dir.name
        return run_dir

    def _resume(self, state: dict[str, Any]) -> None:
        progress = restore_training_state(state, optimizer=self.optimizer, scheduler=self.scheduler, ema=self.ema,
                                          scaler=self.accelerator.scaler)
        if (progress.world_size, progress.batch_size) != (self.accelerator.num_processes, self.args.batch_size):
            # the epoch position is kept in images, rounded down to this run's batches
            images = progress.batch_in_epoch * progress.batch_size * progress.world_size
            progress.batch_in_epoch = images // (self.args.batch_size * self.accelerator.num_processes)
            progress.batch_in_epoch -= progress.batch_in_epoch % self.args.grad_accum_steps
            _logger.warning("resuming with %d process(es) x batch %d instead of %d x %d: the epoch continues at "
                            "batch %d and does not repeat the original order exactly", self.accelerator.num_processes,
                            self.args.batch_size, progress.world_size, progress.batch_size, progress.batch_in_epoch)
        progress.world_size, progress.batch_size = self.accelerator.num_processes, self.args.batch_size
        self.progress = progress
        self.checkpointer.best = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        # RNG states go back last, right before the loop, so nothing in the set-up draws from them
        self._rng_to_restore = state["rng"]
        self.scheduler.step(progress.epoch)
        if self.args.sched_on_updates:
            self.scheduler.step_update(progress.update_step)
        _logger.info("resumed %s at epoch %d, batch %d (update %d)", self.args.resume, progress.epoch,
                     progress.batch_in_epoch, progress.update_step)

    def _clip(self) -> None:
        args = self.args
        if args.clip_mode == "norm":
            self.accelerator.clip_grad_norm_(self.model.parameters(), args.clip_grad)
        elif args.clip_mode == "value":
            self.accelerator.clip_grad_value_(self.model.parameters(), args.clip_grad)
        else:
            from timm.utils import adaptive_clip_grad

            self.accelerator.unscale_gradients()
            adaptive_clip_grad(self.base_model.parameters(), args.clip_grad)

    def _train_epoch(self, epoch: int, stop) -> Optional[int]:
        """Train one epoch from ``self.progress.batch_in_epoch``; returns a signal number when stopped."""
        args, accelerator, progress = self.args, self.accelerator, self.progress
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        if self.mixup is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            self.mixup.mixup_enabled = False
        start = progress.batch_in_epoch
        loader = accelerator.skip_first_batches(self.train_loader, start) if start else self.train_loader
        bar = EpochProgress(self.batches_per_epoch, f"train {epoch + 1}/{self.num_epochs}", initial=start,
                            enabled=self.is_main, world_size=accelerator.num_processes)
        # float32 running sums on the device (no per-step host sync; float64 is missing on some backends)
        loss_sum = torch.zeros((), device=accelerator.device)
        skipped = torch.zeros((), device=accelerator.device)
        images_seen, started = 0, time.perf_counter()
        try:
            for batch_index, (images, targets, batch_skipped) in enumerate(loader, start=start):
                if batch_index >= self.batches_per_epoch:
                    break
                images = images.to(accelerator.device, non_blocking=True)
                targets = targets.to(accelerator.device, non_blocking=True)
                if args.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if self.mixup is not None:
                    images, targets = self.mixup(images, targets)
                with accelerator.accumulate(self.model):
                    with accelerator.autocast():
                        loss = self.criterion(self.model(images), targets)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.clip_grad:
                        self._clip()
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                loss = loss.detach()
                loss_sum += loss.float() * images.shape[0]
                skipped += batch_skipped.sum().to(skipped.device)
                images_seen += images.shape[0]
                bar.step(images.shape[0])
                if not accelerator.sync_gradients:
                    continue
                progress.update_step += 1
                progress.batch_in_epoch = batch_index + 1
                if self.ema is not None:
                    self.ema.update(self.base_model, step=progress.update_step)
                self.scheduler.step_update(num_updates=progress.update_step)
                if self.on_update is not None:
                    self.on_update(progress.update_step, loss)
                if progress.update_step % args.log_interval == 0 or progress.batch_in_epoch == self.batches_per_epoch:
                    bar.report(loss=float(loss), lr=self.optimizer.param_groups[0]["lr"])
                if self._should_stop(stop, progress.update_step):
                    self._accumulate_epoch(loss_sum, skipped, images_seen, time.perf_counter() - started)
                    return stop.signal_number or signal_module.SIGTERM
        finally:
            bar.close()
        self._accumulate_epoch(loss_sum, skipped, images_seen, time.perf_counter() - started)
        return None

    def _should_stop(self, stop, update_step: int) -> bool:
        """Whether any process received SIGINT/SIGTERM. With several processes the flags are combined by an
        all-reduce every ``--log-interval`` updates and at the end of each epoch (it syncs the host), so all
        ranks stop at the same update."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return bool(stop)
        if stop:
            accelerator.set_trigger()
        at_check = (update_step % self.args.log_interval == 0
                    or self.progress.batch_in_epoch == self.batches_per_epoch)
        return at_check and accelerator.check_trigger()

    def _accumulate_epoch(self, loss_sum: torch.Tensor, skipped: torch.Tensor, images: int, seconds: float) -> None:
        totals = self.accelerator.reduce(
            torch.stack([loss_sum, skipped, torch.tensor(float(images), device=loss_sum.device)]), reduction="sum")
        self.progress.epoch_loss_sum += float(totals[0])
        self.progress.epoch_samples += int(totals[2])
        self.progress.epoch_skipped += int(totals[1])
        self._epoch_images_per_second = float(totals[2]) / max(seconds, 1e-9)

    def _save(self, row: Optional[dict[str, Any]] = None) -> None:
        """Write ``last``, and ``best`` when ``row`` (an epoch's metrics) improves on it. A collective: every
        process calls it (RNG states are gathered), the main process writes."""
        accelerator = self.accelerator
        rng = gather_rng_states(accelerator)
        accelerator.wait_for_everyone()
        if not self.is_main:
            return
        is_best = row is not None and self.checkpointer.improves(row[self.decision_key])
        if is_best:
            self.checkpointer.best, self.best_epoch = row[self.decision_key], row["epoch"]
        use_ema = self.ema is not None
        metadata = dict(self._identity(), kind=CHECKPOINT_KIND, model_kwargs=json.dumps(self.args.model_kwargs or {}),
                        data_config=json.dumps(data_config_of(self.data_config)),
                        weights="ema" if use_ema else "model", epoch=str(self.progress.epoch))
        metadata.update({k: f"{v:.6g}" for k, v in (row or {}).items() if isinstance(v, float)})
        state = training_state(progress=self.progress, optimizer=self.optimizer, scheduler=self.scheduler,
                               ema=self.ema, scaler=accelerator.scaler, rng_states=rng,
                               args={k: v for k, v in vars(self.args).items() if not k.startswith("_")},
                               best=self.checkpointer.best, extra={"best_epoch": self.best_epoch})
        # the safetensors file holds the weights the reported metrics come from (EMA when enabled)
        export = self.ema.module.state_dict() if use_ema else None
        self.checkpointer.save("last", state, self.base_model.state_dict(), metadata, export_weights=export)
        if is_best:
            self.checkpointer.save("best", state, self.base_model.state_dict(), metadata, export_weights=export)

    def fit(self) -> TrainResult:
        """Run the remaining epochs; returns when done or after a SIGINT/SIGTERM checkpoint."""
        args, accelerator = self.args, self.accelerator
        stopped_by, last_metrics = None, {}
        if self._rng_to_restore is not None:
            restore_process_rng(self._rng_to_restore, accelerator)
        with graceful_stop() as stop:
            for epoch in range(self.progress.epoch, self.num_epochs):
                self.progress.epoch = epoch
                stopped_by = self._train_epoch(epoch, stop)
                if stopped_by is not None:
                    self._save()
                    _logger.warning("stopped by signal %d during epoch %d; resume with --resume %s", stopped_by,
                                    epoch, self.run_dir)
                    break
                metrics = evaluate(self.model, self.val_loader, accelerator, channels_last=args.channels_last)
                row = {"epoch": epoch, "train_loss": self.progress.epoch_loss_sum / max(self.progress.epoch_samples, 1),
                       "val_loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"]}
                if self.ema is not None:
                    ema_metrics = evaluate(self.ema.module, self.val_loader, accelerator,
                                           channels_last=args.channels_last)
                    row.update(ema_val_loss=ema_metrics["loss"], ema_top1=ema_metrics["top1"],
                               ema_top5=ema_metrics["top5"])
                row.update(lr=self.optimizer.param_groups[0]["lr"], images_per_second=self._epoch_images_per_second,
                           skipped_images=self.progress.epoch_skipped + metrics["skipped"])
                if row["skipped_images"]:
                    _logger.warning("epoch %d: %d unreadable image(s) skipped", epoch, row["skipped_images"])
                self.scheduler.step(epoch + 1, row[self.decision_key])
                self.progress = dataclasses.replace(self.progress, epoch=epoch + 1, batch_in_epoch=0,
                                                    epoch_loss_sum=0.0, epoch_samples=0, epoch_skipped=0)
                last_metrics = row
                self._save(row)
                if self.is_main:
                    self.metrics.log(row)
                    _logger.info("epoch %d: train loss %.4f, val loss %.4f, top-1 %.2f, top-5 %.2f%s", epoch,
                                 row["train_loss"], row["val_loss"], row["top1"], row["top5"],
                                 f", EMA top-1 {row['ema_top1']:.2f}" if self.ema is not None else "")
        curves = None
        if self.is_main:
            if self.metrics.rows:
                curves = self.metrics.plot(title=f"{args.model} ({self.run_dir.name})")
            self.metrics.close()
        accelerator.wait_for_everyone()
        best = self.run_dir / "best.safetensors"
        return TrainResult(
            run_dir=self.run_dir, eval_metric=self.decision_key, best_value=self.checkpointer.best,
            best_epoch=self.best_epoch, last_metrics=last_metrics, curves=curves,
            best_checkpoint=best if best.exists() else None,
            last_checkpoint=self.run_dir / "last.safetensors", epochs_completed=self.progress.epoch,
            world_size=accelerator.num_processes, stopped_by_signal=stopped_by,
        )


def train_classifier(args: argparse.Namespace, *, on_update: Optional[Callable[[int, torch.Tensor], None]] = None
                     ) -> TrainResult:
    """Train (or resume) a classifier from resolved flags (:func:`parse_train_args`).

    Args:
        args: resolved flags.
        on_update: called after every optimizer update with (update number, this process's loss of the
            last micro-batch as a 0-d tensor); the tests use it to compare runs step by step.
    """
    return ClassificationTrainer(args, on_update=on_update).fit()
