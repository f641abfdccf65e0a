"""COCO box and mask mAP through pycocotools' ``COCOeval``, for torchvision-style detector outputs.

:func:`coco_results` turns one image's output (``boxes`` xyxy, ``scores``, ``labels`` 1..K, optional ``masks``
[N, 1, H, W] probabilities) into COCO result entries (xywh boxes, the JSON's category ids, RLE masks from
``pycocotools.mask.encode`` of the masks thresholded at 0.5); :func:`coco_map` scores a list of them against a
COCO document (e.g. :meth:`vitzoo.data.coco.CocoDetection.ground_truth`). pycocotools prints its progress
to stdout; that chatter is captured and logged at debug level.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Sequence

import numpy as np

__all__ = ["coco_map", "coco_results"]

_logger = logging.getLogger("vitzoo.data")

# the first three of COCOeval.stats: AP@[.5:.95], AP@.5, AP@.75 (fractions in [0, 1])
_STATS = ("mAP", "mAP_50", "mAP_75")


def coco_results(image_id: int, output: dict[str, Any], category_ids: Sequence[int],
                 mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO result entries of one image; ``category_ids[label - 1]`` is label's category id."""
    boxes = output["boxes"].detach().cpu().double().numpy()
    scores = output["scores"].detach().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    rles = None
    if "masks" in output:
        from pycocotools import mask as mask_util

        binary = (output["masks"].detach().cpu()[:, 0] > mask_threshold).numpy().astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
    results = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        entry = {"image_id": int(image_id), "category_id": int(category_ids[int(label) - 1]),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)}
        if rles is not None:
            entry["segmentation"] = dict(rles[i], counts=rles[i]["counts"].decode("ascii"))
        results.append(entry)
    return results


def coco_map(ground_truth: dict[str, Any], results: list[dict[str, Any]],
             iou_types: Sequence[str] = ("bbox",)) -> dict[str, float]:
    """``{<type>_mAP, <type>_mAP_50, <type>_mAP_75}`` for each of ``iou_types`` (``bbox``, ``segm``).

    No results scores 0.0; so does a ground truth without any annotation (COCOeval's -1, "undefined").
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError("COCO mAP needs pycocotools: pip install 'vitzoo[detection]'") from err
    metrics = {f"{kind}_{stat}": 0.0 for kind in iou_types for stat in _STATS}
    if not results or not ground_truth.get("annotations"):
        return metrics
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        gt = COCO()
        gt.dataset = {key: ground_truth[key] for key in ("images", "annotations", "categories")}
        gt.createIndex()
        for kind in iou_types:
            entries = results if kind == "bbox" else [r for r in results if "segmentation" in r]
            if not entries:
                continue
            # loadRes takes areas from the boxes when a result has one: mask results go without it
            dropped = "segmentation" if kind == "bbox" else "bbox"
            detections = gt.loadRes([{k: v for k, v in r.items() if k != dropped} for r in entries])
            evaluator = COCOeval(gt, detections, kind)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            for stat, value in zip(_STATS, evaluator.stats[:3]):
                metrics[f"{kind}_{stat}"] = max(float(value), 0.0)
    _logger.debug("COCOeval:\n%s", chatter.getvalue())
    return metrics
