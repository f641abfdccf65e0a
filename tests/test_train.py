"""The classification engine: YAML + CLI flags, exact resume after SIGTERM, atomic checkpoints, clear errors
for bad data and incompatible resumes, corrupt-file counting, logs, and a 2-process run through accelerate."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import launch_two_processes
from test_data import corrupt, write_image_folder

from vitzoo.cli import main
from vitzoo.train import Checkpointer
from vitzoo.commands.train import parse_args as parse_train_args
from vitzoo.train.classification import ClassificationEngine, train_classifier
from vitzoo.train.loop import Trainer
from vitzoo.train.config import ConfigError
from vitzoo.train.runtime import LaunchError, make_accelerator

TINY_MODEL = ["--model", "vzvit_tiny", "--model-kwargs", "embed_dim=16", "depth=1", "num_heads=2", "patch_size=4",
              "img_size=16", "mixer=linear", "--img-size", "16"]


def tiny_argv(data: Path, runs: Path, *extra: str, experiment: str = "run") -> list[str]:
    return ["--data-dir", str(data), *TINY_MODEL, "-b", "4", "--epochs", "2", "--workers", "0", "--device", "cpu",
            "--lr", "1e-3", "--warmup-epochs", "1", "--log-interval", "1", "--output", str(runs),
            "--experiment", experiment, *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data"), classes=3, train=8, val=4)


def test_yaml_defaults_and_command_line_precedence(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: vzvit_tiny\nbatch_size: 32\nlr: 0.01\nmodel_kwargs: {mixer: linear, depth: 2}\n"
                      "scale: [0.5, 1.0]\nmodel_ema: true\n")
    args = parse_train_args(["-c", str(config), "--lr", "0.002", "--data-dir", "d"])
    assert (args.model, args.batch_size, args.lr) == ("vzvit_tiny", 32, 0.002)
    assert args.model_kwargs == {"mixer": "linear", "depth": 2} and args.scale == [0.5, 1.0] and args.model_ema
    assert args.weight_decay == 0.05  # untouched default
    # a flag typed before -c still wins over the file
    assert parse_train_args(["--batch-size", "8", "-c", str(config), "--data-dir", "d"]).batch_size == 8
    for text, message in (("btach_size: 3\n", r"unknown key 'btach_size' \(did you mean batch_size"),
                          ("batch_size: many\n", "--batch-size .*expected a positive integer"),
                          ("batch_size: 0\n", "--batch-size .*expected a positive integer, got 0"),
                          ("smoothing: 1.5\n", "--smoothing .*expected a probability in \\[0, 1\\]"),
                          ("model_ema: 1\n", "expected true or false"),
                          ("clip_mode: sideways\n", "expected one of"),
                          ("- just\n- a list\n", "must hold a mapping")):
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            parse_train_args(["-c", str(config), "--model", "m", "--data-dir", "d"])
    with pytest.raises(ValueError, match="no model"):
        parse_train_args(["--data-dir", "d"])


def _run(argv, on_update=None):
    return train_classifier(parse_train_args(argv), on_update=on_update)


def test_resume_after_sigterm_repeats_the_uninterrupted_losses(data, tmp_path):
    # everything random at once: RandAugment, random erasing, mixup/cutmix, drop path, EMA, accumulation
    extra = ["--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--mixup", "0.8", "--cutmix", "1.0",
             "--drop-path", "0.1", "--model-ema", "--model-ema-decay", "0.9", "--grad-accum-steps", "2",
             "--sched-on-updates", "--clip-grad", "1.0"]
    reference = {}
    full = _run(tiny_argv(data, tmp_path, *extra, experiment="full"),
                on_update=lambda step, loss: reference.setdefault(step, loss.item()))
    assert sorted(reference) == list(range(1, 7)) and full.stopped_by_signal is None

    def interrupt(step, loss):
        if step == 2:  # mid-epoch 0 (3 updates per epoch)
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = _run(tiny_argv(data, tmp_path, *extra, experiment="cut"), on_update=interrupt)
    assert stopped.stopped_by_signal == signal.SIGTERM and stopped.epochs_completed == 0
    state = Checkpointer.load(tmp_path / "cut")
    assert state["progress"]["batch_in_epoch"] == 4 and state["progress"]["update_step"] == 2
    # resuming needs only the run directory; --workers 2 shows the data order does not depend on workers
    resumed_losses = {}
    resumed = _run(["--resume", str(tmp_path / "cut"), "--workers", "2"],
                   on_update=lambda step, loss: resumed_losses.setdefault(step, loss.item()))
    assert sorted(resumed_losses) == [3, 4, 5, 6]
    assert resumed_losses == {step: reference[step] for step in (3, 4, 5, 6)}
    for name in ("last.safetensors",):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "cut" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    reference_rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    for row, ref in zip(rows, reference_rows):
        for key in ("top1", "val_loss", "ema_top1", "ema_val_loss", "lr"):
            assert row[key] == ref[key], key
        # float32 running sums: the resumed epoch adds them in two parts
        assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6)
    assert resumed.best_value == full.best_value


def test_run_outputs_logs_and_refuses_to_overwrite(data, tmp_path, capsys):
    assert main(["train", *tiny_argv(data, tmp_path, "--model-ema", "--model-ema-decay", "0.5")]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert f"curves:     {run / 'curves.png'}" in out and "validation top-1" in out
    assert {"args.yaml", "last.safetensors", "last.state.pt", "best.safetensors", "best.state.pt", "metrics.jsonl",
            "metrics.csv", "curves.png"} <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "val_loss", "top1", "top5", "ema_top1", "lr", "images_per_second",
            "skipped_images"} <= set(header)
    assert (run / "curves.png").stat().st_size > 10_000
    best = Checkpointer.load(run / "best.state.pt")
    assert best["metadata"]["weights"] == "ema" and best["ema"] is not None
    exported = load_file(str(run / "best.safetensors"))
    # the user-facing weights are the EMA weights the reported metric came from
    assert all(torch.equal(exported[k], best["ema"][k]) for k in exported)
    assert main(["train", *tiny_argv(data, tmp_path)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def test_bad_data_fails_before_training(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", *tiny_argv(tmp_path / "nowhere", runs)]) == 2
    assert "does not exist" in capsys.readouterr().err
    root = write_image_folder(tmp_path / "noval", classes=2, train=4, val=2, val_name="holdout")
    assert main(["train", *tiny_argv(root, runs)]) == 2
    assert "no 'validation' split" in capsys.readouterr().err
    root = write_image_folder(tmp_path / "empty", classes=2, train=4, val=2)
    (root / "train" / "class_5").mkdir()
    assert main(["train", *tiny_argv(root, runs)]) == 2
    assert "empty class folder(s)" in capsys.readouterr().err
    (root / "train" / "class_5").rmdir()
    assert main(["train", *tiny_argv(root, runs), "--batch-size", "16"]) == 2
    assert "fewer than one update" in capsys.readouterr().err
    assert main(["train", *tiny_argv(root, runs), "--batch-size", "3", "--mixup", "0.8"]) == 2
    assert "must be even" in capsys.readouterr().err
    assert not runs.exists()  # nothing was written: every check ran before the run started


def test_incompatible_resume_is_a_clear_error(data, tmp_path, capsys):
    assert main(["train", *tiny_argv(data, tmp_path, "--epochs", "1")]) == 0
    run = tmp_path / "run"
    assert main(["train", "--resume", str(run), "--model", "vzvit_small"]) == 2
    assert "model: the checkpoint has 'vzvit_tiny', this run has 'vzvit_small'" in capsys.readouterr().err
    more = write_image_folder(tmp_path / "four", classes=4, train=4, val=2)
    assert main(["train", "--resume", str(run), "--data-dir", str(more)]) == 2
    assert "num_classes: the checkpoint has '3', this run has '4'" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--model-kwargs", "embed_dim=24", "depth=1", "num_heads=2",
                 "patch_size=4", "img_size=16", "mixer=linear"]) == 2
    assert "shape mismatch" in capsys.readouterr().err


def test_interrupted_checkpoint_write_keeps_a_loadable_checkpoint(data, tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def crash_on_second_epoch(obj, path, *args, **kwargs):
        calls.append(path)
        if obj.get("progress", {}).get("epoch") == 2:
            with open(path, "wb") as handle:
                handle.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt("power cut while writing")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_argv(data, tmp_path))
    run = tmp_path / "run"
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]
    state = Checkpointer.load(run)
    assert state["progress"]["epoch"] == 1  # the previous checkpoint, whole
    load_file(str(run / "last.safetensors"))
    monkeypatch.setattr(torch, "save", real_save)
    # the run directory may move between the crash and the resume: the run continues where it now is
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)
    resumed = _run(["--resume", str(moved)])
    assert resumed.epochs_completed == 2 and resumed.run_dir == moved and not run.exists()


def test_corrupt_images_are_skipped_and_counted_in_the_metrics(tmp_path, caplog):
    root = write_image_folder(tmp_path / "data", classes=3, train=4, val=4)
    corrupt(root / "train" / "class_0" / "001.png", "truncated")
    corrupt(root / "train" / "class_2" / "002.png", "garbage")
    corrupt(root / "val" / "class_1" / "000.png", "truncated")
    with caplog.at_level("WARNING"):
        result = _run(tiny_argv(root, tmp_path / "runs", "--epochs", "1"))
    assert result.last_metrics["skipped_images"] == 3
    assert "skipping unreadable image" in caplog.text and "3 unreadable image(s) skipped" in caplog.text


def _two_process_worker(data: str, runs: str, report: str) -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    # the forked process inherits the parent's single-process accelerate state; start from scratch
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    torch.set_num_threads(1)
    trainer = Trainer(ClassificationEngine(parse_train_args(tiny_argv(Path(data), Path(runs), "--epochs", "1"))))
    trainer.train_sampler.set_epoch(0)
    indices = [index for index, _ in trainer.train_sampler]
    result = trainer.fit()
    checksum = sum(float(p.double().sum()) for p in trainer.trainable.parameters())
    rank = trainer.accelerator.process_index
    Path(report, f"rank{rank}.json").write_text(json.dumps(dict(
        rank=rank, world=trainer.accelerator.num_processes, distributed=str(trainer.accelerator.distributed_type),
        indices=indices, checksum=checksum, result_world=result.world_size, pid=os.getpid())))


def test_two_processes_through_accelerate_split_the_data_and_stay_in_sync(data, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    launch_two_processes(_two_process_worker, str(data), str(tmp_path / "runs"), str(report))
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world"] for r in ranks} == {2}
    assert {r["result_world"] for r in ranks} == {2} and ranks[0]["pid"] != ranks[1]["pid"]
    assert all("MULTI_CPU" in r["distributed"] for r in ranks)
    # each rank trained on its own half of the 24 images, and DDP kept the weights identical
    assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
    assert sorted(ranks[0]["indices"] + ranks[1]["indices"]) == list(range(24))
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    rows = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["top1"] >= 0


def test_a_launch_whose_processes_would_train_alone_is_refused(monkeypatch):
    make_accelerator(device="cpu")  # this process's accelerate state: one process
    # what `accelerate launch` leaves in the environment when its processes do not join one group
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="started 2 processes .* but accelerate set up 1 .* each would train alone"):
        make_accelerator(device="cpu")
