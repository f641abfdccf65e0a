"""Atomic checkpoints, exact RNG restore, graceful stop and metrics logs."""

from __future__ import annotations

import json
import os
import random
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vitzoo.train import Checkpointer, MetricsLogger, capture_rng_state, graceful_stop, restore_rng_state
from vitzoo.train.checkpoint import atomic_write


def test_rng_state_round_trip_is_exact():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_checkpointer_writes_weights_and_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    ckpt = Checkpointer(tmp_path, metric="top1")
    ckpt.save("last", {"optimizer": optimizer.state_dict(), "epoch": 3, "rng": capture_rng_state()},
              model.state_dict(), {"model": "linear"})
    weights = load_file(str(tmp_path / "last.safetensors"))
    torch.testing.assert_close(weights["weight"], model.weight)
    state = Checkpointer.load(tmp_path)
    assert state["epoch"] == 3 and state["metadata"]["model"] == "linear"
    restored = torch.optim.AdamW(model.parameters())
    restored.load_state_dict(state["optimizer"])
    assert ckpt.save_if_best(0.5, {}, model.state_dict()) and not ckpt.save_if_best(0.4, {}, model.state_dict())
    assert Checkpointer.load(tmp_path / "best.state.pt")["best_metric"] == 0.5
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "last.state.pt"
    atomic_write(target, lambda tmp: torch.save({"epoch": 1}, tmp))

    def crash(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"half a checkp")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert Checkpointer.load(target)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.state.pt"]


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "last.state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable vitzoo training checkpoint"):
        Checkpointer.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpointer.load(tmp_path / "nothing")


def test_graceful_stop_sets_a_flag_then_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with graceful_stop() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and stop.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_metrics_logger_jsonl_csv_png_and_resume(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for epoch in range(3):
        log.log({"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "top1": 10.0 * epoch, "lr": 1e-3})
    resumed = MetricsLogger(tmp_path, tensorboard=False)
    resumed.log({"epoch": 2, "train_loss": 0.3, "top1": 25.0, "lr": 1e-3})  # a repeated epoch replaces
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[-1]["top1"] == 25.0
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "epoch,train_loss,top1,lr"
    assert resumed.plot().stat().st_size > 5_000
