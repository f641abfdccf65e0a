"""The detection engine: torchvision Mask R-CNN / Faster R-CNN / RetinaNet / FCOS on a vitzoo backbone
(:func:`vitzoo.detection.build_detector`), trained on COCO-format data, scored by COCO box (and mask) mAP.

    vitzoo train_det --dataset vitzoo/shapes                  # the embedded shapes set, a small CPU recipe
    vitzoo train_det --data-dir /data/coco --train-split train2017 --val-split val2017 --backbone ravlt_s \\
        --pretrained-backbone RAVLT-S.pth --min-size 800 --max-size 1333 --epochs 12
    vitzoo eval_det --checkpoint runs/<experiment>            # box / mask mAP JSON + a PNG of predictions

A COCO root holds ``annotations/instances_<split>.json`` and the images under ``<split>/``. Training images are
flipped at random from each sample's seed (:class:`vitzoo.data.CocoDetection`), so the data order and the
augmentation repeat exactly on ``--resume``. After every epoch the validation split is scored with pycocotools'
COCOeval (:mod:`vitzoo.data.coco_eval`); ``best`` is chosen by box mAP. The end of a run writes
``<run>/predictions.png``: ground truth above, predictions over ``--score-thresh`` below, for a few validation
images. The flags are defined in :mod:`vitzoo.commands.train_det` and :mod:`vitzoo.commands.eval_det`; the loop,
EMA, atomic checkpoints (the weights' ``.safetensors`` included) and exact resume are the training core's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..data import SHAPES_DATASET, CocoDetection, DatasetError, build_shapes_coco, detection_collate
from ..data.coco_eval import coco_map, coco_results
from .._atomic import atomic_write
from .engine import Engine, StepResult, per_update_optimizer
from .loop import Trainer, TrainResult

__all__ = ["CHECKPOINT_KIND", "DetectionEngine", "check_detection_args", "create_detector", "detector_config",
           "draw_predictions", "evaluate_detector", "evaluate_run", "load_split", "train_detector"]

_logger = logging.getLogger("vitzoo.train")

CHECKPOINT_KIND = "vitzoo-detector"
_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
            "#469990"]


def check_detection_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse resolved flags that cannot make a run or an evaluation."""
    if not args.data_dir and args.dataset != SHAPES_DATASET:
        raise ValueError(f"no data: pass --data-dir DIR (a COCO root with annotations/instances_<split>.json and "
                         f"<split>/ images) or --dataset {SHAPES_DATASET}")
    if args.min_size > args.max_size:
        raise ValueError(f"--min-size {args.min_size} is larger than --max-size {args.max_size}")
    return args


def load_split(args: argparse.Namespace, split: str, *, masks: bool, flip: bool = False,
               accelerator=None) -> CocoDetection:
    """``split`` of the COCO root of ``args`` (building ``vitzoo/shapes`` first when it is the dataset)."""
    root = Path(args.data_dir) if args.data_dir else None
    if args.dataset == SHAPES_DATASET:
        if accelerator is not None:
            # one process writes the folder, the others wait and then read it
            with accelerator.main_process_first():
                root = build_shapes_coco(root)
        else:
            root = build_shapes_coco(root)
    return CocoDetection(root / split, root / "annotations" / f"instances_{split}.json", masks=masks, flip=flip)


