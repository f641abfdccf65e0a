"""The classification engine: ImageFolder data through ``timm.data``, timm's models, optimizers, schedulers,
mixup/cutmix and losses; evaluation (and the EMA's) after every epoch, ``best`` by ``--eval-metric``.

    vitzoo train -c configs/imagenet/ravlt_s.yaml --data-dir /data/imagenet
    accelerate launch --multi_gpu --num_processes 8 tools/train.py -c configs/imagenet/ravlt_s.yaml --data-dir ...
    vitzoo train --resume runs/<experiment>            # continues exactly where the run stopped

The flags (timm ``train.py`` names) are defined in :mod:`vitzoo.commands.train`; ``--batch-size`` is per
process (the global batch is ``batch_size * processes * grad_accum_steps``). When ``--lr`` is not given, it
is ``--lr-base`` scaled by ``global batch / --lr-base-size`` (linearly or by the square root,
``--lr-base-scale``), as in timm. The loop, checkpoints, resume and logs are the training core's
(:mod:`vitzoo.train.loop`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..data import DIGITS_DATASET, ImageFolderDataset, build_digits_imagefolder, check_image_folder
from ..data.folder import DatasetError
from .engine import Engine, StepResult
from .evaluation import CHECKPOINT_KIND, data_config_of, evaluate
from .loop import Trainer, TrainResult

__all__ = ["ClassificationEngine", "check_train_args", "train_classifier"]

_logger = logging.getLogger("vitzoo.train")


def check_train_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse resolved flags that cannot make a run (no model, no data, no batch)."""
    if not args.model:
        raise ValueError("no model: pass --model NAME or set 'model:' in the config")
    if not args.data_dir and args.dataset != DIGITS_DATASET:
        raise ValueError("no data: pass --data-dir DIR (an ImageFolder root) or --dataset vitzoo/digits")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    return args


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


