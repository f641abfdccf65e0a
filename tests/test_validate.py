"""``vitzoo validate`` / tools/validate.py: reproduces the top-1 a run reported (digits), evaluates official
checkpoints through the family converter, other resolutions, JSON results; the classifier API for other tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_data import write_image_folder
from vitzoo.cli import main
from vitzoo.commands.train import parse_args as parse_train_args
from vitzoo.train.classification import train_classifier
from vitzoo.train.evaluation import load_classifier

ROOT = Path(__file__).resolve().parents[1]
SMALL_DIGITS_MODEL = ["--model-kwargs", "mixer=linear", "img_size=32", "patch_size=8", "embed_dim=24", "depth=1",
                      "num_heads=2", "mlp_ratio=2.0"]


def _folder_images(folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            images.append(torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1) / 255.0)
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_validate_reproduces_the_reported_digits_top1(tmp_path):
    data = tmp_path / "digits"
    argv = ["-c", str(ROOT / "configs/demo/digits.yaml"), "--data-dir", str(data), *SMALL_DIGITS_MODEL,
            "--epochs", "2", "--lr", "3e-3", "--warmup-epochs", "0", "--output", str(tmp_path / "runs"),
            "--experiment", "digits"]
    result = train_classifier(parse_train_args(argv))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    # the demo recipe evaluates and exports the EMA weights; 'best' is the best EMA epoch
    best_row = max(rows, key=lambda r: r["ema_top1"])
    results_file = tmp_path / "val.json"
    run = subprocess.run([sys.executable, "tools/validate.py", "--checkpoint", str(result.run_dir), "--dataset",
                          "vitzoo/digits", "--data-dir", str(data), "-j", "0", "--device", "cpu",
                          "--results-file", str(results_file)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed == json.loads(results_file.read_text())
    assert printed["images"] == 360 and printed["input_size"] == [3, 32, 32] and printed["weights"] == "ema"
    # results carry 4 decimals, as timm's validate.py
    assert printed["top1"] == pytest.approx(best_row["ema_top1"], abs=5e-5)
    assert printed["loss"] == pytest.approx(best_row["ema_val_loss"], rel=1e-5)
    assert max(r["top1"] for r in rows) > 20  # two epochs of a 0.02 M-parameter model already beat chance (10 %)

    # the API other tools use (e.g. LiT's class-consistency check) labels raw [0, 1] tensors the same way
    classifier = load_classifier(result.run_dir)
    images, labels = _folder_images(data / "val", classifier.classes)
    assert classifier.classes == [str(d) for d in range(10)]
    accuracy = 100.0 * (classifier.predict(images) == labels).double().mean().item()
    assert accuracy == pytest.approx(best_row["ema_top1"], abs=1e-9)
    grey = classifier.predict(images[:, :1])  # one channel is repeated to RGB
    assert torch.equal(grey, classifier.predict(images[:, :1].expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"expected images \[B, 1 or 3, H, W\]"):
        classifier.predict(images[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data"), classes=3, train=8, val=4)


def _independent_top1(model: torch.nn.Module, folder: Path, size: int, crop_pct: float) -> float:
    """Top-1 computed with torchvision transforms and a plain loop (no vitzoo evaluation code)."""
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.Resize(int(size / crop_pct), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    correct = total = 0
    with torch.no_grad():
        for label, name in enumerate(sorted(p.name for p in (folder / "val").iterdir())):
            for path in sorted((folder / "val" / name).iterdir()):
                logits = model(transform(Image.open(path).convert("RGB"))[None])
                correct += int(logits.argmax(1).item() == label)
                total += 1
    return 100.0 * correct / total


def test_official_checkpoint_goes_through_the_family_converter(folder, tmp_path, capsys):
    import timm
    from conftest import write_official_checkpoint

    kwargs = dict(embed_dim=16, depth=1, num_heads=2, patch_size=4, img_size=16, num_classes=3)
    model = timm.create_model("vzvit_tiny", **kwargs).eval()
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.3)
    # a DeiT-style container: weights under 'model', an argparse Namespace beside them
    path = tmp_path / "official.pth"
    write_official_checkpoint(path, {"model": model.state_dict()}, config_kind="argparse")
    assert main(["validate", "--model", "vzvit_tiny", "--checkpoint", str(path), "--num-classes", "3",
                 "--model-kwargs", "embed_dim=16", "depth=1", "num_heads=2", "patch_size=4", "img_size=16",
                 "--data-dir", str(folder), "--split", "val", "-j", "0", "--device", "cpu", "--img-size", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"] == "official" and result["images"] == 12 and result["crop_pct"] == 0.875
    assert result["top1"] == pytest.approx(_independent_top1(model, folder, 16, 0.875), abs=5e-5)

    assert main(["validate", "--checkpoint", str(path), "--data-dir", str(folder), "--device", "cpu"]) == 2
    assert "pass --model NAME" in capsys.readouterr().err


def test_validate_at_another_resolution(folder, tmp_path, capsys):
    train_classifier(parse_train_args([
        "--data-dir", str(folder), "--model", "vzvit_tiny", "--model-kwargs", "embed_dim=16", "depth=1", "num_heads=2",
        "patch_size=4", "img_size=16", "mixer=linear", "--img-size", "16", "-b", "4", "--epochs", "1", "--workers", "0",
        "--device", "cpu", "--output", str(tmp_path), "--experiment", "run", "--crop-pct", "1.0"]))
    assert main(["validate", "--checkpoint", str(tmp_path / "run" / "last.state.pt"), "--data-dir", str(folder),
                 "-j", "0", "--device", "cpu", "--img-size", "24"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_size"] == [3, 24, 24] and result["crop_pct"] == 1.0 and result["images"] == 12
    classifier = load_classifier(tmp_path / "run" / "last.state.pt")
    assert result["top1"] == pytest.approx(_independent_top1(classifier.model, folder, 24, 1.0), abs=5e-5)


def test_fused_and_compiled_validation_gives_the_same_metrics(folder, tmp_path, capsys):
    """--fuse folds RAVLT's BatchNorms (trained running statistics); the metrics are the unfused model's. (The
    compiled model's equality is tested in tests/test_fuse.py, where compiling is cheaper.)"""
    train_classifier(parse_train_args([
        "--data-dir", str(folder), "--model", "ravlt_t", "--model-kwargs", "embed_dims=[8,16,24,32]",
        "depths=[1,1,1,1]", "num_heads=[1,2,3,4]", "projection=32", "--img-size", "32", "-b", "4", "--epochs", "1",
        "--workers", "0", "--device", "cpu", "--output", str(tmp_path), "--experiment", "run"]))
    common = ["validate", "--checkpoint", str(tmp_path / "run" / "last.state.pt"), "--data-dir", str(folder),
              "-j", "0", "--device", "cpu"]
    results = []
    for extra in ([], ["--fuse"]):
        assert main(common + extra) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert [(r["fused"], r["compiled"]) for r in results] == [(False, False), (True, False)]
    for key in ("images", "top1", "top5", "param_count_m"):
        assert results[0][key] == results[1][key], key
    assert results[1]["loss"] == pytest.approx(results[0]["loss"], abs=1e-5)