def detector_config(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The :func:`~vitzoo.detection.build_detector` arguments of ``args`` (stored in checkpoints as JSON)."""
    config = dict(kind=args.detector, backbone=args.backbone, num_classes=num_classes,
                  backbone_kwargs=dict(args.backbone_kwargs or {}), frozen_stages=args.frozen_stages,
                  norm_eval=bool(args.norm_eval), fpn_channels=args.fpn_channels, min_size=args.min_size,
                  max_size=args.max_size)
    if args.detector in ("maskrcnn", "fasterrcnn"):
        pre, post = args.proposals
        config.update(box_head_dim=args.box_head_dim, box_detections_per_img=args.detections_per_img,
                      rpn_pre_nms_top_n_train=pre, rpn_pre_nms_top_n_test=pre, rpn_post_nms_top_n_train=post,
                      rpn_post_nms_top_n_test=post, box_batch_size_per_image=args.box_samples)
        if args.detector == "maskrcnn":
            config["mask_head_channels"] = list(args.mask_head_channels)
    else:
        config["detections_per_img"] = args.detections_per_img
    config.update(args.detector_kwargs or {})
    return config


def create_detector(config: dict[str, Any], *, seed: int, pretrained_backbone: Optional[str] = None) -> nn.Module:
    """The detector of ``config``, initialised from ``seed`` alone (the global generator is left as it was), so
    ``vitzoo eval_det --untrained`` scores exactly the weights a ``train_det`` run of that seed starts from."""
    from ..detection import build_detector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return build_detector(**config, pretrained_backbone=pretrained_backbone or None)
        except TypeError as err:
            # a --detector-kwargs key torchvision's class does not take
            raise ValueError(f"{config['kind']}: {err}") from err


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


@torch.no_grad()
def evaluate_detector(model: nn.Module, loader, dataset: CocoDetection, accelerator, *,
                      desc: str = "eval") -> dict[str, float]:
    """COCO ``bbox_mAP`` / ``_50`` / ``_75`` (and ``segm_*`` for masks) of ``model`` over ``loader`` (prepared by
    ``accelerator``: shards are gathered and the padding duplicates dropped by image id), as fractions."""
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    model.eval()
    started = time.perf_counter()
    per_image: list[tuple[int, list]] = []
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
        outputs = model([image.to(accelerator.device) for image in images])
        per_image += [(t["image_id"], coco_results(t["image_id"], o, dataset.category_ids))
                      for t, o in zip(targets, outputs)]
    if accelerator.num_processes > 1:
        per_image = gather_object(per_image)
    results = [entry for entries in dict(reversed(per_image)).values() for entry in entries]
    has_masks = any("segmentation" in r for r in results) or dataset.masks
    metrics = coco_map(dataset.ground_truth(), results, ("bbox", "segm") if has_masks else ("bbox",))
    metrics.update(detections=float(len(results)), eval_seconds=time.perf_counter() - started)
    return metrics


def _draw(image: torch.Tensor, boxes: torch.Tensor, labels: list[str], colors: list[str],
          masks: Optional[torch.Tensor]) -> torch.Tensor:
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    if not len(boxes):
        return image
    if masks is not None:
        image = draw_segmentation_masks(image, masks.bool(), alpha=0.45, colors=colors)
    return draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=2)


@torch.no_grad()
def draw_predictions(model: nn.Module, dataset: CocoDetection, path: Path, *, count: int = 8,
                     score_thresh: float = 0.5, device: torch.device = torch.device("cpu")) -> Path:
    """A PNG of the first ``count`` images of ``dataset``: ground truth (top row) and the predictions scoring at
    least ``score_thresh`` (bottom row), boxes labelled with class names (and scores), masks tinted; images
    smaller than 256 px are enlarged (nearest neighbour) so the labels stay legible."""
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.utils import make_grid

    model.eval()
    top, bottom = [], []
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        output = model([image.to(device)])[0]
        scale = max(1, 256 // max(image.shape[1:]))
        canvas = F.interpolate(image[None], scale_factor=scale, mode="nearest")[0].mul(255).round().to(torch.uint8)

        def grow(masks):
            return None if masks is None else F.interpolate(masks[:, None].float(), scale_factor=scale)[:, 0] > 0.5

        names = [dataset.class_names[int(label) - 1] for label in target["labels"]]
        top.append(_draw(canvas, target["boxes"] * scale, names,
                         [_PALETTE[(int(l) - 1) % len(_PALETTE)] for l in target["labels"]], grow(target.get("masks"))))
        keep = output["scores"].cpu() >= score_thresh
        labels = output["labels"].cpu()[keep]
        scores = output["scores"].cpu()[keep]
        names = [f"{dataset.class_names[int(l) - 1]} {float(s):.2f}" for l, s in zip(labels, scores)]
        masks = output["masks"].cpu()[keep][:, 0] if "masks" in output else None
        bottom.append(_draw(canvas, output["boxes"].cpu()[keep] * scale, names,
                            [_PALETTE[(int(l) - 1) % len(_PALETTE)] for l in labels], grow(masks)))
    height = max(t.shape[1] for t in top)
    width = max(t.shape[2] for t in top)
    tiles = [F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1]), value=255) for t in top + bottom]
    grid = make_grid(tiles, nrow=len(top), padding=4, pad_value=255).permute(1, 2, 0).numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))


class DetectionEngine(Engine):
    """A torchvision detector on COCO-format data (train and validation splits), scored per epoch."""

    kind = CHECKPOINT_KIND
    step_key = "epoch"
    decision_key = "bbox_mAP"

    def default_experiment(self) -> str:
        return f"{self.args.detector}-{self.args.backbone}"

    def build(self, trainer: Trainer, state: Optional[dict[str, Any]]) -> None:
        args, accelerator = self.args, trainer.accelerator
        masks = args.detector == "maskrcnn"
        # data checks come first: a bad annotation file fails in seconds, before any model is built
        self.train_set = load_split(args, args.train_split, masks=masks, flip=not args.no_flip,
                                    accelerator=accelerator)
        self.val_set = load_split(args, args.val_split, masks=masks, accelerator=accelerator)
        if self.val_set.categories != self.train_set.categories:
            raise DatasetError(f"the categories of {self.val_set.annotation_file} differ from those of "
                               f"{self.train_set.annotation_file}")
        self.config = detector_config(args, len(self.train_set.category_ids) + 1)
        # a resume loads the checkpoint's weights over these, and the backbone file may be gone by then
        model = create_detector(self.config, seed=args.seed,
                                pretrained_backbone=args.pretrained_backbone if state is None else None)
        self.model = model.to(accelerator.device)
        self.collate_fn = detection_collate
        if args.model_ema:
            self.decision_key = "ema_bbox_mAP"

    def configure_optimizer(self, trainer: Trainer) -> None:
        """Optimizer (timm) and a per-update schedule over the whole run, once the epoch length is known."""
        from torch.utils.data import DataLoader

        args = self.args
        self.optimizer, self.scheduler, self.num_epochs = per_update_optimizer(self.model, args,
                                                                               trainer.updates_per_epoch)
        loader = DataLoader(self.val_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                            collate_fn=detection_collate)
        self.val_loader = trainer.accelerator.prepare(loader)
        _logger.info("%s on %s (%.2f M params), %d classes, %d train / %d val images, lr %.3g, %d epochs of %d updates",
                     args.detector, args.backbone, sum(p.numel() for p in self.model.parameters()) / 1e6,
                     len(self.train_set.category_ids), len(self.train_set), len(self.val_set), args.lr,
                     self.num_epochs, trainer.updates_per_epoch)

    def identity(self) -> dict[str, str]:
        return {"detector_config": json.dumps(self.config, sort_keys=True),
                "categories": json.dumps(self.train_set.categories, sort_keys=True)}

    def metadata(self) -> dict[str, str]:
        return {"weights": "ema" if self.args.model_ema else "model"}

    def step(self, model, batch) -> StepResult:
        images, targets = batch
        device = self.accelerator.device
        with self.accelerator.autocast():
            losses = model([image.to(device) for image in images], _to_device(targets, device))
        loss = sum(losses.values())
        return StepResult(loss=loss, samples=len(images), terms={k: v.detach() for k, v in losses.items()})

    def _scored(self, trainer: Trainer) -> nn.Module:
        return trainer.ema.module if trainer.ema is not None else trainer.model

    def evaluate(self, trainer: Trainer, epoch: int) -> dict[str, float]:
        metrics = evaluate_detector(self._scored(trainer), self.val_loader, self.val_set, trainer.accelerator,
                                    desc=f"eval {epoch + 1}")
        prefix = "ema_" if trainer.ema is not None else ""
        return {f"{prefix}{k}": v for k, v in metrics.items()}

    def export_weights(self, trainer: Trainer) -> Optional[dict[str, torch.Tensor]]:
        return trainer.ema.module.state_dict() if trainer.ema is not None else None

    def finish(self, trainer: Trainer) -> Optional[Path]:
        """``<run>/predictions.png`` from the weights the run exported (none with ``--preview-images 0``)."""
        if not self.args.preview_images:
            return None
        path = draw_predictions(self._scored(trainer), self.val_set, trainer.run_dir / "predictions.png",
                                count=self.args.preview_images, score_thresh=self.args.score_thresh,
                                device=trainer.accelerator.device)
        _logger.info("wrote %s", path)
        return path


def _load_run(checkpoint: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, weights) of a ``train_det`` run folder (``best``, else ``last``), ``.safetensors`` or
    ``.state.pt``; the ``.safetensors`` file holds the weights the run reported (the EMA's with ``--model-ema``)."""
    from ..models._checkpoint import read_checkpoint, read_checkpoint_metadata
    from .checkpoint import Checkpointer

    if checkpoint.is_dir():
        found = [checkpoint / f"{tag}.safetensors" for tag in ("best", "last")
                 if (checkpoint / f"{tag}.safetensors").is_file()]
        if not found:
            raise FileNotFoundError(f"no best.safetensors or last.safetensors in {checkpoint}")
        checkpoint = found[0]
    if checkpoint.name.endswith(".state.pt"):
        state = Checkpointer.load(checkpoint)
        metadata = dict(state.get("metadata") or {})
        weights = state["ema"] if metadata.get("weights") == "ema" and state.get("ema") is not None else state["model"]
    else:
        metadata, weights = read_checkpoint_metadata(checkpoint), read_checkpoint(checkpoint)
    if metadata.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not a `vitzoo train_det` checkpoint (kind {metadata.get('kind')!r}, "
                         f"expected {CHECKPOINT_KIND!r})")
    return metadata, weights


def evaluate_run(args: argparse.Namespace) -> dict[str, Any]:
    """``vitzoo eval_det``: COCO mAP of a ``train_det`` checkpoint (or, with ``untrained``, of the detector the
    flags and ``--seed`` describe, before any training) on ``--split``; writes ``metrics.json`` and
    ``predictions.png`` under ``--output`` and returns the metrics."""
    from .runtime import make_accelerator

    check_detection_args(args)
    accelerator = make_accelerator(device=args.device, seed=args.seed)
    if args.untrained:
        metadata, weights, source = {}, None, f"untrained (seed {args.seed})"
    else:
        metadata, weights = _load_run(Path(args.checkpoint))
        source = str(args.checkpoint)
    config = json.loads(metadata["detector_config"]) if metadata else None
    masks = (config["kind"] if config else args.detector) == "maskrcnn"
    dataset = load_split(args, args.split, masks=masks, accelerator=accelerator)
    if metadata and json.loads(metadata["categories"]) != json.loads(json.dumps(dataset.categories, sort_keys=True)):
        raise DatasetError(f"the categories of {dataset.annotation_file} differ from those {source} was trained on "
                           f"({metadata['categories']})")
    if config is None:
        config = detector_config(args, len(dataset.category_ids) + 1)
    model = create_detector(config, seed=args.seed)
    if weights is not None:
        from ..models._checkpoint import load_state_dict_checked

        load_state_dict_checked(model, weights, source=source)
    model = model.to(accelerator.device)
    from torch.utils.data import DataLoader

    loader = accelerator.prepare(DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                            num_workers=args.workers, collate_fn=detection_collate))
    metrics = evaluate_detector(model, loader, dataset, accelerator, desc=f"eval {args.split}")
    result = {"checkpoint": source, "split": args.split, "images": len(dataset), **metrics,
              "detector": config["kind"], "backbone": config["backbone"]}
    output = Path(args.output)
    if accelerator.is_main_process:
        atomic_write(output / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
        if args.preview_images:
            result["predictions"] = str(draw_predictions(model, dataset, output / "predictions.png",
                                                         count=args.preview_images, score_thresh=args.score_thresh,
                                                         device=accelerator.device))
    return result


def train_detector(args: argparse.Namespace, *, on_update=None) -> TrainResult:
    """Train (or resume) a detector from resolved flags (:func:`vitzoo.commands.train_det.parse_args`)."""
    return Trainer(DetectionEngine(check_detection_args(args)), on_update=on_update).fit()
