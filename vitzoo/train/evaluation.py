"""Evaluation of classifiers: top-1/top-5, loss and throughput on an ImageFolder split, for vitzoo training
checkpoints and for official checkpoints (through each family's converter), plus a small API to
classify image tensors with a trained model.

    vitzoo validate --checkpoint runs/demo/best.safetensors --dataset vitzoo/digits
    vitzoo validate --model ravlt_s --checkpoint RAVLT_S.pth --data-dir /data/imagenet --img-size 288

A vitzoo checkpoint (``<run>/best.safetensors``, ``last.safetensors`` or a ``.state.pt``) carries the
model name, its constructor arguments, the class names and the evaluation transform of the run, so
it needs no other flag. Any other file is an official or converted checkpoint of ``--model`` and is
loaded by ``timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=...))``, i.e.
through the family's ``checkpoint_filter_fn``; its transform comes from the model's pretrained cfg.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CHECKPOINT_KIND", "TrainedClassifier", "data_config_of", "evaluate",
           "load_classifier", "validate"]

CHECKPOINT_KIND = "vitzoo-classifier"
_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def data_config_of(config: dict[str, Any]) -> dict[str, Any]:
    """The evaluation-transform part of a timm data config, JSON-ready."""
    return {k: (list(config[k]) if isinstance(config[k], tuple) else config[k]) for k in _DATA_KEYS if k in config}


@torch.no_grad()
def evaluate(model: nn.Module, loader, accelerator, *, channels_last: bool = False) -> dict[str, float]:
    """Top-1/top-5 (percent), mean cross-entropy, images/s and skipped files over a loader prepared by
    ``accelerator`` (sharded across processes; ``gather_for_metrics`` drops the padding duplicates).

    Batches are ``(images, targets, unreadable, valid)`` from an evaluation
    :class:`~vitzoo.data.ImageFolderDataset` (``substitute=False``, ``collate_fn=dataset.collate``): an
    unreadable file is not replaced by another image, it is left out of the metrics and counted once in
    ``skipped`` (distinct files over all processes). The throughput covers the whole loop, data loading included.
    """
    from accelerate.utils import gather_object

    model.eval()
    correct1 = correct5 = 0
    loss_sum, count = 0.0, 0
    unreadable: set[int] = set()
    started = time.perf_counter()
    for images, targets, batch_unreadable, valid in loader:
        images = images.to(accelerator.device)
        targets = targets.to(accelerator.device)
        valid = valid.to(accelerator.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(images)
        logits = logits.float()
        losses = F.cross_entropy(logits, targets, reduction="none")
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit1 = topk[:, 0] == targets
        hit5 = (topk == targets[:, None]).any(dim=1)
        hit1, hit5, losses, valid = accelerator.gather_for_metrics((hit1, hit5, losses, valid))
        correct1 += int(hit1[valid].sum())
        correct5 += int(hit5[valid].sum())
        loss_sum += float(losses[valid].double().sum())
        count += int(valid.sum())
        unreadable.update(batch_unreadable)
    if accelerator.num_processes > 1:
        unreadable = set().union(*gather_object([unreadable]))
    skipped = len(unreadable)
    seconds = time.perf_counter() - started
    if count == 0:
        raise ValueError(f"the evaluation loader produced no readable images ({skipped} unreadable)")
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count,
            "images": count, "seconds": seconds, "images_per_second": count / max(seconds, 1e-9), "skipped": skipped}


def _read_vitzoo_checkpoint(path: Path, use_ema: Optional[bool]) -> Optional[tuple[dict[str, str], dict]]:
    """(metadata, weights) of a vitzoo training checkpoint, or None when ``path`` is another kind of file.
    Weights files go through the package's one checkpoint reader (:mod:`vitzoo.models._checkpoint`), training
    states through the core's :meth:`~vitzoo.train.checkpoint.Checkpointer.load`."""
    if path.suffix == ".safetensors":
        from ..models._checkpoint import read_checkpoint, read_checkpoint_metadata

        metadata = read_checkpoint_metadata(path)
        if metadata.get("kind") != CHECKPOINT_KIND:
            return None
        if use_ema is not None and use_ema != (metadata.get("weights") == "ema"):
            raise ValueError(f"{path} holds the {metadata.get('weights')} weights; use the run's .state.pt to choose")
        return metadata, read_checkpoint(path)
    if path.name.endswith(".state.pt"):
        from .checkpoint import Checkpointer

        state = Checkpointer.load(path)
        metadata = dict(state.get("metadata") or {})
        if metadata.get("kind") != CHECKPOINT_KIND:
            return None
        if use_ema is None:
            use_ema = metadata.get("weights") == "ema"
        if use_ema and state.get("ema") is None:
            raise ValueError(f"{path} has no EMA weights (the run did not use --model-ema)")
        metadata["weights"] = "ema" if use_ema else "model"
        return metadata, state["ema"] if use_ema else state["model"]
    return None


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no best.safetensors or last.safetensors in {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


@dataclasses.dataclass
class TrainedClassifier:
    """A classifier restored from a vitzoo training checkpoint, ready to label image tensors.

    Attributes:
        model: the network in eval mode.
        model_name: registered name it was built from.
        classes: class names, index order.
        data_config: the evaluation transform of the run (input size, mean, std, ...).
        metadata: everything stored with the checkpoint.
    """

    model: nn.Module
    model_name: str
    classes: list[str]
    data_config: dict[str, Any]
    metadata: dict[str, str]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 1 or 3, H, W] with values in [0, 1] -> normalised model input [B, 3, h, w].

        Grey images are repeated to RGB; other sizes are resized (bilinear, antialiased) to the
        run's input size, which matches the evaluation transform for square inputs.
        """
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images [B, 1 or 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = tuple(self.data_config["input_size"][-2:])
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.data_config["mean"], device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.data_config["std"], device=self.device).view(1, -1, 1, 1)
        return (images - mean) / std

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] for images [B, 1 or 3, H, W] in [0, 1]."""
        return self.model(self.preprocess(images)).float()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class indices [B] for images [B, 1 or 3, H, W] in [0, 1]."""
        return self.logits(images).argmax(dim=1)


def load_classifier(checkpoint: str | Path, *, device: str | torch.device = "cpu",
                    use_ema: Optional[bool] = None) -> TrainedClassifier:
    """Rebuild the model of a vitzoo training checkpoint (run directory, ``.safetensors`` or ``.state.pt``).

    Example (the digits classifier of ``make demo``)::

        classifier = load_classifier("runs/demo")
        labels = classifier.predict(images)          # images [B, 1 or 3, 32, 32] in [0, 1]
    """
    import timm

    from ..models._checkpoint import load_state_dict_checked

    path = _checkpoint_file(Path(checkpoint))
    found = _read_vitzoo_checkpoint(path, use_ema)
    if found is None:
        raise ValueError(f"{path} is not a vitzoo training checkpoint; official checkpoints load with "
                         f"timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))")
    metadata, weights = found
    classes = json.loads(metadata["classes"])
    model = timm.create_model(metadata["model"], num_classes=int(metadata["num_classes"]),
                              **json.loads(metadata.get("model_kwargs", "{}")))
    load_state_dict_checked(model, weights, source=str(path))
    model.to(device).eval()
    return TrainedClassifier(model=model, model_name=metadata["model"], classes=classes,
                             data_config=json.loads(metadata["data_config"]), metadata=metadata)


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate a checkpoint on an ImageFolder split; returns the results dict (also in JSON form)."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from torch.utils.data import DataLoader

    from ..data import DIGITS_DATASET, ImageFolderDataset, build_digits_imagefolder, check_image_folder
    from ..data.folder import DatasetError
    from ..models import optimize
    from ..models._checkpoint import load_state_dict_checked
    from .runtime import make_accelerator

    accelerator = make_accelerator(device=args.device, amp=args.amp, amp_dtype=args.amp_dtype)
    if args.dataset == DIGITS_DATASET:
        with accelerator.main_process_first():
            root = build_digits_imagefolder(args.data_dir or None)
    elif args.data_dir:
        root = Path(args.data_dir)
    else:
        raise ValueError("no data: pass --data-dir DIR (an ImageFolder root) or --dataset vitzoo/digits")
    folder, folder_classes = check_image_folder(root, (args.split,))[args.split]

    overrides = {k: getattr(args, k)
                 for k in ("img_size", "input_size", "crop_pct", "crop_mode", "mean", "std", "interpolation")}
    found = None
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None:
        checkpoint = _checkpoint_file(checkpoint)
        found = _read_vitzoo_checkpoint(checkpoint, args.use_ema)
    if found is not None:
        metadata, weights = found
        if args.model and args.model != metadata["model"]:
            raise ValueError(f"{checkpoint} holds a {metadata['model']} model, not {args.model}")
        model_name = metadata["model"]
        model = timm.create_model(model_name, num_classes=int(metadata["num_classes"]),
                                  **json.loads(metadata.get("model_kwargs", "{}")))
        load_state_dict_checked(model, weights, source=str(checkpoint))
        classes = json.loads(metadata["classes"])
        data_config = resolve_data_config(overrides, pretrained_cfg=json.loads(metadata["data_config"]))
        weights_kind = metadata.get("weights", "model")
    else:
        if not args.model:
            raise ValueError("pass --model NAME: the checkpoint is not a vitzoo training checkpoint, so the "
                             "architecture must be named" if checkpoint else "pass --checkpoint and/or --model")
        from ..models import check_model_name

        if not timm.is_model(args.model):
            check_model_name(args.model)
        kwargs = dict(args.model_kwargs or {})
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        if checkpoint is not None:
            # the cfg's class count is the checkpoint's: its classifier is evaluated, never dropped
            overlay = dict(file=str(checkpoint))
            if args.num_classes is not None:
                overlay["num_classes"] = args.num_classes
            kwargs["pretrained_cfg_overlay"] = overlay
        model_name = args.model
        model = timm.create_model(model_name, pretrained=checkpoint is not None or args.pretrained, **kwargs)
        classes = folder_classes
        data_config = resolve_data_config(overrides, model=model)
        weights_kind = "official" if checkpoint is not None else ("pretrained" if args.pretrained else "random")

    unknown = sorted(set(folder_classes) - set(classes))
    if unknown:
        raise DatasetError(f"{folder} has classes the checkpoint was not trained on: {unknown[:5]}")
    if len(classes) > model.num_classes:
        raise DatasetError(f"{folder} has {len(classes)} classes but the model predicts {model.num_classes}")
    transform = create_transform(data_config["input_size"], is_training=False,
                                 interpolation=data_config["interpolation"], mean=data_config["mean"],
                                 std=data_config["std"], crop_pct=data_config["crop_pct"],
                                 crop_mode=data_config.get("crop_mode"))
    dataset = ImageFolderDataset(folder, class_to_idx={name: i for i, name in enumerate(classes)},
                                 transform=transform, substitute=False)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        collate_fn=dataset.collate, generator=torch.Generator().manual_seed(0))
    param_count = sum(p.numel() for p in model.parameters())
    fused, compiled = getattr(args, "fuse", False), getattr(args, "compile", False)
    model = optimize(model.to(accelerator.device), fuse=fused, channels_last=args.channels_last, compile=compiled,
                     inplace=True)
    model, loader = accelerator.prepare(model, loader)
    metrics = evaluate(model, loader, accelerator, channels_last=args.channels_last)
    result = {
        "model": model_name,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "weights": weights_kind,
        "data": str(folder),
        "top1": round(metrics["top1"], 4),
        "top5": round(metrics["top5"], 4),
        "loss": round(metrics["loss"], 6),
        "images": metrics["images"],
        "skipped": metrics["skipped"],
        "input_size": list(data_config["input_size"]),
        "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
        "param_count_m": round(param_count / 1e6, 4),
        "fused": fused,
        "compiled": compiled,
        "images_per_second": round(metrics["images_per_second"], 2),
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
    }
    if args.results_file and accelerator.is_main_process:
        path = Path(args.results_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result
