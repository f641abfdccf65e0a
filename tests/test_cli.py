"""The ``vitzoo`` command and the tools/ wrappers."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitzoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_list_and_mixers(capsys):
    assert main(["list", "vzvit_*"]) == 0
    assert "vzvit_small" in capsys.readouterr().out
    assert main(["list", "--mixers"]) == 0
    out = capsys.readouterr().out
    assert "softmax" in out and "quadratic" in out and "window" in out
    assert main(["list", "nothing_like_this*"]) == 1


def test_info_reports_params_and_flops(capsys):
    assert main(["info", "vzvit_tiny", "--img-size", "64", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"params": 5717416' in out.replace(" ", "").replace('"params":', '"params": ')
    assert '"gflops"' in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "vzvit_tinny", "--no-flops"]) == 2
    assert "did you mean vzvit_tiny" in capsys.readouterr().err.lower()


def test_bench_writes_csv_and_png(tmp_path):
    code = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--mixer", "linear", "softmax", "window:window_size=4",
         "--tokens", "64", "256", "--dim", "16", "--heads", "2", "--out", str(tmp_path), "--name", "t",
         "--max-seconds", "0.5", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert code.returncode == 0, code.stderr
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["target"] for r in rows] == ["linear"] * 2 + ["softmax"] * 2 + ["window:window_size=4"] * 2
    assert all(r["status"] == "ok" and float(r["ms"]) > 0 for r in rows)
    assert (tmp_path / "t.png").stat().st_size > 10_000
    assert "| linear |" in code.stdout


def test_bench_models(tmp_path, capsys):
    assert main(["bench", "--model", "vzvit_tiny:depth=1,embed_dim=32,num_heads=2", "--img-size", "32", "64",
                 "--out", str(tmp_path), "--name", "m", "--max-seconds", "0.2", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [r["size"] for r in rows] == ["32x32", "64x64"]


def test_cards_are_generated(tmp_path):
    assert main(["cards", "--family", "vzvit", "--out", str(tmp_path)]) == 0
    card = (tmp_path / "vzvit.md").read_text()
    assert "`vzvit_small`" in card and "22.051 M" in card and "## Usage" in card


def test_console_script_installed():
    script = Path(sys.executable).with_name("vitzoo")
    assert script.exists()
    result = subprocess.run([str(script), "list", "vzvit_base"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode == 0 and "vzvit_base" in result.stdout


@pytest.mark.parametrize("tool", sorted(p.name for p in (ROOT / "tools").glob("*.py")))
def test_tools_are_thin_wrappers(tool):
    text = (ROOT / "tools" / tool).read_text()
    assert "from vitzoo.cli import main" in text and len(text.splitlines()) <= 10


def test_bench_denoiser_registry(tmp_path, capsys):
    from torch import nn

    from vitzoo.benchmark.denoisers import DenoiserBench, register_denoiser

    @register_denoiser("test_conv")
    def _factory(width: int = 4):
        import torch

        return DenoiserBench(nn.Conv2d(3, width, 3, padding=1),
                             lambda res, batch, device, dtype: {"input": torch.randn(batch, 3, res // 8, res // 8)},
                             lambda res: (res // 8) ** 2)

    assert main(["bench", "--denoiser", "test_conv:width=2", "--img-size", "64", "128", "--out", str(tmp_path),
                 "--name", "d", "--max-seconds", "0.1", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "d.csv")))
    assert [int(r["tokens"]) for r in rows] == [64, 256] and rows[0]["target"] == "test_conv:width=2"
    assert main(["bench", "--denoiser", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown denoiser" in capsys.readouterr().err