class ClassificationEngine(Engine):
    """Image classification on an ImageFolder (train and validation splits)."""

    kind = CHECKPOINT_KIND
    step_key = "epoch"

    def default_experiment(self) -> str:
        return f"{self.args.model}-{self.data_config['input_size'][-1]}"

    def build(self, trainer: Trainer, state: Optional[dict[str, Any]]) -> None:
        from timm.data import Mixup, create_transform, resolve_data_config
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        args, accelerator = self.args, trainer.accelerator
        # data checks come first: a bad folder fails in seconds, before any model is built
        root = _data_root(args, accelerator)
        splits = check_image_folder(root, (args.train_split, args.val_split))
        train_dir, classes = splits[args.train_split]
        val_dir, _ = splits[args.val_split]
        self.classes = classes
        self.num_classes = args.num_classes or len(classes)
        if self.num_classes < len(classes):
            raise DatasetError(f"--num-classes {self.num_classes} is smaller than the {len(classes)} classes in "
                               f"{train_dir}")
        model = _create_model(args, self.num_classes, load_weights=state is None)
        self.data_config = resolve_data_config(vars(args), model=model)
        if args.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if args.sync_bn and accelerator.num_processes > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(accelerator.device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.trainable = model
        self.model = torch.compile(model, backend=args.torchcompile) if args.torchcompile else model

        config = self.data_config
        train_tf = create_transform(
            config["input_size"], is_training=True, no_aug=args.no_aug, scale=tuple(args.scale),
            ratio=tuple(args.ratio), hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
            auto_augment=args.aa, interpolation=args.train_interpolation, mean=config["mean"], std=config["std"],
            re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        )
        eval_tf = create_transform(
            config["input_size"], is_training=False, interpolation=config["interpolation"], mean=config["mean"],
            std=config["std"], crop_pct=config["crop_pct"], crop_mode=config.get("crop_mode"),
        )
        self.train_set = ImageFolderDataset(train_dir, transform=train_tf)
        self.collate_fn = self.train_set.collate
        self.val_set = ImageFolderDataset(val_dir, class_to_idx=self.train_set.class_to_idx, transform=eval_tf,
                                          substitute=False)
        self._unreadable: set[int] = set()  # training files found unreadable this epoch, each counted once
        if args.aug_repeats:
            from timm.data.distributed_sampler import RepeatAugSampler

            self.index_sampler = RepeatAugSampler(self.train_set, num_replicas=accelerator.num_processes,
                                                  rank=accelerator.process_index, shuffle=True,
                                                  num_repeats=int(args.aug_repeats))

        self.mixup = None
        if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
            if args.batch_size % 2:
                raise ValueError(f"mixup/cutmix pair images within a batch: --batch-size must be even, "
                                 f"got {args.batch_size}")
            self.mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                               prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                               label_smoothing=args.smoothing, num_classes=self.num_classes)
            self.criterion = SoftTargetCrossEntropy()
        elif args.smoothing:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
        else:
            self.criterion = torch.nn.CrossEntropyLoss()
        # with EMA on, its weights are evaluated, exported and decide 'best' (as in timm)
        self.decision_key = ("ema_" if args.model_ema else "") + args.eval_metric
        self.decision_mode = "min" if args.eval_metric == "loss" else "max"

    def configure_optimizer(self, trainer: Trainer) -> None:
        """Optimizer and schedule need the updates per epoch, known once the core has built the loader."""
        from timm.optim import create_optimizer_v2, optimizer_kwargs
        from timm.scheduler import create_scheduler_v2, scheduler_kwargs
        from torch.utils.data import DataLoader

        args = self.args
        global_batch = args.batch_size * trainer.accelerator.num_processes * args.grad_accum_steps
        self.lr = _resolve_lr(args, global_batch)
        self.optimizer = create_optimizer_v2(self.trainable, **dict(optimizer_kwargs(args), lr=self.lr))
        self.scheduler, self.num_epochs = create_scheduler_v2(self.optimizer, **scheduler_kwargs(args),
                                                              updates_per_epoch=trainer.updates_per_epoch)
        loader = DataLoader(self.val_set, batch_size=args.validation_batch_size or args.batch_size, shuffle=False,
                            num_workers=args.workers, pin_memory=args.pin_mem, collate_fn=self.val_set.collate,
                            generator=torch.Generator().manual_seed(args.seed))
        self.val_loader = trainer.accelerator.prepare(loader)
        _logger.info("model %s (%.2f M params), %d classes, %d train / %d val images, global batch %d, lr %.3g, "
                     "%d epochs of %d updates", args.model, sum(p.numel() for p in self.trainable.parameters()) / 1e6,
                     self.num_classes, len(self.train_set), len(self.val_set), global_batch, self.lr,
                     self.num_epochs, trainer.updates_per_epoch)

    def identity(self) -> dict[str, str]:
        return {"model": self.args.model, "num_classes": str(self.num_classes), "classes": json.dumps(self.classes)}

    def metadata(self) -> dict[str, str]:
        return {"model_kwargs": json.dumps(self.args.model_kwargs or {}),
                "data_config": json.dumps(data_config_of(self.data_config)),
                "weights": "ema" if self.args.model_ema else "model"}

    def start_epoch(self, epoch: int) -> None:
        self._unreadable = set()
        if self.mixup is not None and self.args.mixup_off_epoch and epoch >= self.args.mixup_off_epoch:
            self.mixup.mixup_enabled = False

    def step(self, model, batch) -> StepResult:
        images, targets, unreadable, _ = batch
        # a file read again (repeated augmentation, the next sample's substitute) is counted once per epoch
        new = set(unreadable) - self._unreadable
        self._unreadable |= new
        device = self.accelerator.device
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if self.args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        with self.accelerator.autocast():
            loss = self.criterion(model(images), targets)
        return StepResult(loss=loss, samples=images.shape[0], skipped=torch.tensor(float(len(new))))

    def evaluate(self, trainer: Trainer, epoch: int) -> dict[str, float]:
        channels_last = self.args.channels_last
        metrics = evaluate(trainer.model, self.val_loader, trainer.accelerator, channels_last=channels_last)
        row = {"val_loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"],
               "skipped": metrics["skipped"]}
        if trainer.ema is not None:
            ema = evaluate(trainer.ema.module, self.val_loader, trainer.accelerator, channels_last=channels_last)
            row.update(ema_val_loss=ema["loss"], ema_top1=ema["top1"], ema_top5=ema["top5"])
        return row

    def export_weights(self, trainer: Trainer) -> Optional[dict[str, torch.Tensor]]:
        # the safetensors file holds the weights the reported metrics come from (EMA when enabled)
        return trainer.ema.module.state_dict() if trainer.ema is not None else None


def train_classifier(args: argparse.Namespace, *, on_update: Optional[Callable[[int, torch.Tensor], None]] = None
                     ) -> TrainResult:
    """Train (or resume) a classifier from resolved flags (:func:`vitzoo.commands.train.parse_args`).

    Args:
        args: resolved flags.
        on_update: called after every optimizer update with (update number, this process's loss of the
            last micro-batch as a 0-d tensor); the tests use it to compare runs step by step.
    """
    return Trainer(ClassificationEngine(check_train_args(args)), on_update=on_update).fit()
