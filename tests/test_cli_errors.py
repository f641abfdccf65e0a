"""The `vitzoo` command's error boundary: a bad input is one line on stderr naming what was expected, exit
status 2 and no traceback (``--debug`` / ``VITZOO_DEBUG=1`` show it); no option is silently ignored or
turned into a wrong result."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_data import corrupt, write_image_folder
from vitzoo.cli import build_parser, main

TINY_VIT = ["--model", "vzvit_tiny", "--model-kwargs", "embed_dim=16", "depth=1", "num_heads=2", "patch_size=4",
            "img_size=16", "mixer=linear"]


def vitzoo(*argv: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real entry point, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "vitzoo.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, **(env or {})), timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_misspelt_model_keyword_names_the_keyword_and_the_close_one(tmp_path):
    assert_one_line_error(vitzoo("train", "--model", "vzvit_small", "--model-kwargs", "mixr=linear",
                                 "--dataset", "vitzoo/digits", "--data-dir", str(tmp_path / "d")),
                          "vitzoo train: error: --model-kwargs", "'mixr'", "did you mean 'mixer'")
    assert not (tmp_path / "d").exists()  # refused before any data was built
    assert_one_line_error(vitzoo("bench", "--model", "vzvit_small:mixr=linear", "--out", str(tmp_path)),
                          "vitzoo bench: error: --model vzvit_small:mixr=linear", "did you mean 'mixer'")
    assert_one_line_error(vitzoo("bench", "--model", "vzvit_small:mixer=lineer", "--out", str(tmp_path)),
                          "unknown mixer 'lineer'", "linear")
    assert_one_line_error(vitzoo("bench", "--mixer", "linear:num_head=2", "--out", str(tmp_path)),
                          "mixer 'linear'", "did you mean num_heads")


def test_out_of_range_numbers_are_refused_where_they_are_parsed(tmp_path):
    assert_one_line_error(vitzoo("info", "vzvit_tiny", "--img-size", "-5"),
                          "vitzoo info: error: argument --img-size: expected a positive integer, got -5")
    assert_one_line_error(vitzoo("train", "--epochs", "0"), "argument --epochs: expected a positive integer, got 0")
    assert_one_line_error(vitzoo("train_lit", "--lr=-1e-4"), "argument --lr: expected a positive number")
    assert_one_line_error(vitzoo("train", "--smoothing", "1.5"), "argument --smoothing: expected a probability")
    assert_one_line_error(vitzoo("distill", "--resolution", "100"),
                          "argument --resolution: expected a positive multiple of 8", "e.g. 96")
    config = tmp_path / "c.yaml"
    config.write_text("batch_size: 0\n")
    assert_one_line_error(vitzoo("train", "-c", str(config), "--model", "vzvit_tiny", "--dataset", "vitzoo/digits"),
                          "batch_size=0 is not a valid value for --batch-size", "expected a positive integer")


def test_a_missing_resume_folder_names_that_folder_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "runs" / "missing"
    assert_one_line_error(vitzoo("train_lit", "--resume", str(missing)), f"cannot resume: {missing}")
    for result in (vitzoo("train_lit", "--resume", str(missing), "--debug"),
                   vitzoo("train_lit", "--resume", str(missing), env={"VITZOO_DEBUG": "1"})):
        assert result.returncode != 0 and "Traceback" in result.stderr and str(missing) in result.stderr


def test_model_messages_name_the_family_and_the_checkpoint_problem(tmp_path):
    import torch

    assert_one_line_error(vitzoo("info", "inline_deit_tiny", "--img-size", "70", "64"),
                          "vitzoo info: error:", "InLine-DeiT", "divisible by 16", "70x64")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    assert_one_line_error(vitzoo("convert", "ravlt_t", str(tmp_path / "module.pth"), str(tmp_path / "o.safetensors")),
                          "pickled module object", "torch.save(model.state_dict(), path)")
    torch.save({"model": {"head.weight": torch.zeros(2, 2), "step": 3}}, tmp_path / "mixed.pth")
    assert_one_line_error(vitzoo("convert", "ravlt_t", str(tmp_path / "mixed.pth"), str(tmp_path / "o.safetensors")),
                          "non-tensor entry: 'step' (int)")
    # RAVLT takes img_size like every timm model (it runs at any size)
    result = vitzoo("bench", "--model", "ravlt_t:img_size=64", "--img-size", "64", "--iters", "1", "--max-seconds",
                    "0.1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-1000:]


def test_normal_output_has_no_warnings_nobody_can_act_on():
    result = vitzoo("info", "vzvit_tiny", env={"PYTHONWARNINGS": "default"})
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr


def test_the_default_workers_fit_the_machine():
    from vitzoo.commands.train import parse_args

    available = len(os.sched_getaffinity(0))
    assert parse_args(["--model", "m", "--data-dir", "d"]).workers == min(4, available)


def test_validation_skips_an_unreadable_image_and_counts_the_file_once(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=2, train=2, val=4)
    corrupt(root / "val" / "class_0" / "001.png", "truncated")
    out = tmp_path / "v.json"
    assert main(["validate", *TINY_VIT, "--data-dir", str(root), "--split", "val", "--device", "cpu", "-j", "0",
                 "-b", "3", "--num-classes", "2", "--img-size", "16", "--results-file", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["images"], result["skipped"]) == (7, 1)  # 7 readable files evaluated once each


def test_training_counts_each_unreadable_file_once_per_epoch(tmp_path, caplog):
    from vitzoo.commands.train import parse_args
    from vitzoo.train.classification import train_classifier

    root = write_image_folder(tmp_path / "data", classes=2, train=3, val=2)
    # files 1 and 2 of the 6: reading file 1 passes over 1 and 2, reading file 2 passes over 2 again
    corrupt(root / "train" / "class_0" / "001.png", "garbage")
    corrupt(root / "train" / "class_0" / "002.png", "truncated")
    args = parse_args(["--data-dir", str(root), *TINY_VIT, "--img-size", "16", "-b", "2", "--epochs", "1",
                       "--workers", "0", "--device", "cpu", "--model-ema", "--output", str(tmp_path / "runs"),
                       "--experiment", "r"])
    with caplog.at_level("WARNING", logger="vitzoo.data"):
        result = train_classifier(args)
    assert caplog.text.count("skipping unreadable image") == 3  # three reads of two files
    assert result.last_metrics["skipped_images"] == 2


# ------------------------------------------------------------------ every flag of every command


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


_PATH_DESTS = {"data_dir", "checkpoint", "resume", "config", "initial_checkpoint", "teacher", "init", "classifier",
               "vae", "linfusion"}
_BAD_NUMBERS = ["", "-1", "0", "99999999999999999999", "1e400", "nan"]


def _sweep_cases() -> list[tuple[str, str, str]]:
    cases = []
    for command, sub in sorted(_subcommands().items()):
        for action in sub._actions:
            if not action.option_strings or action.dest in ("help", "debug"):
                continue
            flag = action.option_strings[-1]
            if action.type not in (None, str):  # int, float and the checking types of vitzoo.commands._types
                cases += [(command, flag, value) for value in _BAD_NUMBERS]
            elif action.dest in _PATH_DESTS:
                cases.append((command, flag, "/nonexistent/vitzoo-sweep"))
    return cases


def test_the_sweep_covers_the_numeric_and_path_flags_of_every_command():
    cases = _sweep_cases()
    commands = {command for command, _, _ in cases}
    assert {"train", "train_lit", "distill", "validate", "bench", "generate", "cache_latents", "info", "train_aigi",
            "eval_aigi", "detect_aigi"} <= commands
    assert len(cases) > 300


@pytest.mark.parametrize("command, flag, value", _sweep_cases())
def test_no_flag_value_gives_a_traceback(command, flag, value, tmp_path, monkeypatch, capsys):
    """Each numeric flag alone with an empty, negative, zero, huge or NaN value, each path flag with a path that
    does not exist: the command ends with a message (argparse's or the error boundary's), never an exception."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        status = main([command, f"{flag}={value}"])
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and err.strip(), (status, err[-500:])
