"""PPL on the training core and its three commands (train_aigi, eval_aigi, detect_aigi), end to end on a tiny
GenImage-style folder written here: reals are smooth noise, their reconstructions (the fakes, and root/recon for
RPR) a 2x down- then nearest up-sampling, a deterministic stand-in for a VAE decoder's traces."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from vitzoo.cli import main

pytest.importorskip("peft")

SIZE = 28
BACKBONE = ["--backbone", "vzvit_tiny", "--backbone-kwargs", "embed_dim=32", "depth=1", "num_heads=2", "patch_size=7",
            "mixer=linear", "--img-size", str(SIZE)]


def _reconstruct(real: np.ndarray) -> np.ndarray:
    half = Image.fromarray(real).resize((real.shape[1] // 2, real.shape[0] // 2), Image.BILINEAR)
    return np.asarray(half.resize((real.shape[1], real.shape[0]), Image.NEAREST))


def write_aigi_folder(root: Path, *, train: int = 4, val: int = 4, size: int = SIZE, seed: int = 0) -> Path:
    """``root/<gen>/{train,val}/{nature,ai}/img<k>.png`` for generators ``gen_a`` (train and val) and ``gen_b``
    (val only), and ``root/recon/...`` mirroring the real images."""
    rng = np.random.default_rng(seed)
    for generator, splits in (("gen_a", (("train", train), ("val", val))), ("gen_b", (("val", val),))):
        for split, count in splits:
            for k in range(count):
                coarse = rng.integers(0, 256, (size // 4, size // 4, 3)).astype(np.uint8)
                real = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC)).astype(np.int64)
                real = np.clip(real + rng.integers(-24, 25, real.shape), 0, 255).astype(np.uint8)
                fake = _reconstruct(real)
                for folder, pixels in ((root / generator / split / "nature", real),
                                       (root / generator / split / "ai", fake),
                                       (root / "recon" / generator / split / "nature", fake)):
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(folder / f"img{k}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-update LoRA run (4 real + 4 fake training images, batch 4, one epoch)."""
    base = tmp_path_factory.mktemp("aigi")
    data = write_aigi_folder(base / "data")
    status = main(["train_aigi", "--data-dir", str(data), *BACKBONE, "--finetune", "lora", "--lora-rank", "4",
                   "-b", "4", "--epochs", "1", "--workers", "0", "--device", "cpu", "--lr", "1e-3",
                   "--output", str(base / "runs"), "--experiment", "tiny"])
    assert status == 0
    return base / "runs" / "tiny", data


def test_train_aigi_writes_checkpoints_metrics_and_a_detector_that_reloads(trained):
    run, data = trained
    for name in ("last.safetensors", "last.state.pt", "best.safetensors", "metrics.jsonl", "args.yaml",
                 "detector.safetensors", "detector.json"):
        assert (run / name).is_file(), name
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["progress"]["update_step"] == 2
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("train_loss", "acc", "acc_real", "acc_fake", "acc_mean", "ap", "auc", "val_loss"):
        assert key in row and math.isfinite(row[key]), key
    config = json.loads((run / "detector.json").read_text())
    assert config["detector_config"]["finetune"] == "lora" and config["merged"]
    assert config["data_config"]["input_size"] == [3, SIZE, SIZE] and config["patch_size"] == 7

    from vitzoo.train.aigi import load_detector

    merged, unmerged = load_detector(run), load_detector(run / "last.safetensors")
    assert "lora" not in " ".join(merged.detector.state_dict())
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(merged.detector(images).logit, unmerged.detector(images).logit, atol=1e-5, rtol=0)


