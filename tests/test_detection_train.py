"""Detection training: the embedded ``vitzoo/shapes`` generator, the COCO reader's bad-input rules, COCO mAP on
hand-made cases, and ``vitzoo train_det`` / ``vitzoo eval_det`` end to end on a tiny generated set."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from pycocotools import mask as mask_util  # noqa: E402

from vitzoo.cli import main  # noqa: E402
from vitzoo.data import CocoDetection, DatasetError, build_shapes_coco  # noqa: E402
from vitzoo.data.coco_eval import coco_map, coco_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(train_images=8, val_images=4, image_size=64, object_sizes=(12, 24))
# the reduced RAVLT (tests/test_detection.py) with small heads: two updates take a few seconds
TINY_DETECTOR = ["--backbone-kwargs", "embed_dims=(16,32,48,64)", "depths=(1,1,1,1)", "num_heads=(1,2,3,4)",
                 "--fpn-channels", "32", "--box-head-dim", "32", "--mask-head-channels", "16", "--min-size", "64",
                 "--max-size", "64", "--proposals", "100", "50", "--box-samples", "32", "--device", "cpu", "-j", "0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return build_shapes_coco(tmp_path_factory.mktemp("data") / "shapes", **TINY)


def _document(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


# ------------------------------------------------------------------ the embedded generator


def test_the_generator_is_deterministic_and_reused(shapes, tmp_path):
    again = build_shapes_coco(tmp_path / "again", **TINY)
    for split in ("train", "val"):
        assert _document(shapes, split) == _document(again, split)
        for name in sorted(p.name for p in (shapes / split).iterdir()):
            assert (shapes / split / name).read_bytes() == (again / split / name).read_bytes()
    stamp = (again / "train" / "000000.png").stat().st_mtime_ns
    assert build_shapes_coco(again, **TINY) == again
    assert (again / "train" / "000000.png").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="other settings"):
        build_shapes_coco(again, **dict(TINY, seed=1))
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="not a vitzoo/shapes folder"):
        build_shapes_coco(tmp_path / "other", **TINY)


def test_annotations_are_exact_masks_with_their_boxes_and_areas(shapes):
    train, val = _document(shapes, "train"), _document(shapes, "val")
    assert "china.jpg" in train["info"]["description"] and "grace_hopper.jpg" in val["info"]["description"]
    assert "grace_hopper" not in train["info"]["description"]
    for document, split in ((train, "train"), (val, "val")):
        assert [c["name"] for c in document["categories"]] == ["disk", "square", "triangle"]
        sizes = {image["id"]: (image["height"], image["width"]) for image in document["images"]}
        assert len(sizes) == TINY[f"{split}_images"] and document["annotations"]
        for annotation in document["annotations"]:
            height, width = sizes[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
            assert annotation["iscrowd"] == 0
            mask = mask_util.decode(dict(annotation["segmentation"],
                                         counts=annotation["segmentation"]["counts"].encode()))
            assert mask.shape == (height, width) and int(mask.sum()) == annotation["area"]
            rows, cols = np.nonzero(mask)
            assert [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1] == [x, y, w, h]


# ------------------------------------------------------------------ the reader's bad-input rules


def _write_coco(root: Path, annotations: list[dict]) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53), dtype=np.uint8), mode="L").save(images / "grey.png")
    Image.fromarray(rng.integers(0, 255, (30, 40, 4), dtype=np.uint8), mode="RGBA").save(images / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (20, 90, 3), dtype=np.uint8)).convert("P").save(images / "palette.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / "empty.png")
    document = {
        "images": [{"id": 1, "file_name": "grey.png", "width": 53, "height": 37},
                   {"id": 2, "file_name": "rgba.png", "width": 40, "height": 30},
                   {"id": 3, "file_name": "palette.png"},  # no size: read from the file
                   {"id": 4, "file_name": "empty.png", "width": 16, "height": 16}],
        "annotations": annotations,
        "categories": [{"id": 9, "name": "b"}, {"id": 5, "name": "a"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(document))
    return images, path


BAD_BOXES = [
    {"id": 1, "image_id": 1, "category_id": 5, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
     "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
    {"id": 2, "image_id": 1, "category_id": 9, "bbox": [45, 30, 20, 20], "area": 400, "iscrowd": 0},  # clipped
    {"id": 3, "image_id": 2, "category_id": 9, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},  # degenerate
    {"id": 4, "image_id": 2, "category_id": 5, "bbox": [100, 100, 5, 5], "area": 25, "iscrowd": 0},  # outside
    {"id": 5, "image_id": 3, "category_id": 9, "bbox": [10, 2, 30, 12], "area": 360, "iscrowd": 0},
]


def test_any_image_mode_and_size_is_read_as_rgb_and_bad_boxes_are_counted_once(tmp_path, caplog):
    images, path = _write_coco(tmp_path, BAD_BOXES)
    with caplog.at_level(logging.WARNING, logger="vitzoo.data"):
        dataset = CocoDetection(images, path)
    assert dataset.counts == {"clipped": 1, "dropped": 2, "crowd": 0, "without_mask": 2}
    assert len([r for r in caplog.records if str(path) in r.getMessage()]) == 1
    assert "1 clipped box, 2 dropped boxes" in caplog.text
    shapes = [(3, 37, 53), (3, 30, 40), (3, 20, 90), (3, 16, 16)]
    for index, shape in enumerate(shapes):
        image, target = dataset[index]
        assert image.shape == shape and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert target["masks"].shape[1:] == shape[1:] and target["image_id"] == index + 1
    _, grey = dataset[0]
    assert grey["labels"].tolist() == [1, 2]  # category 5 -> 1, 9 -> 2 (sorted ids)
    assert grey["boxes"].tolist() == [[2, 3, 12, 11], [45, 30, 53, 37]]
    assert int(grey["masks"][1].sum()) == 8 * 7  # no segmentation: the clipped box
    _, rgba = dataset[1]
    assert rgba["boxes"].shape == (0, 4) and rgba["masks"].shape == (0, 30, 40)
    _, empty = dataset[3]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert len(dataset.ground_truth()["annotations"]) == 3


def test_a_flip_moves_boxes_and_masks_together_and_depends_on_the_seed_only(tmp_path):
    images, path = _write_coco(tmp_path, BAD_BOXES[:1])
    dataset = CocoDetection(images, path, flip=True)
    plain, target = CocoDetection(images, path)[0]
    flips = {}
    for seed in range(8):
        image, flipped = dataset[(0, seed)]
        again, _ = dataset[(0, seed)]
        assert torch.equal(image, again)
        flips[seed] = not torch.equal(image, plain)
        if flips[seed]:
            assert torch.equal(image, plain.flip(-1)) and torch.equal(flipped["masks"], target["masks"].flip(-1))
            assert flipped["boxes"].tolist() == [[53 - 12, 3, 53 - 2, 11]]
        rows, cols = torch.nonzero(flipped["masks"][0], as_tuple=True)
        assert flipped["boxes"][0].tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert 0 < sum(flips.values()) < 8


def test_unknown_categories_and_malformed_files_name_the_file_and_the_id(tmp_path):
    unknown = {"id": 77, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2]}
    images, path = _write_coco(tmp_path, BAD_BOXES + [unknown])
    with pytest.raises(DatasetError, match=rf"{path}: annotation 77 has category_id 3, .* \[5, 9\]"):
        CocoDetection(images, path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="missing \\['annotations', 'categories'\\]"):
        CocoDetection(images, path)
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDetection(images, tmp_path / "missing.json")


# ------------------------------------------------------------------ COCO mAP on hand-made cases


def test_coco_map_is_one_for_the_ground_truth_and_zero_without_predictions(shapes):
    dataset = CocoDetection(shapes / "val", shapes / "annotations" / "instances_val.json")
    perfect, wrong_class = [], []
    for index in range(len(dataset)):
        _, target = dataset[index]
        output = dict(boxes=target["boxes"], scores=torch.ones(len(target["boxes"])), labels=target["labels"],
                      masks=target["masks"][:, None].float())
        perfect += coco_results(target["image_id"], output, dataset.category_ids)
        wrong_class += coco_results(target["image_id"], dict(output, labels=target["labels"] % 3 + 1),
                                    dataset.category_ids)
    metrics = coco_map(dataset.ground_truth(), perfect, ("bbox", "segm"))
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["segm_mAP"] == pytest.approx(1.0)
    assert set(coco_map(dataset.ground_truth(), [], ("bbox", "segm")).values()) == {0.0}
    assert coco_map(dataset.ground_truth(), wrong_class)["bbox_mAP"] == 0.0


# ------------------------------------------------------------------ the commands


def test_train_det_then_eval_det_write_metrics_and_predictions(shapes, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train_det", "--data-dir", str(shapes), *TINY_DETECTOR, "-b", "4", "--epochs", "1", "--output",
                 str(runs), "--experiment", "r", "--preview-images", "2", "--score-thresh", "0"]) == 0
    assert "trained 2 updates" in capsys.readouterr().out
    rows = [json.loads(line) for line in (runs / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"bbox_mAP", "segm_mAP", "train_loss"} <= set(rows[-1])
    assert Image.open(runs / "r" / "predictions.png").size[0] > 256
    assert main(["eval_det", "--checkpoint", str(runs / "r"), "--data-dir", str(shapes), "--device", "cpu",
                 "-j", "0", "--preview-images", "2"]) == 0
    result = json.loads((runs / "r" / "eval_val" / "metrics.json").read_text())
    assert result["images"] == 4 and result["bbox_mAP"] == pytest.approx(rows[-1]["bbox_mAP"])
    assert (runs / "r" / "eval_val" / "predictions.png").is_file()
    assert main(["eval_det", "--untrained", "--data-dir", str(shapes), *TINY_DETECTOR, "--output",
                 str(tmp_path / "untrained"), "--preview-images", "0"]) == 0
    assert 0 <= json.loads((tmp_path / "untrained" / "metrics.json").read_text())["bbox_mAP"] <= 1


def _one_line(capsys, argv: list[str], *expected: str) -> None:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    # the run's INFO log lines go to stderr too; the error is one line and has no traceback
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]


def test_bad_flags_are_one_line_errors(shapes, tmp_path, capsys):
    _one_line(capsys, ["train_det", "--epochs", "1"], "vitzoo train_det: error: no data", "--dataset vitzoo/shapes")
    _one_line(capsys, ["train_det", "--data-dir", str(shapes), "--backbone", "vzvit_tiny", "--device", "cpu",
                       "--output", str(tmp_path)], "has no multi-scale features_only", "ravlt_*")
    _one_line(capsys, ["train_det", "--data-dir", str(tmp_path), "--device", "cpu", "--output", str(tmp_path)],
              "instances_train.json does not exist")
    _one_line(capsys, ["train_det", "--data-dir", str(shapes), "--min-size", "300"], "--min-size 300 is larger")
    _one_line(capsys, ["train_det", "--score-thresh", "2"], "argument --score-thresh: expected a probability")
    _one_line(capsys, ["eval_det", "--dataset", "vitzoo/shapes"], "give --checkpoint", "--untrained")
    _one_line(capsys, ["eval_det", "--checkpoint", str(tmp_path), "--backbone", "ravlt_s"],
              "--backbone: the checkpoint carries its detector")
    _one_line(capsys, ["eval_det", "--checkpoint", str(tmp_path), "--data-dir", str(shapes)],
              "no best.safetensors or last.safetensors")
    _one_line(capsys, ["train_det", "--data-dir", str(shapes), "--detector", "retinanet", "--proposals", "10", "10"],
              "--detector retinanet does not use --proposals (only maskrcnn / fasterrcnn)")
    _one_line(capsys, ["eval_det", "--untrained", "--output", str(tmp_path), "--data-dir", str(shapes),
                       "--detector", "fasterrcnn", "--mask-head-channels", "8"],
              "--detector fasterrcnn does not use --mask-head-channels (only maskrcnn)")


def test_the_shapes_config_is_the_default_recipe():
    from vitzoo.commands.train_det import parse_args

    config = parse_args(["-c", str(ROOT / "configs" / "detection" / "shapes.yaml")])
    default = parse_args(["--dataset", "vitzoo/shapes"])
    differ = {k for k in vars(default) if k != "config" and getattr(config, k) != getattr(default, k)}
    # the config also pins the CPU and names the run
    assert differ == {"device", "experiment"}, {k: (getattr(config, k), getattr(default, k)) for k in differ}
