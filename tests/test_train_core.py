"""The training core, once for all engines: a run killed at an arbitrary update and resumed ends with the
weights of an uninterrupted run (generically, with a toy engine; then each real engine through its command
line, SIGKILLed in a subprocess)."""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_linfusion_distill import tiny  # noqa: F401  (fixture)
from vitzoo.data import seeded_rng
from vitzoo.train import Engine, StepResult, Trainer


class _NoisyPoints(torch.utils.data.Dataset):
    """Points of a line with seeded noise: the augmentation depends on the sample seed only."""

    def __init__(self, size: int = 24):
        self.x = torch.linspace(-1, 1, size).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item):
        index, seed = item
        with seeded_rng(seed):
            noise = torch.randn(1) * 0.1
        return self.x[index] + noise, 3 * self.x[index] - 1


class _ToyEngine(Engine):
    kind = "test-toy"

    def build(self, trainer, state):
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.train_set = _NoisyPoints()

    def step(self, model, batch):
        x, y = batch
        return StepResult(loss=torch.nn.functional.mse_loss(model(x), y), samples=len(x))


def _toy_args(tmp_path: Path, name: str, **extra) -> argparse.Namespace:
    values = dict(seed=5, batch_size=4, epochs=3, max_steps=None, grad_accum_steps=2, output=str(tmp_path),
                  experiment=name, resume="", log_interval=1, checkpoint_steps=2, workers=0, device="cpu",
                  model_ema=True, model_ema_decay=0.8, clip_grad=0.5)
    values.update(extra)
    return argparse.Namespace(**values)


class _Killed(Exception):
    """Stands for SIGKILL: the process ends inside a step and writes nothing more."""