def test_rpr_items_are_seeded_and_labelled_per_patch(trained):
    from vitzoo.aigi.data import AigiFolderDataset
    from vitzoo.train.aigi import RPRTrainSet, image_transform

    _, data = trained
    config = {"input_size": (3, SIZE, SIZE), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    folder = AigiFolderDataset(data, "train", transform=image_transform(config, train=True), min_side=7)
    fake = next(i for i, s in enumerate(folder.samples) if s.label == 1)
    for mode in ("iclr", "v1"):
        dataset = RPRTrainSet(folder, patch=7, grid=(4, 4), mode=mode, prob=1.0, ratio=0.5)
        first, again = dataset[(fake, 123)], dataset[(fake, 123)]
        assert torch.equal(first["image"], again["image"]) and torch.equal(first["patch_label"], again["patch_label"])
        assert first["mixed"] and first["label"] == 1 and first["patch_label"].sum() == 8
        # the partner of img<k> is the real img<k>: every patch is either the real's or its reconstruction's
        partner = folder[(dataset.partner[fake], 123)]
        # patch label 1 = synthetic in both forms (iclr: pasted reconstruction; v1: the fake that remains)
        pixels = first["patch_label"].repeat_interleave(7, 0).repeat_interleave(7, 1).bool()
        assert torch.equal(first["image"], torch.where(pixels, partner.recon, partner.image))
    none = RPRTrainSet(folder, patch=7, grid=(4, 4), mode="none", prob=1.0, ratio=0.5)[(fake, 123)]
    assert not none["mixed"] and torch.equal(none["patch_label"], torch.ones(4, 4))


def test_eval_aigi_writes_json_and_a_table_matching_sklearn(trained, tmp_path, capsys):
    run, data = trained
    assert main(["eval_aigi", str(run), "--data-dir", str(data), "--output", str(tmp_path / "eval"), "--workers", "0",
                 "--device", "cpu", "--cde", "4", "--pasted"]) == 0
    out = capsys.readouterr().out
    assert "| gen_a |" in out and "| gen_b |" in out and "mean ± std" in out and "pasted patches" in out
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    with open(tmp_path / "eval" / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result["images"] == 16
    aucs = []
    for generator in ("gen_a", "gen_b"):
        labels = [int(r["label"]) for r in rows if r["generator"] == generator]
        scores = [float(r["p_fake"]) for r in rows if r["generator"] == generator]
        expected = result["generators"][generator]
        assert expected["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-5)
        assert expected["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-5)
        predicted = np.array(scores) >= 0.5
        assert expected["acc_real"] == pytest.approx(np.mean(~predicted[np.array(labels) == 0]))
        aucs.append(expected["auc"])
    assert result["mean"]["auc"] == pytest.approx(np.mean(aucs)) and result["std"]["auc"] == pytest.approx(np.std(aucs))
    pasted = result["pasted"]
    assert pasted["images"] == 8 and pasted["patches_inside"] == pasted["patches_outside"] == 64
    assert all(isinstance(pasted[k], float) for k in ("probe_inside", "probe_outside", "cde_inside", "cde_outside"))
    assert Image.open(tmp_path / "eval" / "cde.png").size[0] > 100
    assert result["pasted_png"] == str(tmp_path / "eval" / "pasted.png") and Image.open(result["pasted_png"]).size[0] > 100
    assert (tmp_path / "eval" / "metrics.md").read_text().startswith("| generator |")


def test_robustness_flags_change_what_the_model_sees(trained, tmp_path):
    from vitzoo.train.aigi_eval import Perturb

    _, data = trained
    image = Image.open(data / "gen_a" / "val" / "nature" / "img0.png").convert("RGB")
    pixels = np.asarray(image).astype(int)
    for flags, size in ((dict(jpeg_quality=10), image.size), (dict(blur=1.5), image.size), (dict(resize=0.5), (14, 14))):
        out = Perturb(**flags)(image)
        assert out.size == size and out.mode == "RGB"
        if out.size == image.size:
            assert np.abs(np.asarray(out).astype(int) - pixels).mean() > 1, flags
    assert Perturb()(image) is image
    run, _ = trained
    scores = {}
    for name, extra in (("clean", []), ("jpeg", ["--jpeg-quality", "5", "--blur", "1"])):
        assert main(["eval_aigi", str(run), "--data-dir", str(data), "--output", str(tmp_path / name),
                     "--workers", "0", "--device", "cpu", *extra]) == 0
        scores[name] = [r["p_fake"] for r in csv.DictReader(open(tmp_path / name / "scores.csv"))]
    assert scores["clean"] != scores["jpeg"]
    assert json.loads((tmp_path / "jpeg" / "metrics.json").read_text())["perturbation"] == {"blur": 1.0,
                                                                                         "jpeg_quality": 5}


def test_detect_aigi_reports_bad_files_tiles_large_images_and_writes_heatmaps(trained, tmp_path, capsys):
    run, data = trained
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    for name in ("img0.png", "img1.png"):
        Image.open(data / "gen_a" / "val" / "ai" / name).save(folder / name)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "sub" / "big.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.png").write_text("not a png either")
    payload = (data / "gen_a" / "val" / "nature" / "img2.png").read_bytes()
    (folder / "truncated.png").write_bytes(payload[: len(payload) // 2])
    assert main(["detect_aigi", str(folder), "--model", str(run), "--output", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "3 image(s) scored" in out and "1 skipped, 2 unreadable" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = {Path(r["path"]).name: r for r in report["results"]}
    assert rows["notes.txt"]["status"] == "skipped"
    assert rows["truncated.png"]["status"] == "unreadable" and "truncated" in rows["truncated.png"]["note"]
    assert rows["fake.png"]["status"] == "unreadable" and "not an image" in rows["fake.png"]["note"]
    big = rows["big.jpg"]
    # 50x70 with 28-px tiles, stride 28: 2 rows x 3 columns, the last ones padded
    assert big["tiles"] == 6 and (big["width"], big["height"]) == (70, 50)
    assert Image.open(big["heatmap"]).size == (70, 50)
    assert 0 <= rows["img0.png"]["p_fake"] <= 1 and rows["img0.png"]["tiles"] == 1
    with open(tmp_path / "out" / "report.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_tiled_scores_of_an_input_sized_image_equal_the_plain_forward(trained):
    from vitzoo.aigi import predict_large
    from vitzoo.train.aigi import load_detector

    run, _ = trained
    loaded = load_detector(run)
    image = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = loaded.detector(loaded.normalize(image)).logit
    tiled = predict_large(loaded.detector, loaded.normalize(image), crop=SIZE)
    torch.testing.assert_close(tiled.logit, plain)
    large = predict_large(loaded.detector, loaded.normalize(torch.rand(1, 3, 2 * SIZE, 3 * SIZE)), crop=SIZE)
    assert large.tile_logit.shape == (1, 2, 3) and large.heatmap.shape == (1, 8, 12)


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    run, data = trained
    assert main(["train_aigi", *BACKBONE, "--device", "cpu"]) == 2
    assert "no data" in capsys.readouterr().err
    assert main(["eval_aigi", str(run / "last.state.pt"), "--data-dir", str(data)]) == 2
    assert main(["eval_aigi", str(tmp_path / "missing"), "--data-dir", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["detect_aigi", str(tmp_path / "nothing"), "--model", str(run)]) == 2
    assert "does not exist" in capsys.readouterr().err