@pytest.mark.parametrize("killed_at", [3, 5, 8])
def test_a_run_killed_mid_step_resumes_to_the_uninterrupted_weights(tmp_path, killed_at):
    straight = Trainer(_ToyEngine(_toy_args(tmp_path, "straight"))).fit()
    assert straight.steps == 9  # 24 samples / batch 4 = 6 batches = 3 updates per epoch, 3 epochs

    engine = _ToyEngine(_toy_args(tmp_path, "killed"))
    calls = []
    original = engine.step

    def dying(model, batch):
        calls.append(1)
        if len(calls) == 2 * killed_at - 1:  # the first micro-batch of update `killed_at`
            raise _Killed
        return original(model, batch)

    engine.step = dying
    with pytest.raises(_Killed):
        Trainer(engine).fit()
    saved = torch.load(tmp_path / "killed" / "last.state.pt", weights_only=True)["progress"]["update_step"]
    assert saved == (killed_at - 1) // 2 * 2  # the last checkpoint (every 2 updates) before the kill
    resumed = Trainer(_ToyEngine(_toy_args(tmp_path, "ignored", resume=str(tmp_path / "killed")))).fit()
    assert resumed.run_dir == tmp_path / "killed" and resumed.steps == 9
    a, b = (torch.load(tmp_path / name / "last.state.pt", weights_only=True) for name in ("straight", "killed"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_a_run_directory_is_not_overwritten_and_a_bad_resume_names_the_path(tmp_path):
    Trainer(_ToyEngine(_toy_args(tmp_path, "one", epochs=1))).fit()
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        Trainer(_ToyEngine(_toy_args(tmp_path, "one")))
    from vitzoo.train import resume_base_args

    with pytest.raises(FileNotFoundError, match="missing"):
        resume_base_args(tmp_path / "missing")


# ------------------------------------------------------------------ each engine through its command line


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "vitzoo.cli", *argv]


def _kill_after_first_checkpoint(command: list[str], run_dir: Path, cwd: Path) -> None:
    """Start ``command``, wait for its first checkpoint, wait a random moment more, then SIGKILL it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (run_dir / "last.state.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    assert process.wait(60) == -signal.SIGKILL, "the run ended before it could be killed: make it longer"


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _sigkill_then_resume(tmp_path: Path, command: str, argv: list[str]) -> None:
    env = dict(os.environ)
    straight = subprocess.run(_cli(command, *argv, "--experiment", "straight"), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    _kill_after_first_checkpoint(_cli(command, *argv, "--experiment", "killed"), tmp_path / "runs" / "killed", tmp_path)
    resumed = subprocess.run(_cli(command, "--resume", str(tmp_path / "runs" / "killed")), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(tmp_path / "runs" / "straight" / "last.safetensors",
                         tmp_path / "runs" / "killed" / "last.safetensors")


@pytest.mark.slow
def test_classification_resumes_exactly_after_sigkill(tmp_path):
    from test_data import write_image_folder

    data = write_image_folder(tmp_path / "data", classes=3, train=8, val=2)
    _sigkill_then_resume(tmp_path, "train", [
        "--data-dir", str(data), "--model", "vzvit_tiny", "--model-kwargs", "embed_dim=16", "depth=1", "num_heads=2",
        "patch_size=4", "img_size=16", "mixer=linear", "--img-size", "16", "-b", "4", "--epochs", "12",
        "--workers", "0", "--device", "cpu", "--lr", "1e-3", "--warmup-epochs", "1", "--model-ema",
        "--model-ema-decay", "0.9", "--reprob", "0.25", "--drop-path", "0.1", "--output", "runs"])


@pytest.mark.slow
def test_the_lit_digits_recipe_resumes_exactly_after_sigkill(tmp_path):
    """configs/diffusion/lit_digits.yaml (the embedded digits generator), cut to 40 of its 4,000 updates."""
    recipe = Path(__file__).resolve().parents[1] / "configs" / "diffusion" / "lit_digits.yaml"
    _sigkill_then_resume(tmp_path, "train_lit", [
        "-c", str(recipe), "--data-dir", str(tmp_path / "digits"), "--max-steps", "40", "--checkpoint-steps", "5",
        "--no-pipeline", "--output", "runs"])


@pytest.mark.slow
def test_linfusion_distillation_resumes_exactly_after_sigkill(tmp_path, tiny):
    from test_linfusion_distill import _write_folder

    tiny.save_pretrained(tmp_path / "sd")
    _sigkill_then_resume(tmp_path, "distill", [
        "--method", "linfusion", "--model", str(tmp_path / "sd"), "--data-dir", str(_write_folder(tmp_path / "data")),
        "--resolution", "32", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--max-steps", "40",
        "--checkpoint-steps", "3", "--log-interval", "5", "--output", "runs"])


@pytest.mark.slow
def test_detection_resumes_exactly_after_sigkill(tmp_path):
    """Mask R-CNN on a reduced RAVLT over a tiny vitzoo/shapes set: 4 epochs of 2 updates, checkpoints per epoch."""
    pytest.importorskip("pycocotools")
    from vitzoo.data import build_shapes_coco

    data = build_shapes_coco(tmp_path / "shapes", train_images=8, val_images=2, image_size=64, object_sizes=(12, 24))
    _sigkill_then_resume(tmp_path, "train_det", [
        "--data-dir", str(data), "--backbone-kwargs", "embed_dims=(16,32,48,64)", "depths=(1,1,1,1)",
        "num_heads=(1,2,3,4)", "--fpn-channels", "32", "--box-head-dim", "32", "--mask-head-channels", "16",
        "--min-size", "64", "--max-size", "64", "--proposals", "100", "50", "--box-samples", "32", "-b", "4",
        "--epochs", "4", "--workers", "0", "--device", "cpu", "--preview-images", "0", "--output", "runs"])


@pytest.mark.slow
def test_aigi_detection_resumes_exactly_after_sigkill(tmp_path):
    """PPL (LoRA on a one-block vzvit, randomized patch reconstruction, patch contrastive loss) on a tiny
    GenImage-style folder: 12 epochs of 2 updates, a checkpoint and a validation pass per epoch."""
    pytest.importorskip("peft")
    from test_aigi_train import BACKBONE, write_aigi_folder

    data = write_aigi_folder(tmp_path / "data", train=4, val=2)
    _sigkill_then_resume(tmp_path, "train_aigi", [
        "--data-dir", str(data), *BACKBONE, "--finetune", "lora", "--lora-rank", "4", "-b", "4", "--epochs", "12",
        "--lr", "1e-3", "--workers", "0", "--device", "cpu", "--output", "runs"])
